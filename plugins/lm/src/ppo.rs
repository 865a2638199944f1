//! Token-level PPO for language models, following TRL's `PPOTrainer` (trl 0.7–0.11, the version
//! the MaxMin-RLHF release scripts use; docs/algorithms.md "PPO details the released scripts use (TRL
//! defaults)"). CPU-first on candle; the per-token log-probabilities and entropies come from the
//! fused kernel [`maxmin_core::ops::logprob`] (forward and backward).
//!
//! Two phases, so that a caller can compute sequence scores that depend on the per-sample KL
//! (docs/algorithms.md's F_u = E[r_u] − β·KL, the `maxmin` objective's group selection):
//! [`LmPpoTrainer::rollout`] generates and scores (log π, log π_ref, V, no gradient), then
//! [`LmPpoTrainer::step`] takes one score per response and runs the PPO update.
//!
//! TRL details followed (names are TRL's `PPOConfig` fields):
//! 1. Per-token reward = −β·(log π(y_t) − log π_ref(y_t)) (`kl_penalty = "kl"`), plus the
//!    (optionally `score_clip`ped) sequence score at the **last response token** (the EOS token
//!    when generation stopped there). `compute_rewards`.
//! 2. Old log-probabilities and values come from one pass of the current policy before any
//!    update; the value of token t is the value head at the position that predicts t.
//! 3. GAE(γ, λ) backwards over each response with V after the last token = 0 (a response cut at
//!    `max_new_tokens` is treated as finished, as TRL does); returns = advantages + values.
//!    Optional `whiten_rewards` first (whitening without shifting the mean). `compute_advantages`;
//!    here the shared op's variable-length entry, [`maxmin_core::ops::gae::gae_rows`].
//! 4. Advantages whitened over every response token of the batch (masked mean, unbiased
//!    masked variance, `rsqrt(var + 1e-8)`). `masked_whiten`; here
//!    [`maxmin_core::ppo::stats::whiten`].
//! 5. `ppo_epochs` passes over a fresh random permutation split into mini-batches of
//!    `mini_batch_size`; one Adam step (torch defaults, ε = 1e-8) per mini-batch, optional
//!    global gradient clipping (`max_grad_norm`).
//! 6. Clipped surrogate `max(−A·ρ, −A·clip(ρ, 1±cliprange))` and clipped value loss
//!    `0.5·max((V−R)², (clip(V, V_old ± cliprange_value) − R)²)`, both as **token-level** masked
//!    means over the mini-batch; loss = policy loss + `vf_coef`·value loss. No entropy bonus.
//!    The losses are the control trainer's ([`maxmin_core::ppo::loss`]) with a token mask.
//! 7. A mini-batch whose mean ratio exceeds `ratio_threshold` (10) has its loss multiplied by 0
//!    (TRL: "Skipping batch"); the optimiser still steps, as in TRL.
//! 8. Early stopping (`early_stopping`, `target_kl`), checked at the end of each epoch on the
//!    last mini-batch's `policykl` = masked mean of (log π_old − log π) (TRL's `_early_stop`):
//!    stop when it exceeds 1.5·`target_kl`. docs/algorithms.md calls this approx-KL; TRL's code compares
//!    `policykl`, not the logged `approxkl`, and so do we.
//! 9. Adaptive KL controller (Ziegler et al.; TRL `AdaptiveKLController`, init 0.2, target 6,
//!    horizon 10000) updated after the step with the batch mean of Σ_t (log π − log π_ref) and
//!    n = `batch_size`; the β logged for a step is the one its rewards used.
//! 10. Statistics keep TRL's names (`objective/kl`, `ppo/loss/policy`, `ppo/policy/approxkl` =
//!     ½·mean (log π − log π_old)², …), averaged over the mini-batches that ran.
//!
//! Where we differ from TRL, and why:
//! - Defaults: `early_stopping = true`, `target_kl = 0.1` (the release scripts' setting; TRL's
//!   defaults are `false` / 1). `batch_size` and `mini_batch_size` default to 128 (TRL ≥ 0.8).
//! - No dropout in the base model or the value head while training (TRL trains with GPT-2's
//!   dropout and a 0.1 value-head dropout active): the updates are deterministic on CPU. LoRA
//!   dropout follows [`crate::lora::LoraConfig::dropout`] (on only inside the update); its RNG is
//!   not checkpointed, so exact resume needs `dropout = 0`.
//! - The masked variance skips Bessel's correction when a batch has a single response token
//!   (TRL divides by zero there).
//! - Non-finite scores, losses or gradients abort the step with an error naming the step, the
//!   quantity and its value, and the trainable weights and optimiser state are restored to what
//!   they were before the step (TRL would apply the update).
//! - Score scaling / normalisation (`use_score_scaling`, `use_score_norm`) is left to the
//!   caller's objective.
//! - Only LoRA adapters and the value head train (the base is frozen and doubles as the
//!   reference); a policy without adapters is refused.
//!
//! As in TRL, log-probabilities are those of the raw logits: sampling with a temperature ≠ 1,
//! top-k or top-p makes the rollout distribution differ from π (the release scripts sample with
//! top-k 0, top-p 1; they also ignore EOS, which is `stop_at_eos = false` here). Scoring runs in
//! chunks of `mini_batch_size` responses to bound the memory of the `[b, T, V]` logits.
//!
//! Padding: prompts are left-padded and responses right-padded into a `[b, P + R]` layout, `P` and
//! `R` the longest prompt and response of the rows at hand (a scoring chunk, a mini-batch), so
//! short mini-batches cost less; masks remove padded positions from the losses, GAE, KL,
//! whitening and statistics, and position ids come from the mask, so the padding changes no
//! value. Logits are computed at response positions only, and scoring runs without a graph. Randomness: the mini-batch permutation of step k is the stream
//! `lm-ppo/minibatches/<k>` of the trainer's seed, so a resumed trainer continues exactly.

