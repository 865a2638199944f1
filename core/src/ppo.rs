//! Proximal Policy Optimization (Schulman et al. 2017) for classic control, following CleanRL's
//! `ppo.py` (discrete) and `ppo_continuous_action.py` (continuous) top to bottom. The
//! implementation details, each as CleanRL documents it ("The 37 Implementation Details of PPO",
//! Huang et al. 2022), and where we differ:
//!
//! 1. Vectorised environments (`num-envs`), rollouts of `num-steps` per environment.
//! 2. Orthogonal initialisation, gain √2 hidden, 0.01 actor output, 1 critic output; zero biases
//!    (see [`crate::mlp`]).
//! 3. Adam with ε = 1e-5 ([`crate::optim::Adam`]).
//! 4. Learning rate annealed linearly to 0 over the updates (`anneal-lr`).
//! 5. Generalised Advantage Estimation (γ, λ) with the [`crate::ops::gae`] op; returns =
//!    advantages + values.
//! 6. Mini-batch updates: `update-epochs` passes over a random permutation split into
//!    `num-minibatches`.
//! 7. Advantage normalisation per mini-batch (`norm-adv`; unbiased std + 1e-8 as `torch.std`,
//!    [`stats::whiten`] with [`stats::Eps::OnStd`]).
//! 8. Clipped surrogate objective (`clip-coef`), [`loss::clipped_policy_loss`].
//! 9. Clipped value loss (`clip-vloss`), `0.5·max(unclipped, clipped)`,
//!    [`loss::clipped_value_loss`]; both losses are plain means over the mini-batch.
//! 10. Entropy bonus (`ent-coef`), value coefficient (`vf-coef`), one loss, one optimiser.
//! 11. Global gradient clipping (`max-grad-norm`).
//! 12. Optional early stop of the epochs when approx-KL exceeds `target-kl`.
//! 13. Continuous actions: diagonal Gaussian with a state-independent log-std; actions clipped
//!     to the action space before stepping the environment (Gymnasium's `ClipAction`), the
//!     unclipped sample kept for the log-probability.
//! 14. Optional observation normalisation and reward scaling (Gymnasium's
//!     `NormalizeObservation` / `NormalizeReward`, clipped to ±10) as in the continuous script.
//! 15. Difference from CleanRL, on by default (`bootstrap-truncated`): at a time-limit
//!     truncation the TD target bootstraps from γ·V(final observation) instead of treating the
//!     cut as terminal (as Stable-Baselines3 does, which adds γ·V to the reward: the same
//!     advantage); CleanRL's behaviour is `false`.
//!
//! The clipped losses ([`loss`]) and whitening ([`stats`]) are shared with the token-level
//! PPO of the language-model crate, as is the GAE op (docs/algorithms.md, "PPO details").
//!
//! [`train_with`] reads top to bottom: set up or resume, then per update `collect_rollout`,
//! `training_rewards`, `advantages`, `update_epochs` (each mini-batch a
//! `minibatch_step`) and `log_update`.
//!
//! Metrics use CleanRL's names (`charts/episodic_return`, `losses/approx_kl`, …). The whole
//! trainer state is checkpointed at update boundaries; a resumed run reproduces the
//! uninterrupted run's metrics exactly on CPU (except the wall-clock `charts/SPS`).

pub mod loss;
pub mod stats;

use crate::checkpoint;
use crate::env::{Actions, AutoresetMode, EnvConfig, Space, VecEnv};
use crate::error::{check, Error, Result};
use crate::mlp::{ActOutput, ActorCritic, MlpPolicyConfig};
use crate::normalize::{RewardNormalizer, RunningMeanStd};
use crate::ops::gae::{self, Gae, GaeInput};
use crate::optim::Adam;
use crate::rng::{self, Rng};
use crate::run::{interrupted, Metrics, Progress};
use candle_core::{Device, Tensor};
use loss::Over;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use stats::Eps;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::Instant;

/// `[ppo]`: PPO hyper-parameters; defaults are CleanRL's `ppo.py`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PpoConfig {
    /// Environment steps in total (over all sub-environments).
    #[serde(default = "d_total")]
    pub total_timesteps: u64,
    /// Adam learning rate (initial value when annealed).
    #[serde(default = "d_lr")]
    pub learning_rate: f64,
    /// Parallel environments.
    #[serde(default = "d_num_envs")]
    pub num_envs: usize,
    /// Steps per environment per rollout.
    #[serde(default = "d_num_steps")]
    pub num_steps: usize,
    /// Anneal the learning rate linearly to 0.
    #[serde(default = "yes")]
    pub anneal_lr: bool,
    /// Discount γ.
    #[serde(default = "d_gamma")]
    pub gamma: f64,
    /// GAE λ.
    #[serde(default = "d_lambda")]
    pub gae_lambda: f64,
    /// Mini-batches per epoch.
    #[serde(default = "d_minibatches")]
    pub num_minibatches: usize,
    /// Epochs per rollout.
    #[serde(default = "d_epochs")]
    pub update_epochs: usize,
    /// Normalise advantages per mini-batch.
    #[serde(default = "yes")]
    pub norm_adv: bool,
    /// Surrogate clipping coefficient.
    #[serde(default = "d_clip")]
    pub clip_coef: f64,
    /// Clip the value loss.
    #[serde(default = "yes")]
    pub clip_vloss: bool,
    /// Entropy coefficient.
    #[serde(default = "d_ent")]
    pub ent_coef: f64,
    /// Value-loss coefficient.
    #[serde(default = "d_vf")]
    pub vf_coef: f64,
    /// Maximum global gradient norm.
    #[serde(default = "d_grad")]
    pub max_grad_norm: f64,
    /// Stop the epochs early when approx-KL exceeds this (none by default).
    #[serde(default)]
    pub target_kl: Option<f64>,
    /// Normalise observations with running statistics (clipped to ±10).
    #[serde(default)]
    pub normalize_obs: bool,
    /// Scale rewards by the running std of the discounted return (clipped to ±10).
    #[serde(default)]
    pub normalize_reward: bool,
    /// Bootstrap from V(final observation) at time-limit truncations.
    #[serde(default = "yes")]
    pub bootstrap_truncated: bool,
    /// Save a checkpoint every this many updates (and always at the end and on SIGINT).
    #[serde(default = "d_ckpt")]
    pub checkpoint_every: u64,
}

