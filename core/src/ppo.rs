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
//! 5. Generalised Advantage Estimation (γ, λ); returns = advantages + values.
//! 6. Mini-batch updates: `update-epochs` passes over a random permutation split into
//!    `num-minibatches`.
//! 7. Advantage normalisation per mini-batch (`norm-adv`; unbiased std + 1e-8 as `torch.std`).
//! 8. Clipped surrogate objective (`clip-coef`).
//! 9. Clipped value loss (`clip-vloss`), `0.5·max(unclipped, clipped)`.
//! 10. Entropy bonus (`ent-coef`), value coefficient (`vf-coef`), one loss, one optimiser.
//! 11. Global gradient clipping (`max-grad-norm`).
//! 12. Optional early stop of the epochs when approx-KL exceeds `target-kl`.
//! 13. Continuous actions: diagonal Gaussian with a state-independent log-std; actions clipped
//!     to the action space before stepping the environment (Gymnasium's `ClipAction`), the
//!     unclipped sample kept for the log-probability.
//! 14. Optional observation normalisation and reward scaling (Gymnasium's
//!     `NormalizeObservation` / `NormalizeReward`, clipped to ±10) as in the continuous script.
//! 15. Difference from CleanRL, on by default (`bootstrap-truncated`): at a time-limit
//!     truncation the reward is augmented with γ·V(final observation) instead of treating the
//!     cut as terminal (as Stable-Baselines3 does); CleanRL's behaviour is `false`.
//!
//! Metrics use CleanRL's names (`charts/episodic_return`, `losses/approx_kl`, …). The whole
//! trainer state is checkpointed at update boundaries; a resumed run reproduces the
//! uninterrupted run's metrics exactly on CPU (except the wall-clock `charts/SPS`).

use crate::checkpoint;
use crate::env::{Actions, AutoresetMode, EnvConfig, Space, VecEnv};
use crate::error::{check, Error, Result};
use crate::mlp::{ActorCritic, MlpPolicyConfig};
use crate::normalize::{RewardNormalizer, RunningMeanStd};
use crate::optim::Adam;
use crate::rng::{self, Rng};
use crate::run::{interrupted, Metrics, Progress};
use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
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