mod batch;
mod config;

pub use batch::{Rollout, StepStats};
pub use config::LmPpoConfig;

use crate::generate::GenerateOptions;
use crate::lm::ForwardOpts;
use crate::policy::LmPolicy;
use batch::{mean, pack};
use candle_core::{DType, Tensor};
use maxmin_core::objective::KlController;
use maxmin_core::ops::gae::{self, GaeRows};
use maxmin_core::ops::logprob;
use maxmin_core::optim::{Adam, Params};
use maxmin_core::ppo::loss::{self, Over, PolicyLoss, ValueLoss};
use maxmin_core::ppo::stats::{self, Eps};
use maxmin_core::rng::{self, Rng};
use maxmin_core::{Error, Result};
use rand::seq::SliceRandom;
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

/// Whitening as TRL's `masked_whiten`: (x − μ)·(σ² + 1e-8)^−½.
const WHITEN_EPS: Eps = Eps::InVariance(1e-8);

fn non_finite(step: u64, what: &str, value: f64) -> Error {
    Error::Internal(format!(
        "PPO step {step}: {what} is {value} (not finite); the update was not applied and the \
         trainable weights are as before this step"
    ))
}

/// Per-token arrays of a batch, flattened `[B, R]` with padding 0.
struct BatchData {
    r: usize,
    mask: Vec<f32>,
    old_logp: Vec<f32>,
    old_values: Vec<f32>,
    advantages: Vec<f32>,
    returns: Vec<f32>,
    /// Masked mean of the advantages before whitening.
    raw_adv_mean: f64,
}

impl BatchData {
    /// Rows `rows` of a `[B, R]` array, cut to their first `width` columns.
    fn rows(
        &self,
        src: &[f32],
        rows: &[usize],
        width: usize,
        device: &candle_core::Device,
    ) -> Result<Tensor> {
        let r = self.r;
        let mut out = Vec::with_capacity(rows.len() * width);
        for &i in rows {
            out.extend_from_slice(&src[i * r..i * r + width]);
        }
        Ok(Tensor::from_vec(out, (rows.len(), width), device)?)
    }
}

/// Sums of one mini-batch's statistics.
#[derive(Default)]
struct MbStats {
    policy_loss: f64,
    value_loss: f64,
    total_loss: f64,
    approxkl: f64,
    policykl: f64,
    clipfrac: f64,
    entropy: f64,
    value_clipfrac: f64,
    vpred: f64,
    value_error: f64,
    ratio: f64,
    grad_norm: f64,
    skipped: bool,
}

/// The PPO trainer: a policy (LoRA + value head over a frozen base), Adam over its trainable
/// variables, the KL controller and a step counter.
pub struct LmPpoTrainer {
    policy: LmPolicy,
    cfg: LmPpoConfig,
    params: Params,
    adam: Adam,
    kl_ctl: KlController,
    seed: u64,
    steps: u64,
}

impl std::fmt::Debug for LmPpoTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LmPpoTrainer")
            .field("cfg", &self.cfg)
            .field("beta", &self.kl_ctl.value)
            .field("steps", &self.steps)
            .finish()
    }
}