fn d_total() -> u64 {
    500_000
}
fn d_lr() -> f64 {
    2.5e-4
}
fn d_num_envs() -> usize {
    4
}
fn d_num_steps() -> usize {
    128
}
fn yes() -> bool {
    true
}
fn d_gamma() -> f64 {
    0.99
}
fn d_lambda() -> f64 {
    0.95
}
fn d_minibatches() -> usize {
    4
}
fn d_epochs() -> usize {
    4
}
fn d_clip() -> f64 {
    0.2
}
fn d_ent() -> f64 {
    0.01
}
fn d_vf() -> f64 {
    0.5
}
fn d_grad() -> f64 {
    0.5
}
fn d_ckpt() -> u64 {
    25
}

impl Default for PpoConfig {
    fn default() -> Self {
        toml::from_str("").expect("every PPO field has a default")
    }
}

impl PpoConfig {
    /// Check values; keys relative to `[ppo]`.
    pub fn validate(&self) -> Result<()> {
        check::positive_usize("num-envs", self.num_envs)?;
        check::positive_usize("num-steps", self.num_steps)?;
        check::positive_usize("num-minibatches", self.num_minibatches)?;
        check::positive_usize("update-epochs", self.update_epochs)?;
        // Each rollout step keeps at least an observation, action, log-prob, reward, done flag
        // and value (6 × 4 bytes), and each environment at least 4 state floats.
        let steps = (self.num_envs as u128).saturating_mul(self.num_steps as u128);
        crate::budget::check(
            "num-envs",
            &format!("a rollout of num-envs × num-steps = {steps} steps"),
            steps.saturating_mul(24) + (self.num_envs as u128).saturating_mul(16),
        )?;
        if self.checkpoint_every == 0 {
            return Err(Error::config(
                "checkpoint-every",
                "expected a positive integer, found 0",
            ));
        }
        check::positive_f64("learning-rate", self.learning_rate)?;
        check::in_range("gamma", self.gamma, 0.0, 1.0)?;
        check::in_range("gae-lambda", self.gae_lambda, 0.0, 1.0)?;
        check::positive_f64("clip-coef", self.clip_coef)?;
        check::non_negative_f64("ent-coef", self.ent_coef)?;
        check::non_negative_f64("vf-coef", self.vf_coef)?;
        check::positive_f64("max-grad-norm", self.max_grad_norm)?;
        if let Some(t) = self.target_kl {
            check::positive_f64("target-kl", t)?;
        }
        if !self.batch_size().is_multiple_of(self.num_minibatches) {
            return Err(Error::config(
                "num-minibatches",
                format!(
                    "must divide the batch size num-envs × num-steps = {}, found {}",
                    self.batch_size(),
                    self.num_minibatches
                ),
            ));
        }
        if self.total_timesteps < self.batch_size() as u64 {
            return Err(Error::config(
                "total-timesteps",
                format!(
                    "must be at least one batch (num-envs × num-steps = {}), found {}",
                    self.batch_size(),
                    self.total_timesteps
                ),
            ));
        }
        Ok(())
    }

    /// Transitions per rollout.
    pub fn batch_size(&self) -> usize {
        self.num_envs * self.num_steps
    }

    /// Number of updates (rollout + optimisation rounds).
    pub fn num_updates(&self) -> u64 {
        self.total_timesteps / self.batch_size() as u64
    }
}

/// What a finished PPO training reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PpoSummary {
    /// Mean return of the last 20 finished episodes.
    pub final_return: f64,
    /// Environment steps taken.
    pub env_steps: u64,
    /// Episodes finished.
    pub episodes: u64,
    /// Updates done.
    pub updates: u64,
    /// Seconds of training in this process (excludes time before a resume).
    pub wall_time_s: f64,
    /// The observation statistics the policy was trained with (`normalize-obs`): whoever runs
    /// the policy afterwards must normalise its inputs the same way.
    #[serde(skip)]
    pub obs_rms: Option<RunningMeanStd>,
}