/// As [`train`], with a reward hook and/or a reference policy.
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
    let dev = Device::Cpu;
    let mut venv = env_cfg.build_vec(cfg.num_envs, AutoresetMode::SameStep)?;
    let spec = venv.spec().clone();
    let obs_dim = spec.observation_space.dim();
    let mut init_rng = rng::stream(seed, "policy/init");
    let ac = ActorCritic::new(
        policy,
        &spec.observation_space,
        &spec.action_space,
        &mut init_rng,
        &dev,
    )?;
    let act_dim = ac.act_dim();
    let mut adam = Adam::new(ac.params(), cfg.learning_rate, 1e-5);
    let n = cfg.num_envs;

    let mut st = match checkpoint::load_latest(&ctx.checkpoints)? {
        Some(ck) => {
            let st: TrainState = serde_json::from_value(ck.state)
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
            st
        }
        None => {
            *ctx.metrics = Metrics::open(ctx.metrics.path(), 0)?;
            let obs = venv.reset(rng::derive_seed(seed, "env")).to_vec();
            TrainState {
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
            }
        }
    };
    if st.update == 0 {
        if let Some(rms) = st.obs_rms.as_mut() {
            rms.update(&st.obs);
        }
    }

    let (t_steps, bsz) = (cfg.num_steps, cfg.batch_size());
    let num_updates = cfg.num_updates();
    let bounds = match &spec.action_space {
        Space::Box { low, high } => Some((low.clone(), high.clone())),
        Space::Discrete { .. } => None,
    };
    let mut b_obs = vec![0f32; bsz * obs_dim];
    let mut b_act = vec![0f32; bsz * act_dim];
    let mut b_logp = vec![0f32; bsz];
    let mut b_val = vec![0f32; bsz];
    let mut b_rew = vec![0f32; bsz];
    let mut b_boot = vec![0f32; bsz];
    let mut b_done = vec![false; bsz];
    // Only a reward hook needs the raw observations and the actions the environment saw.
    let mut b_raw_obs = vec![
        0f32;
        if hooks.rewards.is_some() {
            bsz * obs_dim
        } else {
            0
        }
    ];
    let mut b_env_act = vec![
        0f32;
        if hooks.rewards.is_some() {
            bsz * act_dim
        } else {
            0
        }
    ];
    let mut env_actions_u32 = vec![0u32; n];
    let mut env_actions_f32 = vec![0f32; n * act_dim];
    let started = Instant::now();
    let start_step = st.global_step;
    ctx.progress
        .start("ppo", num_updates * bsz as u64, st.global_step);

    while st.update < num_updates {
        st.update += 1;
        if cfg.anneal_lr {
            let frac = 1.0 - (st.update - 1) as f64 / num_updates as f64;
            adam.lr = frac * cfg.learning_rate;
        }
        // Rollout.
        let mut norm_obs = normalized(&st.obs, st.obs_rms.as_ref());
        for t in 0..t_steps {
            st.global_step += n as u64;
            let out = ac.act(&norm_obs, &mut st.act_rng)?;
            b_obs[t * n * obs_dim..(t + 1) * n * obs_dim].copy_from_slice(&norm_obs);
            b_act[t * n * act_dim..(t + 1) * n * act_dim].copy_from_slice(&out.actions);
            b_logp[t * n..(t + 1) * n].copy_from_slice(&out.logprobs);
            b_val[t * n..(t + 1) * n].copy_from_slice(&out.values);
            if !b_raw_obs.is_empty() {
                b_raw_obs[t * n * obs_dim..(t + 1) * n * obs_dim].copy_from_slice(&st.obs);
            }
            let actions = match &bounds {
                None => {
                    for (d, a) in env_actions_u32.iter_mut().zip(&out.actions) {
                        *d = *a as u32;
                    }
                    Actions::Discrete(&env_actions_u32)
                }
                Some((lo, hi)) => {
                    for (i, (d, a)) in env_actions_f32.iter_mut().zip(&out.actions).enumerate() {
                        *d = a.clamp(lo[i % act_dim], hi[i % act_dim]);
                    }
                    Actions::Continuous(&env_actions_f32)
                }
            };
            if !b_env_act.is_empty() {
                let dst = &mut b_env_act[t * n * act_dim..(t + 1) * n * act_dim];
                match &bounds {
                    None => dst.copy_from_slice(&out.actions),
                    Some(_) => dst.copy_from_slice(&env_actions_f32),
                }
            }
            let step = venv.step(actions);
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
            for i in 0..n {
                st.ep_return[i] += rewards[i] as f64;
                st.ep_len[i] += 1;
                if done[i] {
                    let (r, l) = (st.ep_return[i], st.ep_len[i]);
                    ctx.metrics.log(
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
            if let Some(rn) = st.reward_norm.as_mut() {
                rn.apply(&mut rewards, &done, 10.0);
            }
            if let Some(rms) = st.obs_rms.as_mut() {
                rms.update(&st.obs);
            }
            b_boot[t * n..(t + 1) * n].fill(0.0);
            if cfg.bootstrap_truncated && !truncated_only.is_empty() {
                let fo = normalized(&final_obs, st.obs_rms.as_ref());
                let v = ac.values_of(&fo)?;
                for (k, &i) in truncated_only.iter().enumerate() {
                    b_boot[t * n + i] = (cfg.gamma as f32) * v[k];
                }
            }
            b_rew[t * n..(t + 1) * n].copy_from_slice(&rewards);
            b_done[t * n..(t + 1) * n].copy_from_slice(&done);
            norm_obs = normalized(&st.obs, st.obs_rms.as_ref());
        }
        let next_value = ac.values_of(&norm_obs)?;
        let obs_t = Tensor::from_slice(&b_obs, (bsz, obs_dim), &Device::Cpu)?;
        let act_t = if bounds.is_some() {
            Tensor::from_slice(&b_act, (bsz, act_dim), &Device::Cpu)?
        } else {
            Tensor::from_slice(&b_act, bsz, &Device::Cpu)?
        };
        let mut extra_metrics: Vec<(String, f64)> = Vec::new();
        let mut train_rew = match hooks.rewards.as_deref_mut() {
            Some(h) => {
                let ref_logp = match hooks.reference {
                    Some(r) => Some(r.evaluate(&obs_t, &act_t)?.logprob.to_vec1::<f32>()?),
                    None => None,
                };
                let view = RolloutView {
                    raw_obs: &b_raw_obs,
                    actions: &b_env_act,
                    env_rewards: &b_rew,
                    logprobs: &b_logp,
                    ref_logprobs: ref_logp.as_deref(),
                    dones: &b_done,
                    obs_dim,
                    act_dim,
                };
                let (r, m) = h.rewards(&view)?;
                if r.len() != bsz {
                    return Err(Error::Internal(format!(
                        "reward hook returned {} rewards for a batch of {bsz}",
                        r.len()
                    )));
                }
                extra_metrics = m;
                r
            }
            None => b_rew.clone(),
        };
        for (r, b) in train_rew.iter_mut().zip(&b_boot) {
            *r += b;
        }
        let (adv, ret) = gae(
            &train_rew,
            &b_val,
            &b_done,
            &next_value,
            n,
            cfg.gamma as f32,
            cfg.gae_lambda as f32,
        );

        // Optimisation.
        let mb = bsz / cfg.num_minibatches;
        let mut inds: Vec<u32> = (0..bsz as u32).collect();
        let mut stats = UpdateStats::default();
        'epochs: for _ in 0..cfg.update_epochs {
            inds.shuffle(&mut st.shuffle_rng);
            for chunk in inds.chunks(mb) {
                let s = minibatch_step(
                    cfg, &ac, &mut adam, &obs_t, &act_t, chunk, &b_logp, &b_val, &adv, &ret,
                )?;
                stats.add(&s);
            }
            if let Some(tk) = cfg.target_kl {
                if stats.last_approx_kl > tk {
                    break 'epochs;
                }
            }
        }
        let ev = explained_variance(&b_val, &ret);
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
        fields.extend(extra_metrics.iter().map(|(k, v)| (k.as_str(), *v)));
        ctx.metrics.log(st.global_step, &fields)?;
        let fr = mean(&st.recent);
        ctx.progress
            .update(st.global_step, &format!("return {fr:.1}"));
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
        wall_time_s: started.elapsed().as_secs_f64(),
        obs_rms: st.obs_rms.clone(),
    };
    Ok((summary, ac))
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

/// Generalised advantage estimation over `[T, N]` row-major buffers. `done[t, i]` says the
/// episode ended with step t (so `values[t+1, i]` belongs to a new episode and is not
/// bootstrapped); `next_value` is V of the observation after the last step.
pub fn gae(
    rewards: &[f32],
    values: &[f32],
    done: &[bool],
    next_value: &[f32],
    n: usize,
    gamma: f32,
    lambda: f32,
) -> (Vec<f32>, Vec<f32>) {
    let t_len = rewards.len() / n;
    let mut adv = vec![0f32; rewards.len()];
    let mut last = vec![0f32; n];
    for t in (0..t_len).rev() {
        for i in 0..n {
            let k = t * n + i;
            let nonterminal = if done[k] { 0.0 } else { 1.0 };
            let next_v = if t + 1 == t_len {
                next_value[i]
            } else {
                values[k + n]
            };
            let delta = rewards[k] + gamma * next_v * nonterminal - values[k];
            last[i] = delta + gamma * lambda * nonterminal * last[i];
            adv[k] = last[i];
        }
    }
    let ret = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, ret)
}

fn explained_variance(pred: &[f32], target: &[f32]) -> f64 {
    let var = |x: &mut dyn Iterator<Item = f64>, n: f64| {
        let v: Vec<f64> = x.collect();
        let m = v.iter().sum::<f64>() / n;
        v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / n
    };
    let n = target.len() as f64;
    let vy = var(&mut target.iter().map(|x| *x as f64), n);
    if vy == 0.0 {
        return f64::NAN;
    }
    let vd = var(
        &mut target.iter().zip(pred).map(|(y, p)| (*y - *p) as f64),
        n,
    );
    1.0 - vd / vy
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

#[allow(clippy::too_many_arguments)]
fn minibatch_step(
    cfg: &PpoConfig,
    ac: &ActorCritic,
    adam: &mut Adam,
    obs: &Tensor,
    act: &Tensor,
    idx: &[u32],
    b_logp: &[f32],
    b_val: &[f32],
    b_adv: &[f32],
    b_ret: &[f32],
) -> Result<UpdateStats> {
    let dev = Device::Cpu;
    let m = idx.len();
    let it = Tensor::from_slice(idx, m, &dev)?;
    let mb_obs = obs.index_select(&it, 0)?;
    let mb_act = act.index_select(&it, 0)?;
    let pick = |v: &[f32]| -> Vec<f32> { idx.iter().map(|&i| v[i as usize]).collect() };
    let (old_logp, old_v, ret) = (pick(b_logp), pick(b_val), pick(b_ret));
    let mut adv = pick(b_adv);
    if cfg.norm_adv && m > 1 {
        let mu = adv.iter().map(|x| *x as f64).sum::<f64>() / m as f64;
        let sd =
            (adv.iter().map(|x| (*x as f64 - mu).powi(2)).sum::<f64>() / (m - 1) as f64).sqrt();
        for a in adv.iter_mut() {
            *a = ((*a as f64 - mu) / (sd + 1e-8)) as f32;
        }
    }
    let ev = ac.evaluate(&mb_obs, &mb_act)?;
    let logratio = ev.logprob.sub(&Tensor::from_slice(&old_logp, m, &dev)?)?;
    let ratio = logratio.exp()?;
    let (lr_v, r_v) = (logratio.to_vec1::<f32>()?, ratio.to_vec1::<f32>()?);
    let old_approx_kl = lr_v.iter().map(|x| -(*x as f64)).sum::<f64>() / m as f64;
    let approx_kl = lr_v
        .iter()
        .zip(&r_v)
        .map(|(l, r)| (*r as f64 - 1.0) - *l as f64)
        .sum::<f64>()
        / m as f64;
    let clipfrac = r_v
        .iter()
        .filter(|r| ((**r as f64) - 1.0).abs() > cfg.clip_coef)
        .count() as f64
        / m as f64;
    let adv_t = Tensor::from_slice(&adv, m, &dev)?;
    let c = cfg.clip_coef;
    let pg1 = adv_t.neg()?.mul(&ratio)?;
    let pg2 = adv_t.neg()?.mul(&ratio.clamp(1.0 - c, 1.0 + c)?)?;
    let pg_loss = pg1.maximum(&pg2)?.mean_all()?;
    let ret_t = Tensor::from_slice(&ret, m, &dev)?;
    let v_unclipped = ev.value.sub(&ret_t)?.sqr()?;
    let v_loss = if cfg.clip_vloss {
        let old_v_t = Tensor::from_slice(&old_v, m, &dev)?;
        let v_clipped = (&old_v_t + ev.value.sub(&old_v_t)?.clamp(-c, c)?)?;
        let v_clipped = v_clipped.sub(&ret_t)?.sqr()?;
        (v_unclipped.maximum(&v_clipped)?.mean_all()? * 0.5)?
    } else {
        (v_unclipped.mean_all()? * 0.5)?
    };
    let entropy = ev.entropy.mean_all()?;
    let loss = ((&pg_loss - (&entropy * cfg.ent_coef)?)? + (&v_loss * cfg.vf_coef)?)?;
    let grads = loss.backward()?;
    adam.step(ac.params(), &grads, Some(cfg.max_grad_norm))?;
    Ok(UpdateStats {
        count: 1.0,
        pg_loss: pg_loss.to_scalar::<f32>()? as f64,
        v_loss: v_loss.to_scalar::<f32>()? as f64,
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
        // One env, three steps, episode ends after step 1.
        let r = [1.0, 2.0, 3.0];
        let v = [0.5, 0.25, 1.0];
        let d = [false, true, false];
        let (adv, ret) = gae(&r, &v, &d, &[2.0], 1, 0.9, 0.5);
        let d2 = 3.0 + 0.9 * 2.0 - 1.0;
        let d1 = 2.0 - 0.25;
        let d0 = 1.0 + 0.9 * 0.25 - 0.5;
        let want = [d0 + 0.45 * d1, d1, d2];
        for (a, w) in adv.iter().zip(want) {
            assert!((a - w).abs() < 1e-6, "{adv:?} vs {want:?}");
        }
        assert!((ret[2] - (d2 + 1.0)).abs() < 1e-6);
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