impl LmPpoTrainer {
    /// A trainer for `policy`; `seed` drives the mini-batch permutations.
    pub fn new(policy: LmPolicy, cfg: LmPpoConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let Some(l) = policy.lora() else {
            return Err(Error::input(
                "PPO needs a policy with LoRA adapters: the base weights are frozen, so without \
                 adapters only the value head would train",
                Some("add a `[policy.lora]` table".into()),
            ));
        };
        let mut params = Params::new();
        for ((name, _), var) in l.named_tensors().into_iter().zip(l.vars()) {
            params.insert(name, var);
        }
        let vh = policy.value_head().vars();
        for (name, var) in ["v_head.weight", "v_head.bias"].iter().zip(vh) {
            params.insert((*name).to_string(), var);
        }
        let adam = Adam::new(&params, cfg.learning_rate, cfg.adam_eps);
        let kl_ctl = KlController::new(&cfg.kl);
        Ok(LmPpoTrainer {
            policy,
            cfg,
            params,
            adam,
            kl_ctl,
            seed,
            steps: 0,
        })
    }

    /// The policy being trained.
    pub fn policy(&self) -> &LmPolicy {
        &self.policy
    }

    /// Give the trained policy back.
    pub fn into_policy(self) -> LmPolicy {
        self.policy
    }

    /// The configuration.
    pub fn config(&self) -> &LmPpoConfig {
        &self.cfg
    }

    /// The KL coefficient β the next step's rewards will use.
    pub fn beta(&self) -> f64 {
        self.kl_ctl.value
    }