/// Everything besides tensors that a checkpoint must hold to continue exactly.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainState {
    update: u64,
    global_step: u64,
    act_rng: Rng,
    shuffle_rng: Rng,
    env: serde_json::Value,
    obs: Vec<f32>,
    ep_return: Vec<f64>,
    ep_len: Vec<u64>,
    recent: VecDeque<f64>,
    episodes: u64,
    obs_rms: Option<RunningMeanStd>,
    reward_norm: Option<RewardNormalizer>,
    adam_t: u64,
    metrics_bytes: u64,
    #[serde(default)]
    hook: serde_json::Value,
}

/// Where a training writes: metrics, checkpoints, progress.
pub struct TrainCtx<'a> {
    /// Metrics log.
    pub metrics: &'a mut Metrics,
    /// Checkpoint folder of this training.
    pub checkpoints: PathBuf,
    /// Progress display.
    pub progress: &'a mut dyn Progress,
}

const RECENT: usize = 20;

/// One rollout batch as a [`RewardHook`] sees it; rows are `[T, N]` flattened, time-major.
#[derive(Debug)]
pub struct RolloutView<'a> {
    /// `[B * obs_dim]` observations the actions were taken in (not normalised).
    pub raw_obs: &'a [f32],
    /// `[B * act_dim]` actions as the environment received them (clipped to the action space).
    pub actions: &'a [f32],
    /// `[B]` the environment's own rewards.
    pub env_rewards: &'a [f32],
    /// `[B]` log π(a|s) at collection time.
    pub logprobs: &'a [f32],
    /// `[B]` log π_ref(a|s) under the reference policy, when one is given.
    pub ref_logprobs: Option<&'a [f32]>,
    /// `[B]` whether the episode ended with this step (terminated or truncated).
    pub dones: &'a [bool],
    /// Observation dimension.
    pub obs_dim: usize,
    /// Action dimension (1 for discrete).
    pub act_dim: usize,
}

/// Training rewards `[B]` and extra `(metric, value)` pairs for the update's log line.
pub type HookOutput = (Vec<f32>, Vec<(String, f64)>);

/// Replaces the environment's rewards with others (learned group rewards combined by an
/// objective, minus a KL penalty) once per rollout, before advantages are computed.
pub trait RewardHook: Send {
    /// Training rewards `[B]` for the batch, and extra metrics for this update's log line.
    fn rewards(&mut self, batch: &RolloutView<'_>) -> Result<HookOutput>;
    /// State to checkpoint (KL controller, objective weights…).
    fn state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// Restore [`RewardHook::state`].
    fn restore(&mut self, _state: &serde_json::Value) -> Result<()> {
        Ok(())
    }
}

/// Optional extras of a training: a reward hook and a frozen reference policy.
#[derive(Default)]
pub struct Hooks<'a> {
    /// Replaces the environment's rewards.
    pub rewards: Option<&'a mut dyn RewardHook>,
    /// Reference policy π_ref; its log-probabilities reach the hook.
    pub reference: Option<&'a ActorCritic>,
}

/// Train a PPO agent on `env` from `seed`; continue from the latest checkpoint in
/// `ctx.checkpoints` if there is one.
pub fn train(
    cfg: &PpoConfig,
    policy: &MlpPolicyConfig,
    env_cfg: &dyn EnvConfig,
    seed: u64,
    ctx: &mut TrainCtx<'_>,
) -> Result<(PpoSummary, ActorCritic)> {
    train_with(cfg, policy, env_cfg, seed, ctx, Hooks::default())
}

/// As [`train`], with a reward hook and/or a reference policy. Top to bottom: set up (or
/// resume), then per update: anneal the learning rate, `collect_rollout`, the training
/// rewards (`training_rewards`), `advantages`, `update_epochs`, `log_update`, and a
/// checkpoint every `checkpoint-every` updates, at the end and on SIGINT.
pub fn train_with(
    cfg: &PpoConfig,
    policy: &MlpPolicyConfig,
    env_cfg: &dyn EnvConfig,
    seed: u64,
    ctx: &mut TrainCtx<'_>,
    mut hooks: Hooks<'_>,
) -> Result<(PpoSummary, ActorCritic)> {
    if hooks.rewards.is_some() && cfg.normalize_reward {
        return Err(Error::config(
            "ppo.normalize-reward",
            "reward scaling applies to environment rewards; it cannot be combined with learned rewards",
        ));
    }
    let mut venv = env_cfg.build_vec(cfg.num_envs, AutoresetMode::SameStep)?;
    let spec = venv.spec().clone();
    let mut init_rng = rng::stream(seed, "policy/init");
    let ac = ActorCritic::new(
        policy,
        &spec.observation_space,
        &spec.action_space,
        &mut init_rng,
        &Device::Cpu,
    )?;
    let mut adam = Adam::new(ac.params(), cfg.learning_rate, 1e-5);
    let mut st = start_or_resume(cfg, seed, &ac, &mut adam, venv.as_mut(), &mut hooks, ctx)?;
    let mut buf = RolloutBuf::new(cfg, &spec, ac.act_dim(), hooks.rewards.is_some());
    let num_updates = cfg.num_updates();
    let timer = (Instant::now(), st.global_step);
    ctx.progress
        .start("ppo", num_updates * cfg.batch_size() as u64, st.global_step);
    while st.update < num_updates {
        st.update += 1;
        if cfg.anneal_lr {
            let frac = 1.0 - (st.update - 1) as f64 / num_updates as f64;
            adam.lr = frac * cfg.learning_rate;
        }
        let next_value = collect_rollout(cfg, &ac, venv.as_mut(), &mut st, &mut buf, ctx)?;
        let (obs_t, act_t) = buf.tensors()?;
        let (rewards, extra) = training_rewards(&buf, &obs_t, &act_t, &mut hooks)?;
        let gae = advantages(cfg, &buf, &rewards, &next_value)?;
        let batch = Batch {
            buf: &buf,
            obs: &obs_t,
            act: &act_t,
            gae: &gae,
        };
        let stats = update_epochs(cfg, &ac, &mut adam, &mut st.shuffle_rng, &batch)?;
        log_update(&st, &adam, &stats, &buf, &gae, &extra, timer, ctx)?;
        let stop = interrupted();
        if stop || st.update % cfg.checkpoint_every == 0 || st.update == num_updates {
            if let Some(h) = hooks.rewards.as_deref() {
                st.hook = h.state();
            }
            save(&ac, &adam, &mut st, venv.as_ref(), ctx)?;
        }
        if stop {
            ctx.progress.finish();
            return Err(Error::Interrupted(ctx.checkpoints.clone()));
        }
    }
    ctx.progress.finish();
    let summary = PpoSummary {
        final_return: mean(&st.recent),
        env_steps: st.global_step,
        episodes: st.episodes,
        updates: st.update,
        wall_time_s: timer.0.elapsed().as_secs_f64(),
        obs_rms: st.obs_rms.clone(),
    };
    Ok((summary, ac))
}

/// The trainer state of the latest checkpoint in `ctx.checkpoints` (weights, optimiser,
/// environments and hook restored), or a fresh one (environments reset from `seed`).
fn start_or_resume(
    cfg: &PpoConfig,
    seed: u64,
    ac: &ActorCritic,
    adam: &mut Adam,
    venv: &mut dyn VecEnv,
    hooks: &mut Hooks<'_>,
    ctx: &mut TrainCtx<'_>,
) -> Result<TrainState> {
    let Some(ck) = checkpoint::load_latest(&ctx.checkpoints)? else {
        *ctx.metrics = Metrics::open(ctx.metrics.path(), 0)?;
        let obs_dim = venv.spec().observation_space.dim();
        let obs = venv.reset(rng::derive_seed(seed, "env")).to_vec();
        let n = cfg.num_envs;
        let mut st = TrainState {
            update: 0,
            global_step: 0,
            act_rng: rng::stream(seed, "ppo/actions"),
            shuffle_rng: rng::stream(seed, "ppo/shuffle"),
            env: serde_json::Value::Null,
            obs,
            ep_return: vec![0.0; n],
            ep_len: vec![0; n],
            recent: VecDeque::new(),
            episodes: 0,
            obs_rms: cfg.normalize_obs.then(|| RunningMeanStd::new(obs_dim)),
            reward_norm: cfg
                .normalize_reward
                .then(|| RewardNormalizer::new(n, cfg.gamma)),
            adam_t: 0,
            metrics_bytes: 0,
            hook: serde_json::Value::Null,
        };
        if let Some(rms) = st.obs_rms.as_mut() {
            rms.update(&st.obs);
        }
        return Ok(st);
    };
    let mut st: TrainState = serde_json::from_value(ck.state)
        .map_err(|e| Error::data(ck.dir.join("state.json"), None, e.to_string()))?;
    for (name, var) in ac.params() {
        let t = ck.tensors.get(&format!("model.{name}")).ok_or_else(|| {
            Error::data(
                ck.dir.join("model.safetensors"),
                None,
                format!("missing tensor `model.{name}`"),
            )
        })?;
        var.set(t)?;
    }
    adam.load_state(st.adam_t, &ck.tensors)?;
    venv.restore(&st.env)?;
    if let Some(h) = hooks.rewards.as_deref_mut() {
        h.restore(&st.hook)?;
    }
    tracing::info!(
        "resuming PPO from {} (update {})",
        ck.dir.display(),
        st.update
    );
    *ctx.metrics = Metrics::open(ctx.metrics.path(), st.metrics_bytes)?;
    if st.update == 0 {
        if let Some(rms) = st.obs_rms.as_mut() {
            rms.update(&st.obs);
        }
    }
    Ok(st)
}

/// One rollout, `[T, N]` time-major (step t of environment i at `t * N + i`; observation and
/// action rows `obs_dim` and `act_dim` wide), reused from update to update.
struct RolloutBuf {
    n: usize,
    obs_dim: usize,
    act_dim: usize,
    /// Action-space bounds of a continuous space (`None`: discrete).
    bounds: Option<(Vec<f32>, Vec<f32>)>,
    /// Observations as the policy saw them (normalised when `normalize-obs`).
    obs: Vec<f32>,
    /// Sampled actions (unclipped; indices as f32 when discrete).
    act: Vec<f32>,
    logp: Vec<f32>,
    values: Vec<f32>,
    /// Environment rewards (scaled when `normalize-reward`).
    rewards: Vec<f32>,
    /// The episode ended with this step (terminated or truncated).
    dones: Vec<bool>,
    /// Truncated (not terminated) and bootstrapped from `final_values` (`bootstrap-truncated`).
    boot: Vec<bool>,
    /// V(final observation) where `boot`.
    final_values: Vec<f32>,
    /// Raw observations and the actions the environment received: only for a reward hook.
    raw_obs: Vec<f32>,
    env_act: Vec<f32>,
    /// Scratch: one step's actions as the environment takes them.
    step_u32: Vec<u32>,
    step_f32: Vec<f32>,
}