    /// PPO steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Change the learning rate (schedules).
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.adam.lr = lr;
    }

    /// Trainable variables by name (PEFT adapter names, `v_head.weight`, `v_head.bias`).
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Generate one response per prompt with `gen` (sampling driven by `rng`) and score it.
    pub fn rollout(
        &mut self,
        prompts: &[Vec<u32>],
        gen: &GenerateOptions,
        rng: &mut Rng,
    ) -> Result<Rollout> {
        let t0 = Instant::now();
        let g = self.policy.generate(prompts, gen, rng)?;
        let gen_seconds = t0.elapsed().as_secs_f64();
        let mut out = self.score_responses(prompts, &g.tokens)?;
        out.stopped_at_eos = g.stopped_at_eos;
        out.gen_seconds = gen_seconds;
        Ok(out)
    }

    /// Score given responses (no generation): old log-probabilities, reference log-probabilities
    /// and values, in chunks of `mini-batch-size`. Every prompt and response needs ≥ 1 token.
    pub fn score_responses(&self, prompts: &[Vec<u32>], responses: &[Vec<u32>]) -> Result<Rollout> {
        let t0 = Instant::now();
        if prompts.len() != responses.len() || prompts.is_empty() {
            return Err(Error::input(
                format!(
                    "PPO rollout: {} prompts and {} responses; expected the same number, ≥ 1",
                    prompts.len(),
                    responses.len()
                ),
                None,
            ));
        }
        for (what, seqs) in [("prompt", prompts), ("response", responses)] {
            if let Some(i) = seqs.iter().position(|s| s.is_empty()) {
                return Err(Error::input(
                    format!("PPO rollout: {what} {i} has no tokens"),
                    Some(if what == "response" {
                        "generate at least one new token (max-new-tokens ≥ 1)".into()
                    } else {
                        "every prompt needs at least one token (e.g. BOS)".into()
                    }),
                ));
            }
        }
        let b = prompts.len();
        let device = self.policy.base().device().clone();
        let mut logprobs = Vec::with_capacity(b);
        let mut ref_logprobs = Vec::with_capacity(b);
        let mut values = Vec::with_capacity(b);
        let all: Vec<usize> = (0..b).collect();
        for rows in all.chunks(self.cfg.mini_batch_size) {
            let p = rows.iter().map(|&i| prompts[i].len()).max().unwrap_or(1);
            let r = rows.iter().map(|&i| responses[i].len()).max().unwrap_or(1);
            let pk = pack(prompts, responses, rows, p, r, &device)?;
            // Logits of the response positions only, no graph: nothing here is trained through.
            let opts = ForwardOpts {
                logits_len: Some(r),
                ..ForwardOpts::inference(p - 1)
            };
            let out = self.policy.forward_with(&pk.input, None, opts)?;
            let reference = self.policy.reference_forward_with(&pk.input, None, opts)?;
            let (logits, ref_logits) = (out.logits, reference.logits);
            let lp = logprob::token_logprobs(
                &maxmin_core::device::Device::Cpu,
                &logits,
                &pk.targets,
                Some(&ref_logits),
            )?;
            let lp_v: Vec<Vec<f32>> = lp.logp.to_vec2()?;
            let ref_v: Vec<Vec<f32>> = lp
                .ref_logp
                .ok_or_else(|| Error::Internal("logprob op returned no reference".into()))?
                .to_vec2()?;
            let v_v: Vec<Vec<f32>> = out.values.narrow(1, p - 1, r)?.detach().to_vec2()?;
            for (k, &i) in rows.iter().enumerate() {
                let n = responses[i].len();
                logprobs.push(lp_v[k][..n].to_vec());
                ref_logprobs.push(ref_v[k][..n].to_vec());
                values.push(v_v[k][..n].to_vec());
            }
        }
        let kl_per_sample = logprobs
            .iter()
            .zip(&ref_logprobs)
            .map(|(a, b): (&Vec<f32>, &Vec<f32>)| a.iter().zip(b).map(|(x, y)| x - y).sum())
            .collect();
        Ok(Rollout {
            prompts: prompts.to_vec(),
            responses: responses.to_vec(),
            stopped_at_eos: vec![false; b],
            logprobs,
            ref_logprobs,
            values,
            kl_per_sample,
            gen_seconds: 0.0,
            score_seconds: t0.elapsed().as_secs_f64(),
        })
    }

    /// One PPO update on `rollout` with one score per response. On a non-finite score, loss or
    /// gradient it returns an error and leaves the weights, optimiser and KL controller as they
    /// were, so the caller can stop and keep its last good checkpoint.
    pub fn step(&mut self, rollout: &Rollout, scores: &[f32]) -> Result<StepStats> {
        self.check_step_input(rollout, scores)?;
        let tokens: Vec<Vec<f32>> = rollout
            .responses
            .iter()
            .zip(scores)
            .map(|(y, &s)| {
                let mut t = vec![0.0f32; y.len()];
                if let Some(last) = t.last_mut() {
                    *last = s;
                }
                t
            })
            .collect();
        self.step_inner(rollout, &tokens)
    }

    /// [`LmPpoTrainer::step`] with a score per response token (`token_scores[i][t]`, added to
    /// token `t`'s reward beside the KL penalty) instead of one per response at its last token:
    /// for shaped rewards (docs/lm-rlhf.md, "Token rewards"). `score-clip` clips each token's
    /// score; the logged score of a response is the sum of its token scores.
    pub fn step_tokens(
        &mut self,
        rollout: &Rollout,
        token_scores: &[Vec<f32>],
    ) -> Result<StepStats> {
        let sums: Vec<f32> = token_scores.iter().map(|t| t.iter().sum()).collect();
        self.check_step_input(rollout, &sums)?;
        for (i, (t, y)) in token_scores.iter().zip(&rollout.responses).enumerate() {
            if t.len() != y.len() {
                return Err(Error::input(
                    format!(
                        "PPO step {}: response {i} has {} tokens but {} token scores",
                        self.steps,
                        y.len(),
                        t.len()
                    ),
                    None,
                ));
            }
        }
        self.step_inner(rollout, token_scores)
    }

    fn step_inner(&mut self, rollout: &Rollout, token_scores: &[Vec<f32>]) -> Result<StepStats> {
        let t0 = Instant::now();
        let step = self.steps;
        let beta = self.kl_ctl.value;
        let token_scores: Vec<Vec<f32>> = match self.cfg.score_clip {
            Some(c) => token_scores
                .iter()
                .map(|t| t.iter().map(|s| s.clamp(-c as f32, c as f32)).collect())
                .collect(),
            None => token_scores.to_vec(),
        };
        let scores: Vec<f32> = token_scores.iter().map(|t| t.iter().sum()).collect();
        let data = self.advantages(rollout, &token_scores, beta)?;

        // Snapshot so that a non-finite loss or gradient in any mini-batch undoes the whole step.
        let snapshot: Vec<Tensor> = self
            .params
            .values()
            .map(|v| v.as_tensor().copy())
            .collect::<candle_core::Result<_>>()?;
        let adam_snapshot = (self.adam.t, self.adam.state_tensors(&self.params)?);
        let res = self.epochs(rollout, &data, step);
        let (mbs, epochs_run) = match res {
            Ok(x) => x,
            Err(e) => {
                for (var, t) in self.params.values().zip(&snapshot) {
                    var.set(t)?;
                }
                self.adam.load_state(adam_snapshot.0, &adam_snapshot.1)?;
                return Err(e);
            }
        };

        let kl = rollout.mean_kl();
        self.kl_ctl.update(kl, self.cfg.batch_size);
        self.steps += 1;
        let mut s = step_stats(rollout, &scores, &data, &mbs, t0);
        (s.step, s.kl, s.kl_coef, s.non_score_reward) = (step, kl, beta, -beta * kl);
        s.epochs_run = epochs_run;
        Ok(s)
    }

    /// Refuse a rollout or scores `step` cannot use: wrong sizes, non-finite values.
    fn check_step_input(&self, rollout: &Rollout, scores: &[f32]) -> Result<()> {
        let step = self.steps;
        rollout.check()?;
        let b = rollout.len();
        if b != self.cfg.batch_size {
            return Err(Error::input(
                format!(
                    "PPO step {step}: the rollout has {b} responses, but batch-size is {}",
                    self.cfg.batch_size
                ),
                Some("pass batch-size prompts to each rollout".into()),
            ));
        }
        if scores.len() != b {
            return Err(Error::input(
                format!("PPO step {step}: {} scores for {b} responses", scores.len()),
                None,
            ));
        }
        if let Some((i, s)) = scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
            return Err(non_finite(step, &format!("score[{i}]"), *s as f64));
        }
        for (what, rows) in [
            ("rollout logprobs", &rollout.logprobs),
            ("rollout ref_logprobs", &rollout.ref_logprobs),
            ("rollout values", &rollout.values),
        ] {
            if let Some((i, v)) = rows
                .iter()
                .enumerate()
                .flat_map(|(i, r)| r.iter().map(move |v| (i, *v)))
                .find(|(_, v)| !v.is_finite())
            {
                return Err(non_finite(
                    step,
                    &format!("{what} of response {i}"),
                    v as f64,
                ));
            }
        }
        Ok(())
    }

    /// Token rewards (−β·KL plus the token's score), GAE ([`gae::gae_rows`]: one row per
    /// response, V = 0 after its last token), returns and whitened advantages, flattened `[B, R]`.
    // Indexed loops: the rollout's rows and the scores are read at the same (i, t).
    #[allow(clippy::needless_range_loop)]
    fn advantages(&self, rollout: &Rollout, scores: &[Vec<f32>], beta: f64) -> Result<BatchData> {
        let b = rollout.len();
        let r = rollout.responses.iter().map(|y| y.len()).max().unwrap_or(1);
        let mut mask = vec![0f32; b * r];
        let mut rewards = vec![0f32; b * r];
        let mut old_logp = vec![0f32; b * r];
        let mut old_values = vec![0f32; b * r];
        for i in 0..b {
            let n = rollout.responses[i].len();
            for t in 0..n {
                let k = i * r + t;
                mask[k] = 1.0;
                old_logp[k] = rollout.logprobs[i][t];
                old_values[k] = rollout.values[i][t];
                let kl = rollout.logprobs[i][t] as f64 - rollout.ref_logprobs[i][t] as f64;
                rewards[k] = (-beta * kl) as f32 + scores[i][t];
            }
        }
        if self.cfg.whiten_rewards {
            stats::whiten(&mut rewards, Some(&mask), WHITEN_EPS, false);
        }
        let lens: Vec<usize> = rollout.responses.iter().map(|y| y.len()).collect();
        let rows = GaeRows {
            rewards: &rewards,
            values: &old_values,
            lens: &lens,
            width: r,
        };
        let gae = gae::gae_rows(&rows, self.cfg.gamma as f32, self.cfg.lam as f32)?;
        let (mut advantages, returns) = (gae.advantages, gae.returns);
        let raw_adv_mean = stats::mean_var(&advantages, Some(&mask)).0;
        stats::whiten(&mut advantages, Some(&mask), WHITEN_EPS, true);
        if let Some(k) = advantages.iter().position(|a| !a.is_finite()) {
            return Err(non_finite(
                self.steps,
                &format!("advantage of response {} token {}", k / r, k % r),
                advantages[k] as f64,
            ));
        }
        Ok(BatchData {
            r,
            mask,
            old_logp,
            old_values,
            advantages,
            returns,
            raw_adv_mean,
        })
    }

    /// The epochs × mini-batches loop; returns each mini-batch's statistics and the epochs run.
    fn epochs(
        &mut self,
        rollout: &Rollout,
        data: &BatchData,
        step: u64,
    ) -> Result<(Vec<MbStats>, usize)> {
        let b = rollout.len();
        let mut rng = rng::stream(self.seed, &format!("lm-ppo/minibatches/{step}"));
        let mut all = Vec::new();
        let mut epochs_run = 0;
        let was = self.policy.lora().map(|l| l.is_training());
        if let Some(l) = self.policy.lora() {
            l.set_training(true);
        }
        let res = (|| -> Result<()> {
            for epoch in 0..self.cfg.ppo_epochs {
                let mut perm: Vec<usize> = (0..b).collect();
                perm.shuffle(&mut rng);
                let mut last_policykl = 0.0;
                for (mb, rows) in perm.chunks(self.cfg.mini_batch_size).enumerate() {
                    let s = self.minibatch(rollout, data, rows, step, epoch, mb)?;
                    last_policykl = s.policykl;
                    all.push(s);
                }
                epochs_run += 1;
                if self.cfg.early_stopping && last_policykl > 1.5 * self.cfg.target_kl {
                    break;
                }
            }
            Ok(())
        })();
        if let (Some(l), Some(w)) = (self.policy.lora(), was) {
            l.set_training(w);
        }
        res?;
        Ok((all, epochs_run))
    }

    /// One mini-batch: forward pass with gradients, the shared clipped losses as token-level
    /// masked means, statistics, then [`LmPpoTrainer::apply`].
    fn minibatch(
        &mut self,
        rollout: &Rollout,
        data: &BatchData,
        rows: &[usize],
        step: u64,
        epoch: usize,
        mb: usize,
    ) -> Result<MbStats> {
        let device = self.policy.base().device().clone();
        // Padded to this mini-batch's longest prompt and response, not the batch's: padding is
        // masked out, so only the compute changes.
        let (p, r) = rollout.padded_shape(rows);
        let pk = pack(&rollout.prompts, &rollout.responses, rows, p, r, &device)?;
        let opts = ForwardOpts {
            grad: true,
            logits_from: p - 1,
            logits_len: Some(r),
        };
        let out = self.policy.forward_with(&pk.input, None, opts)?;
        let lp = logprob::token_logprobs(
            &maxmin_core::device::Device::Cpu,
            &out.logits,
            &pk.targets,
            None,
        )?;
        let vpred = out.values.narrow(1, p - 1, r)?.to_dtype(DType::F32)?;
        let m = data.rows(&data.mask, rows, r, &device)?;
        let old_logp = data.rows(&data.old_logp, rows, r, &device)?;
        let old_v = data.rows(&data.old_values, rows, r, &device)?;
        let adv = data.rows(&data.advantages, rows, r, &device)?;
        let ret = data.rows(&data.returns, rows, r, &device)?;
        let n: f64 = rows
            .iter()
            .map(|&i| rollout.responses[i].len() as f64)
            .sum();
        let over = Over::Mask { mask: &m, count: n };
        let (clip, clip_v) = (self.cfg.cliprange, self.cfg.cliprange_value);
        let pg = loss::clipped_policy_loss(&lp.logp, &old_logp, &adv, clip, over)?;
        let vf = loss::clipped_value_loss(&vpred, &old_v, &ret, Some(clip_v), over)?;
        let mut loss = (&pg.loss + (&vf.loss * self.cfg.vf_coef)?)?;
        let mut s = token_stats(&m, n, &lp.logp, &old_logp, &pg, &vf, &lp.entropy, &vpred)?;
        s.skipped = s.ratio > self.cfg.ratio_threshold;
        if s.skipped {
            loss = (loss * 0.0)?;
        }
        s.policy_loss = pg.loss.to_scalar::<f32>()? as f64;
        s.value_loss = vf.loss.to_scalar::<f32>()? as f64;
        s.total_loss = s.policy_loss + self.cfg.vf_coef * s.value_loss;
        let where_ = format!("epoch {epoch} mini-batch {mb}");
        for (what, v) in [("policy loss", s.policy_loss), ("value loss", s.value_loss)] {
            if !v.is_finite() {
                return Err(non_finite(step, &format!("{what} ({where_})"), v));
            }
        }
        s.grad_norm = self.apply(&loss, step, &where_)?;
        Ok(s)
    }

    /// Backpropagate `loss` and take one Adam step (gradients clipped to `max-grad-norm`);
    /// returns the global gradient norm. A non-finite loss or gradient is an error, before any
    /// weight changes.
    fn apply(&mut self, loss: &Tensor, step: u64, where_: &str) -> Result<f64> {
        let loss_v = loss.to_scalar::<f32>()? as f64;
        if !loss_v.is_finite() {
            return Err(non_finite(step, &format!("total loss ({where_})"), loss_v));
        }
        let grads = loss.backward()?;
        for (name, var) in &self.params {
            if let Some(g) = grads.get(var.as_tensor()) {
                let s = g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
                if !s.is_finite() {
                    return Err(non_finite(
                        step,
                        &format!("squared norm of the gradient of `{name}` ({where_})"),
                        s,
                    ));
                }
            }
        }
        self.adam.step(&self.params, &grads, self.cfg.max_grad_norm)
    }

    /// Everything [`LmPpoTrainer::restore`] needs, as tensors (`param.<name>`, `adam.m.<name>`,
    /// `adam.v.<name>`) and JSON (step counter, seed, Adam step and learning rate, KL
    /// controller), for callers that write their own checkpoints.
    pub fn state(&self) -> Result<(HashMap<String, Tensor>, serde_json::Value)> {
        let mut tensors = self.adam.state_tensors(&self.params)?;
        for (name, var) in &self.params {
            tensors.insert(format!("param.{name}"), var.as_tensor().copy()?);
        }
        let json = serde_json::json!({
            "format": "maxmin-lm-ppo/1",
            "steps": self.steps,
            "seed": self.seed,
            "adam_t": self.adam.t,
            "learning_rate": self.adam.lr,
            "kl_controller": self.kl_ctl,
        });
        Ok((tensors, json))
    }

    /// Restore what [`LmPpoTrainer::state`] returned (same model shapes and adapters).
    pub fn restore(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        state: &serde_json::Value,
    ) -> Result<()> {
        let bad = |m: String| Error::input(format!("PPO checkpoint: {m}"), None);
        if state["format"] != "maxmin-lm-ppo/1" {
            return Err(bad(format!("unknown format {}", state["format"])));
        }
        let u = |k: &str| {
            state[k]
                .as_u64()
                .ok_or_else(|| bad(format!("missing `{k}`")))
        };
        let (steps, seed, t) = (u("steps")?, u("seed")?, u("adam_t")?);
        let lr = state["learning_rate"]
            .as_f64()
            .ok_or_else(|| bad("missing `learning_rate`".into()))?;
        let kl: KlController = serde_json::from_value(state["kl_controller"].clone())
            .map_err(|e| bad(format!("`kl_controller`: {e}")))?;
        let mut values = Vec::with_capacity(self.params.len());
        for (name, var) in &self.params {
            let key = format!("param.{name}");
            let t = tensors
                .get(&key)
                .ok_or_else(|| bad(format!("missing tensor `{key}`")))?;
            if t.dims() != var.dims() {
                return Err(bad(format!(
                    "tensor `{key}` has shape {:?}, the policy expects {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            values.push(t.to_dtype(var.dtype())?.to_device(var.device())?);
        }
        self.adam.load_state(t, tensors)?;
        for (var, t) in self.params.values().zip(&values) {
            var.set(t)?;
        }
        self.adam.lr = lr;
        self.kl_ctl = kl;
        self.steps = steps;
        self.seed = seed;
        Ok(())
    }

    /// Save the trainer state into `dir` (`lm_ppo.safetensors`, then `lm_ppo.json`, each written
    /// atomically; the JSON is written last).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let (tensors, json) = self.state()?;
        let st = dir.join("lm_ppo.safetensors");
        let tmp = dir.join(format!(".lm_ppo.safetensors.tmp{}", std::process::id()));
        candle_core::safetensors::save(&tensors, &tmp)
            .map_err(|e| Error::Internal(format!("cannot write {}: {e}", tmp.display())))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &st).map_err(|e| Error::io(&st, e))?;
        let text = serde_json::to_vec_pretty(&json)
            .map_err(|e| Error::Internal(format!("cannot serialise PPO state: {e}")))?;
        maxmin_core::run::write_atomic(&dir.join("lm_ppo.json"), &text)
    }

    /// Load what [`LmPpoTrainer::save`] wrote into `dir`.
    pub fn load(&mut self, dir: &Path) -> Result<()> {
        let st = dir.join("lm_ppo.safetensors");
        let tensors = candle_core::safetensors::load(&st, &candle_core::Device::Cpu)
            .map_err(|e| Error::data(&st, None, format!("not a valid safetensors file: {e}")))?;
        let js = dir.join("lm_ppo.json");
        let text = std::fs::read_to_string(&js).map_err(|e| Error::io(&js, e))?;
        let state: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::data(&js, None, e.to_string()))?;
        self.restore(&tensors, &state)
    }
}