impl RolloutBuf {
    fn new(cfg: &PpoConfig, spec: &crate::env::EnvSpec, act_dim: usize, hook: bool) -> Self {
        let (n, bsz) = (cfg.num_envs, cfg.batch_size());
        let obs_dim = spec.observation_space.dim();
        let bounds = match &spec.action_space {
            Space::Box { low, high } => Some((low.clone(), high.clone())),
            Space::Discrete { .. } => None,
        };
        let hook_len = |w: usize| if hook { bsz * w } else { 0 };
        RolloutBuf {
            n,
            obs_dim,
            act_dim,
            bounds,
            obs: vec![0.0; bsz * obs_dim],
            act: vec![0.0; bsz * act_dim],
            logp: vec![0.0; bsz],
            values: vec![0.0; bsz],
            rewards: vec![0.0; bsz],
            dones: vec![false; bsz],
            boot: vec![false; bsz],
            final_values: vec![0.0; bsz],
            raw_obs: vec![0.0; hook_len(obs_dim)],
            env_act: vec![0.0; hook_len(act_dim)],
            step_u32: vec![0; n],
            step_f32: vec![0.0; n * act_dim],
        }
    }

    /// Record what the policy did at step `t` in observations `norm_obs` (raw: `raw_obs`).
    fn record_policy(&mut self, t: usize, norm_obs: &[f32], raw_obs: &[f32], out: &ActOutput) {
        let (n, od, ad) = (self.n, self.obs_dim, self.act_dim);
        self.obs[t * n * od..(t + 1) * n * od].copy_from_slice(norm_obs);
        self.act[t * n * ad..(t + 1) * n * ad].copy_from_slice(&out.actions);
        self.logp[t * n..(t + 1) * n].copy_from_slice(&out.logprobs);
        self.values[t * n..(t + 1) * n].copy_from_slice(&out.values);
        if !self.raw_obs.is_empty() {
            self.raw_obs[t * n * od..(t + 1) * n * od].copy_from_slice(raw_obs);
        }
    }

    /// Step `t`'s sampled actions as the environment takes them: indices, or values clipped to
    /// the action space (Gymnasium's `ClipAction`); kept for a reward hook.
    fn env_actions(&mut self, t: usize, actions: &[f32]) -> Actions<'_> {
        let (n, ad) = (self.n, self.act_dim);
        let keep = !self.env_act.is_empty();
        match &self.bounds {
            None => {
                for (d, a) in self.step_u32.iter_mut().zip(actions) {
                    *d = *a as u32;
                }
                if keep {
                    self.env_act[t * n * ad..(t + 1) * n * ad].copy_from_slice(actions);
                }
                Actions::Discrete(&self.step_u32)
            }
            Some((lo, hi)) => {
                for (i, (d, a)) in self.step_f32.iter_mut().zip(actions).enumerate() {
                    *d = a.clamp(lo[i % ad], hi[i % ad]);
                }
                if keep {
                    self.env_act[t * n * ad..(t + 1) * n * ad].copy_from_slice(&self.step_f32);
                }
                Actions::Continuous(&self.step_f32)
            }
        }
    }

    /// Observations `[B, obs_dim]` and actions (`[B, act_dim]`, or `[B]` indices) as tensors.
    fn tensors(&self) -> Result<(Tensor, Tensor)> {
        let bsz = self.logp.len();
        let obs = Tensor::from_slice(&self.obs, (bsz, self.obs_dim), &Device::Cpu)?;
        let act = if self.bounds.is_some() {
            Tensor::from_slice(&self.act, (bsz, self.act_dim), &Device::Cpu)?
        } else {
            Tensor::from_slice(&self.act, bsz, &Device::Cpu)?
        };
        Ok((obs, act))
    }
}

/// Rollout: `num-steps` steps of every environment into `buf` (episode returns logged as they
/// end, observation and reward statistics updated); returns V of the observation after the
/// last step, GAE's bootstrap.
fn collect_rollout(
    cfg: &PpoConfig,
    ac: &ActorCritic,
    venv: &mut dyn VecEnv,
    st: &mut TrainState,
    buf: &mut RolloutBuf,
    ctx: &mut TrainCtx<'_>,
) -> Result<Vec<f32>> {
    let (n, obs_dim) = (buf.n, buf.obs_dim);
    let mut norm_obs = normalized(&st.obs, st.obs_rms.as_ref());
    for t in 0..cfg.num_steps {
        st.global_step += n as u64;
        let out = ac.act(&norm_obs, &mut st.act_rng)?;
        buf.record_policy(t, &norm_obs, &st.obs, &out);
        let step = venv.step(buf.env_actions(t, &out.actions));
        let mut rewards = step.rewards.to_vec();
        let done: Vec<bool> = (0..n)
            .map(|i| step.terminated[i] || step.truncated[i])
            .collect();
        let truncated_only: Vec<usize> = (0..n)
            .filter(|&i| step.truncated[i] && !step.terminated[i])
            .collect();
        st.obs.copy_from_slice(step.obs);
        let final_obs: Vec<f32> = truncated_only
            .iter()
            .flat_map(|&i| step.final_obs[i * obs_dim..(i + 1) * obs_dim].to_vec())
            .collect();
        record_episode_ends(st, &rewards, &done, ctx.metrics)?;
        if let Some(rn) = st.reward_norm.as_mut() {
            rn.apply(&mut rewards, &done, 10.0);
        }
        if let Some(rms) = st.obs_rms.as_mut() {
            rms.update(&st.obs);
        }
        let row = t * n..(t + 1) * n;
        buf.boot[row.clone()].fill(false);
        if cfg.bootstrap_truncated && !truncated_only.is_empty() {
            let fo = normalized(&final_obs, st.obs_rms.as_ref());
            let v = ac.values_of(&fo)?;
            for (k, &i) in truncated_only.iter().enumerate() {
                buf.boot[t * n + i] = true;
                buf.final_values[t * n + i] = v[k];
            }
        }
        buf.rewards[row.clone()].copy_from_slice(&rewards);
        buf.dones[row].copy_from_slice(&done);
        norm_obs = normalized(&st.obs, st.obs_rms.as_ref());
    }
    ac.values_of(&norm_obs)
}

/// Add one step's rewards to the running episodes; log and reset those that ended.
fn record_episode_ends(
    st: &mut TrainState,
    rewards: &[f32],
    done: &[bool],
    metrics: &mut Metrics,
) -> Result<()> {
    for i in 0..done.len() {
        st.ep_return[i] += rewards[i] as f64;
        st.ep_len[i] += 1;
        if done[i] {
            let (r, l) = (st.ep_return[i], st.ep_len[i]);
            metrics.log(
                st.global_step,
                &[
                    ("charts/episodic_return", r),
                    ("charts/episodic_length", l as f64),
                ],
            )?;
            st.recent.push_back(r);
            if st.recent.len() > RECENT {
                st.recent.pop_front();
            }
            st.episodes += 1;
            st.ep_return[i] = 0.0;
            st.ep_len[i] = 0;
        }
    }
    Ok(())
}

/// The rewards PPO trains on: the environment's, or the reward hook's for this rollout (with
/// the reference policy's log-probabilities when there is one), and the hook's extra metrics.
fn training_rewards(
    buf: &RolloutBuf,
    obs: &Tensor,
    act: &Tensor,
    hooks: &mut Hooks<'_>,
) -> Result<HookOutput> {
    let Some(h) = hooks.rewards.as_deref_mut() else {
        return Ok((buf.rewards.clone(), Vec::new()));
    };
    let ref_logp = match hooks.reference {
        Some(r) => Some(r.evaluate(obs, act)?.logprob.to_vec1::<f32>()?),
        None => None,
    };
    let view = RolloutView {
        raw_obs: &buf.raw_obs,
        actions: &buf.env_act,
        env_rewards: &buf.rewards,
        logprobs: &buf.logp,
        ref_logprobs: ref_logp.as_deref(),
        dones: &buf.dones,
        obs_dim: buf.obs_dim,
        act_dim: buf.act_dim,
    };
    let (r, m) = h.rewards(&view)?;
    if r.len() != buf.rewards.len() {
        return Err(Error::Internal(format!(
            "reward hook returned {} rewards for a batch of {}",
            r.len(),
            buf.rewards.len()
        )));
    }
    Ok((r, m))
}

/// GAE(γ, λ) over the rollout with [`crate::ops::gae`]: an episode that ended at step t is
/// cut there (terminated), except a truncation under `bootstrap-truncated`, which bootstraps
/// from V(final observation); `next_value` is V after the last step.
fn advantages(
    cfg: &PpoConfig,
    buf: &RolloutBuf,
    rewards: &[f32],
    next_value: &[f32],
) -> Result<Gae> {
    let (n, bsz) = (buf.n, buf.values.len());
    let next_values: Vec<f32> = (0..bsz)
        .map(|k| match (buf.boot[k], k + n < bsz) {
            (true, _) => buf.final_values[k],
            (false, true) => buf.values[k + n],
            (false, false) => next_value[k % n],
        })
        .collect();
    let terminated: Vec<bool> = buf
        .dones
        .iter()
        .zip(&buf.boot)
        .map(|(&d, &b)| d && !b)
        .collect();
    gae::gae(
        &GaeInput {
            rewards,
            values: &buf.values,
            next_values: &next_values,
            terminated: &terminated,
            truncated: &buf.boot,
            t: bsz / n,
            n,
        },
        cfg.gamma as f32,
        cfg.gae_lambda as f32,
    )
}

/// A rollout ready for the update: buffers, tensors and advantages.
struct Batch<'a> {
    buf: &'a RolloutBuf,
    obs: &'a Tensor,
    act: &'a Tensor,
    gae: &'a Gae,
}