/// Token-level statistics of one mini-batch (TRL's), masked means over its `n` response tokens
/// computed on the host; the losses and the gradient norm are filled in by the caller.
#[allow(clippy::too_many_arguments)] // the tensors one mini-batch's statistics come from
fn token_stats(
    mask: &Tensor,
    n: f64,
    logp: &Tensor,
    old_logp: &Tensor,
    pg: &PolicyLoss,
    vf: &ValueLoss,
    entropy: &Tensor,
    vpred: &Tensor,
) -> Result<MbStats> {
    let flat = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
    let vf_clipped = vf
        .clipped
        .as_ref()
        .ok_or_else(|| Error::Internal("the LM value loss is always clipped".into()))?;
    let (mv, lpv, olv, rv) = (flat(mask)?, flat(logp)?, flat(old_logp)?, flat(&pg.ratio)?);
    let (pg1v, pg2v) = (flat(&pg.unclipped)?, flat(&pg.clipped)?);
    let (vf1v, vf2v) = (flat(&vf.unclipped)?, flat(vf_clipped)?);
    let (entv, vpv) = (flat(entropy)?, flat(vpred)?);
    let mm = |f: &dyn Fn(usize) -> f64| -> f64 {
        (0..mv.len()).filter(|&k| mv[k] > 0.0).map(f).sum::<f64>() / n
    };
    Ok(MbStats {
        approxkl: 0.5 * mm(&|k| ((lpv[k] - olv[k]) as f64).powi(2)),
        policykl: mm(&|k| (olv[k] - lpv[k]) as f64),
        clipfrac: mm(&|k| (pg2v[k] > pg1v[k]) as u8 as f64),
        entropy: mm(&|k| entv[k] as f64),
        value_clipfrac: mm(&|k| (vf2v[k] > vf1v[k]) as u8 as f64),
        vpred: mm(&|k| vpv[k] as f64),
        value_error: mm(&|k| vf1v[k] as f64),
        ratio: mm(&|k| rv[k] as f64),
        ..MbStats::default()
    })
}