/// Update: `update-epochs` passes over a fresh permutation of the batch in `num-minibatches`
/// mini-batches, stopping early once approx-KL exceeds `target-kl`.
fn update_epochs(
    cfg: &PpoConfig,
    ac: &ActorCritic,
    adam: &mut Adam,
    shuffle_rng: &mut Rng,
    batch: &Batch<'_>,
) -> Result<UpdateStats> {
    let bsz = cfg.batch_size();
    let mb = bsz / cfg.num_minibatches;
    let mut inds: Vec<u32> = (0..bsz as u32).collect();
    let mut stats = UpdateStats::default();
    for _ in 0..cfg.update_epochs {
        inds.shuffle(shuffle_rng);
        for chunk in inds.chunks(mb) {
            let s = minibatch_step(cfg, ac, adam, batch, chunk)?;
            stats.add(&s);
        }
        if let Some(tk) = cfg.target_kl {
            if stats.last_approx_kl > tk {
                break;
            }
        }
    }
    Ok(stats)
}

/// Logging: the update's line of `metrics.jsonl` (CleanRL's names, the hook's extras) and
/// the progress display.
#[allow(clippy::too_many_arguments)] // the pieces one update line is made of
fn log_update(
    st: &TrainState,
    adam: &Adam,
    stats: &UpdateStats,
    buf: &RolloutBuf,
    gae: &Gae,
    extra: &[(String, f64)],
    (started, start_step): (Instant, u64),
    ctx: &mut TrainCtx<'_>,
) -> Result<()> {
    let ev = stats::explained_variance(&buf.values, &gae.returns);
    let sps = (st.global_step - start_step) as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let mut fields: Vec<(&str, f64)> = vec![
        ("charts/learning_rate", adam.lr),
        ("losses/value_loss", stats.mean(stats.v_loss)),
        ("losses/policy_loss", stats.mean(stats.pg_loss)),
        ("losses/entropy", stats.mean(stats.entropy)),
        ("losses/old_approx_kl", stats.mean(stats.old_approx_kl)),
        ("losses/approx_kl", stats.last_approx_kl),
        ("losses/clipfrac", stats.mean(stats.clipfrac)),
        ("losses/explained_variance", ev),
        ("charts/SPS", sps.round()),
    ];
    fields.extend(extra.iter().map(|(k, v)| (k.as_str(), *v)));
    ctx.metrics.log(st.global_step, &fields)?;
    let fr = mean(&st.recent);
    ctx.progress
        .update(st.global_step, &format!("return {fr:.1}"));
    Ok(())
}

fn save(
    ac: &ActorCritic,
    adam: &Adam,
    st: &mut TrainState,
    venv: &dyn VecEnv,
    ctx: &mut TrainCtx<'_>,
) -> Result<()> {
    st.metrics_bytes = ctx.metrics.sync()?;
    st.adam_t = adam.t;
    st.env = venv.snapshot();
    let mut tensors: HashMap<String, Tensor> = adam.state_tensors(ac.params())?;
    for (name, var) in ac.params() {
        tensors.insert(format!("model.{name}"), var.as_tensor().clone());
    }
    let state = serde_json::to_value(&*st)
        .map_err(|e| Error::Internal(format!("cannot serialise trainer state: {e}")))?;
    checkpoint::save(
        &ctx.checkpoints,
        &format!("ppo-{:06}", st.update),
        &tensors,
        &state,
    )?;
    Ok(())
}

/// `obs` normalised as the trainer does (running statistics, clipped to ±10), or a copy.
pub fn normalized(obs: &[f32], rms: Option<&RunningMeanStd>) -> Vec<f32> {
    let mut o = obs.to_vec();
    if let Some(r) = rms {
        r.normalize(&mut o, 10.0);
    }
    o
}

fn mean(v: &VecDeque<f64>) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

#[derive(Debug, Default)]
struct UpdateStats {
    count: f64,
    pg_loss: f64,
    v_loss: f64,
    entropy: f64,
    old_approx_kl: f64,
    clipfrac: f64,
    last_approx_kl: f64,
}

impl UpdateStats {
    fn add(&mut self, s: &UpdateStats) {
        self.count += 1.0;
        self.pg_loss += s.pg_loss;
        self.v_loss += s.v_loss;
        self.entropy += s.entropy;
        self.old_approx_kl += s.old_approx_kl;
        self.clipfrac += s.clipfrac;
        self.last_approx_kl = s.last_approx_kl;
    }
    fn mean(&self, x: f64) -> f64 {
        x / self.count.max(1.0)
    }
}

/// The rows `idx` of the batch as `[m]` tensors; advantages normalised over the mini-batch
/// when `norm-adv` (CleanRL's (A − mean)/(std + 1e-8), unbiased std).
struct Minibatch {
    obs: Tensor,
    act: Tensor,
    old_logp: Tensor,
    old_values: Tensor,
    advantages: Tensor,
    returns: Tensor,
}

fn minibatch(cfg: &PpoConfig, b: &Batch<'_>, idx: &[u32]) -> Result<Minibatch> {
    let (dev, m) = (Device::Cpu, idx.len());
    let it = Tensor::from_slice(idx, m, &dev)?;
    let pick = |v: &[f32]| -> Vec<f32> { idx.iter().map(|&i| v[i as usize]).collect() };
    let mut adv = pick(&b.gae.advantages);
    if cfg.norm_adv && m > 1 {
        stats::whiten(&mut adv, None, Eps::OnStd(1e-8), true);
    }
    let tensor = |v: Vec<f32>| Tensor::from_vec(v, m, &dev);
    Ok(Minibatch {
        obs: b.obs.index_select(&it, 0)?,
        act: b.act.index_select(&it, 0)?,
        old_logp: tensor(pick(&b.buf.logp))?,
        old_values: tensor(pick(&b.buf.values))?,
        advantages: tensor(adv)?,
        returns: tensor(pick(&b.gae.returns))?,
    })
}

/// One Adam step on the mini-batch `idx`: clipped surrogate − `ent-coef`·entropy +
/// `vf-coef`·(clipped) value loss, plain means over the mini-batch.
fn minibatch_step(
    cfg: &PpoConfig,
    ac: &ActorCritic,
    adam: &mut Adam,
    batch: &Batch<'_>,
    idx: &[u32],
) -> Result<UpdateStats> {
    let mb = minibatch(cfg, batch, idx)?;
    let ev = ac.evaluate(&mb.obs, &mb.act)?;
    let c = cfg.clip_coef;
    let pg = loss::clipped_policy_loss(&ev.logprob, &mb.old_logp, &mb.advantages, c, Over::All)?;
    let (lr_v, r_v) = (pg.logratio.to_vec1::<f32>()?, pg.ratio.to_vec1::<f32>()?);
    let m = idx.len() as f64;
    let old_approx_kl = lr_v.iter().map(|x| -(*x as f64)).sum::<f64>() / m;
    let approx_kl = lr_v
        .iter()
        .zip(&r_v)
        .map(|(l, r)| (*r as f64 - 1.0) - *l as f64)
        .sum::<f64>()
        / m;
    let clipfrac = r_v
        .iter()
        .filter(|r| ((**r as f64) - 1.0).abs() > c)
        .count() as f64
        / m;
    let v_clip = cfg.clip_vloss.then_some(c);
    let v = loss::clipped_value_loss(&ev.value, &mb.old_values, &mb.returns, v_clip, Over::All)?;
    let entropy = ev.entropy.mean_all()?;
    let total = ((&pg.loss - (&entropy * cfg.ent_coef)?)? + (&v.loss * cfg.vf_coef)?)?;
    let grads = total.backward()?;
    adam.step(ac.params(), &grads, Some(cfg.max_grad_norm))?;
    Ok(UpdateStats {
        count: 1.0,
        pg_loss: pg.loss.to_scalar::<f32>()? as f64,
        v_loss: v.loss.to_scalar::<f32>()? as f64,
        entropy: entropy.to_scalar::<f32>()? as f64,
        old_approx_kl,
        clipfrac,
        last_approx_kl: approx_kl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gae_matches_hand_computation() {
        // One env, three steps, episode ends after step 1; V after the last step is 2.
        let cfg = PpoConfig {
            num_envs: 1,
            num_steps: 3,
            gamma: 0.9,
            gae_lambda: 0.5,
            ..PpoConfig::default()
        };
        let spec = crate::env::EnvSpec {
            id: "test".into(),
            max_episode_steps: None,
            reward_threshold: None,
            observation_space: Space::Box {
                low: vec![0.0],
                high: vec![1.0],
            },
            action_space: Space::Discrete { n: 2 },
        };
        let mut buf = RolloutBuf::new(&cfg, &spec, 1, false);
        buf.values.copy_from_slice(&[0.5, 0.25, 1.0]);
        buf.dones.copy_from_slice(&[false, true, false]);
        let r = [1.0, 2.0, 3.0];
        let out = advantages(&cfg, &buf, &r, &[2.0]).unwrap();
        let d2 = 3.0 + 0.9 * 2.0 - 1.0;
        let d1 = 2.0 - 0.25;
        let d0 = 1.0 + 0.9 * 0.25 - 0.5;
        let want = [d0 + 0.45 * d1, d1, d2];
        let adv = &out.advantages;
        for (a, w) in adv.iter().zip(want) {
            assert!((a - w).abs() < 1e-6, "{adv:?} vs {want:?}");
        }
        assert!((out.returns[2] - (d2 + 1.0)).abs() < 1e-6);
        // step 1 a truncation bootstrapped from V(final observation) = 4: γ·4 joins its δ,
        // and the trace is still cut there
        buf.boot[1] = true;
        buf.final_values[1] = 4.0;
        let out = advantages(&cfg, &buf, &r, &[2.0]).unwrap();
        let d1 = 2.0 + 0.9 * 4.0 - 0.25;
        let want = [d0 + 0.45 * d1, d1, d2];
        for (a, w) in out.advantages.iter().zip(want) {
            assert!((a - w).abs() < 1e-6, "{:?} vs {want:?}", out.advantages);
        }
    }

    #[test]
    fn default_config_is_cleanrl_and_validates() {
        let c = PpoConfig::default();
        assert_eq!((c.num_envs, c.num_steps, c.update_epochs), (4, 128, 4));
        c.validate().unwrap();
        let bad = PpoConfig {
            num_minibatches: 3,
            ..PpoConfig::default()
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("num-minibatches"), "{e}");
    }
}