/// A step's [`StepStats`] from its rollout, clipped scores, batch data and mini-batch
/// statistics (averaged over the mini-batches that ran); the caller fills in the step index,
/// KL, β and epochs.
fn step_stats(
    rollout: &Rollout,
    scores: &[f32],
    data: &BatchData,
    mbs: &[MbStats],
    t0: Instant,
) -> StepStats {
    let b = rollout.len();
    let n_mb = mbs.len().max(1) as f64;
    let avg = |f: fn(&MbStats) -> f64| mbs.iter().map(f).sum::<f64>() / n_mb;
    let (ret_mean, ret_var) = stats::mean_var(&data.returns, Some(&data.mask));
    let score_mean = mean(scores.iter().map(|&s| s as f64));
    let score_std = mean(scores.iter().map(|&s| (s as f64 - score_mean).powi(2))).sqrt();
    let tokens = rollout.response_tokens();
    let train_s = t0.elapsed().as_secs_f64();
    let total_s = rollout.gen_seconds + rollout.score_seconds + train_s;
    StepStats {
        seq_entropy: mean(
            rollout
                .logprobs
                .iter()
                .map(|l| -l.iter().map(|&x| x as f64).sum::<f64>()),
        ),
        mean_scores: score_mean,
        std_scores: score_std,
        response_len: tokens as f64 / b as f64,
        policy_loss: avg(|m| m.policy_loss),
        value_loss: avg(|m| m.value_loss),
        total_loss: avg(|m| m.total_loss),
        approxkl: avg(|m| m.approxkl),
        policykl: avg(|m| m.policykl),
        clipfrac: avg(|m| m.clipfrac),
        entropy: avg(|m| m.entropy),
        value_clipfrac: avg(|m| m.value_clipfrac),
        returns_mean: ret_mean,
        returns_var: ret_var,
        vpred_mean: avg(|m| m.vpred),
        value_error: avg(|m| m.value_error),
        advantages_mean: data.raw_adv_mean,
        ratio_mean: avg(|m| m.ratio),
        grad_norm: avg(|m| m.grad_norm),
        minibatches_skipped: mbs.iter().filter(|m| m.skipped).count(),
        gen_s: rollout.gen_seconds,
        score_s: rollout.score_seconds,
        train_s,
        tokens_per_s: if total_s > 0.0 {
            tokens as f64 / total_s
        } else {
            0.0
        },
        ..StepStats::default()
    }
}
