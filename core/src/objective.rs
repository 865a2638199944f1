//! Objectives: how the K learned group rewards become the one reward a PPO step maximises
//! (docs/algorithms.md, "MaxMin alignment"). Each objective sees, per rollout batch, every group's reward
//! for every sample (`[K][B]`, already calibrated where configured), the pooled model's reward
//! (for `single`), and the per-sample KL penalty, and returns the training reward per sample.
//!
//! | type | reward for sample i | source |
//! |---|---|---|
//! | `single` | r_pooled(i) | ordinary RLHF |
//! | `utilitarian` | Σ_u η_u r_u(i) | share-weighted mean |
//! | `maxmin` | r_{u*}(i), u* = argmin_u F̂_u, F̂_u = mean_i r_u(i) − β·KL | paper, Algorithm 1 |
//! | `maxmin`, `utility-smoothing = α` | the same, u* = argmin of an EMA of F̂_u over batches | variance-reduced Algorithm 1 |
//! | `pointwise-min` | min_u r_u(i) | authors' released scripts |
//! | `softmin` | Σ_u λ_u r_u(i), λ ∝ exp(−F̂_u/τ) (the gradient of −τ log Σ exp(−F̂_u/τ)) | smooth max-min |
//! | `dro` | Σ_u λ_u r_u(i), λ_u ← λ_u exp(−η F̂_u), normalised, kept across batches | group DRO |
//!
//! The KL term is the same for every group, so it never changes which group is worst; it is
//! still part of F̂_u so that logged utilities mean what docs/algorithms.md defines.

use crate::error::{check, Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Debug;

/// What an objective is told about the groups.
#[derive(Debug, Clone)]
pub struct Groups {
    /// Group names, in model order.
    pub names: Vec<String>,
    /// Population shares η_u (sum to 1).
    pub shares: Vec<f64>,
}

/// One batch's inputs.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// `[K][B]` group rewards.
    pub group_rewards: &'a [Vec<f32>],
    /// `[B]` pooled (single) model rewards, when one was trained.
    pub single_rewards: Option<&'a [f32]>,
    /// Mean KL(π‖π_ref) per sample over the batch, already multiplied by nothing (the objective
    /// multiplies by β).
    pub mean_kl: f64,
    /// KL coefficient β in force.
    pub beta: f64,
}

/// One batch's output.
#[derive(Debug, Clone, PartialEq)]
pub struct Combined {
    /// `[B]` training rewards.
    pub rewards: Vec<f32>,
    /// Estimated utility F̂_u per group on this batch.
    pub utilities: Vec<f64>,
    /// Weight of each group in the training reward this batch (one-hot for `maxmin`).
    pub weights: Vec<f64>,
    /// The group optimised this batch, where one is selected (`maxmin`).
    pub selected: Option<usize>,
}

/// A combination rule; stateful ones (`dro`) checkpoint their state.
pub trait Objective: Send + Debug {
    /// Combine one batch.
    fn combine(&mut self, batch: &Batch<'_>) -> Result<Combined>;
    /// The training reward that this batch's decisions (`combined`: its selected group or group
    /// weights) give to other samples, `[K][N]` group rewards and `[N]` pooled ones, without
    /// touching the objective's state. Reward shaping scores the prefixes of a batch's responses
    /// with it (docs/lm-rlhf.md, "Token rewards"); on the batch's own rewards it returns
    /// `combined.rewards`. Default: Σ_u weight_u · r_u, the rule of every linear objective.
    fn rescore(
        &self,
        combined: &Combined,
        group_rewards: &[Vec<f32>],
        _single_rewards: Option<&[f32]>,
    ) -> Result<Vec<f32>> {
        Ok(weighted_rows(group_rewards, &combined.weights))
    }
    /// State to checkpoint.
    fn state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// Restore [`Objective::state`].
    fn restore(&mut self, _state: &serde_json::Value) -> Result<()> {
        Ok(())
    }
}

/// Config of an objective: `[[objectives]] type = "maxmin"`.
#[typetag::serde(tag = "type")]
pub trait ObjectiveConfig: Debug + Send + Sync {
    /// Check values; keys relative to the objective's table.
    fn validate(&self) -> Result<()> {
        Ok(())
    }
    /// A short label for tables and plots (the type, plus parameters where they matter).
    fn label(&self) -> String;
    /// Build for these groups.
    fn build(&self, groups: &Groups) -> Result<Box<dyn Objective>>;
}

/// F̂_u = mean reward − β·KL for every group.
pub fn utilities(batch: &Batch<'_>) -> Vec<f64> {
    batch
        .group_rewards
        .iter()
        .map(|r| {
            let m = r.iter().map(|x| *x as f64).sum::<f64>() / r.len().max(1) as f64;
            m - batch.beta * batch.mean_kl
        })
        .collect()
}

fn check_batch(batch: &Batch<'_>, k: usize) -> Result<usize> {
    if batch.group_rewards.len() != k {
        return Err(Error::Internal(format!(
            "objective built for {k} groups got rewards of {}",
            batch.group_rewards.len()
        )));
    }
    let b = batch.group_rewards.first().map_or(0, |r| r.len());
    if batch.group_rewards.iter().any(|r| r.len() != b) {
        return Err(Error::Internal("group reward rows differ in length".into()));
    }
    Ok(b)
}

/// Σ_u w_u · r_u(i) per sample of `[K][N]` rewards.
fn weighted_rows(group_rewards: &[Vec<f32>], w: &[f64]) -> Vec<f32> {
    let b = group_rewards.first().map_or(0, |r| r.len());
    (0..b)
        .map(|i| {
            group_rewards
                .iter()
                .zip(w)
                .map(|(r, w)| r[i] as f64 * w)
                .sum::<f64>() as f32
        })
        .collect()
}

macro_rules! objective_config {
    ($ty:ident, $name:literal, $doc:literal) => {
        crate::register_plugin!(ObjectiveConfig, $name, $doc);
    };
}

/// `type = "single"`: the pooled reward model (ordinary RLHF).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SingleConfig {}
objective_config!(
    SingleConfig,
    "single",
    "pooled reward model: ordinary single-reward RLHF"
);

#[derive(Debug)]
struct Single {
    k: usize,
}

#[typetag::serde(name = "single")]
impl ObjectiveConfig for SingleConfig {
    fn label(&self) -> String {
        "single".into()
    }
    fn build(&self, groups: &Groups) -> Result<Box<dyn Objective>> {
        Ok(Box::new(Single {
            k: groups.names.len(),
        }))
    }
}

impl Objective for Single {
    fn combine(&mut self, batch: &Batch<'_>) -> Result<Combined> {
        check_batch(batch, self.k)?;
        let r = batch.single_rewards.ok_or_else(|| {
            Error::input(
                "objective `single` needs the pooled reward model, but none was trained",
                Some("keep the single model in the preference stage".into()),
            )
        })?;
        Ok(Combined {
            rewards: r.to_vec(),
            utilities: utilities(batch),
            weights: vec![f64::NAN; self.k],
            selected: None,
        })
    }
    fn rescore(&self, _: &Combined, _: &[Vec<f32>], single: Option<&[f32]>) -> Result<Vec<f32>> {
        single
            .map(<[f32]>::to_vec)
            .ok_or_else(|| Error::Internal("single: rescore without pooled rewards".into()))
    }
}

/// `type = "utilitarian"`: share-weighted mean of the group rewards.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct UtilitarianConfig {}
objective_config!(
    UtilitarianConfig,
    "utilitarian",
    "share-weighted mean of the K group rewards"
);

#[derive(Debug)]
struct Utilitarian {
    shares: Vec<f64>,
}

#[typetag::serde(name = "utilitarian")]
impl ObjectiveConfig for UtilitarianConfig {
    fn label(&self) -> String {
        "utilitarian".into()
    }
    fn build(&self, groups: &Groups) -> Result<Box<dyn Objective>> {
        Ok(Box::new(Utilitarian {
            shares: groups.shares.clone(),
        }))
    }
}

impl Objective for Utilitarian {
    fn combine(&mut self, batch: &Batch<'_>) -> Result<Combined> {
        check_batch(batch, self.shares.len())?;
        Ok(Combined {
            rewards: weighted_rows(batch.group_rewards, &self.shares),
            utilities: utilities(batch),
            weights: self.shares.clone(),
            selected: None,
        })
    }
}

/// `type = "maxmin"`: the paper's Algorithm 1 — optimise the group whose estimated utility is
/// lowest.
///
/// `utility-smoothing = α` (default 0, the paper's per-batch estimate) selects the group on an
/// exponential moving average of the per-batch utilities instead,
/// `Ū_u ← α Ū_u + (1 − α) F̂_u`, bias-corrected as in Adam (`Ū_u / (1 − α^t)`). F̂_u from one
/// batch is a noisy estimate of F_u(π): on a 32-sample language-model batch whose two groups'
/// rewards are negatively correlated, the estimates' difference is noisy enough that the argmin
/// is close to a coin toss even when one group is clearly behind on average (docs/lm-rlhf.md,
/// "MaxMin's selection"). The average trades that noise for a lag of about 1/(1 − α) batches.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MaxMinConfig {
    /// EMA factor α ∈ [0, 1) of the utilities the worst group is chosen on (0: this batch only).
    #[serde(default)]
    pub utility_smoothing: f64,
}
objective_config!(
    MaxMinConfig,
    "maxmin",
    "MaxMin-RLHF (paper, Alg. 1): PPO step on the worst group's reward"
);

#[derive(Debug)]
struct MaxMin {
    k: usize,
    alpha: f64,
    /// Uncorrected moving sums of the utilities and the number of batches seen.
    ema: Vec<f64>,
    seen: u64,
}

#[typetag::serde(name = "maxmin")]
impl ObjectiveConfig for MaxMinConfig {
    fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.utility_smoothing) {
            return Err(Error::config(
                "utility-smoothing",
                format!(
                    "expected a number in [0, 1) (0: each batch's own utilities), found {}",
                    self.utility_smoothing
                ),
            ));
        }
        Ok(())
    }
    fn label(&self) -> String {
        if self.utility_smoothing == 0.0 {
            "maxmin".into()
        } else {
            format!("maxmin(ema={})", self.utility_smoothing)
        }
    }
    fn build(&self, groups: &Groups) -> Result<Box<dyn Objective>> {
        let k = groups.names.len();
        Ok(Box::new(MaxMin {
            k,
            alpha: self.utility_smoothing,
            ema: vec![0.0; k],
            seen: 0,
        }))
    }
}

impl Objective for MaxMin {
    fn combine(&mut self, batch: &Batch<'_>) -> Result<Combined> {
        check_batch(batch, self.k)?;
        let u = utilities(batch);
        for (e, f) in self.ema.iter_mut().zip(&u) {
            *e = self.alpha * *e + (1.0 - self.alpha) * f;
        }
        self.seen += 1;
        // Bias correction divides every group by the same factor, so it never changes the
        // argmin; it only keeps the averages in utility units for anyone reading the state.
        let worst = argmin(&self.ema);
        let mut weights = vec![0.0; self.k];
        weights[worst] = 1.0;
        Ok(Combined {
            rewards: batch.group_rewards[worst].clone(),
            utilities: u,
            weights,
            selected: Some(worst),
        })
    }
    fn state(&self) -> serde_json::Value {
        let corr = 1.0 - self.alpha.powi(self.seen.min(i32::MAX as u64) as i32);
        serde_json::json!({
            "ema": self.ema,
            "seen": self.seen,
            "utilities": self.ema.iter().map(|e| if corr > 0.0 { e / corr } else { 0.0 }).collect::<Vec<_>>(),
        })
    }
    fn restore(&mut self, state: &serde_json::Value) -> Result<()> {
        if state.is_null() {
            // A checkpoint written before maxmin had state: its batches' utilities are lost;
            // start the average afresh.
            return Ok(());
        }
        let bad = || Error::Internal(format!("maxmin checkpoint state is malformed: {state}"));
        let ema: Vec<f64> = serde_json::from_value(state["ema"].clone()).map_err(|_| bad())?;
        if ema.len() != self.k {
            return Err(bad());
        }
        self.ema = ema;
        self.seen = state["seen"].as_u64().ok_or_else(bad)?;
        Ok(())
    }
}

fn argmin(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// `type = "pointwise-min"`: per-sample minimum over groups (the authors' scripts).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PointwiseMinConfig {}
objective_config!(
    PointwiseMinConfig,
    "pointwise-min",
    "per-sample min over the group rewards (authors' scripts)"
);

#[derive(Debug)]
struct PointwiseMin {
    k: usize,
}

#[typetag::serde(name = "pointwise-min")]
impl ObjectiveConfig for PointwiseMinConfig {
    fn label(&self) -> String {
        "pointwise-min".into()
    }
    fn build(&self, groups: &Groups) -> Result<Box<dyn Objective>> {
        Ok(Box::new(PointwiseMin {
            k: groups.names.len(),
        }))
    }
}

/// Per sample of `[K][N]` rewards: the group with the lowest reward and that reward (the first
/// such group on ties); none without groups.
fn sample_minima(group_rewards: &[Vec<f32>]) -> Vec<Option<(usize, f32)>> {
    let b = group_rewards.first().map_or(0, |r| r.len());
    (0..b)
        .map(|i| {
            group_rewards
                .iter()
                .enumerate()
                .map(|(u, r)| (u, r[i]))
                .min_by(|a, b| a.1.total_cmp(&b.1))
        })
        .collect()
}

impl Objective for PointwiseMin {
    fn combine(&mut self, batch: &Batch<'_>) -> Result<Combined> {
        let b = check_batch(batch, self.k)?;
        let mut counts = vec![0.0; self.k];
        let rewards = sample_minima(batch.group_rewards)
            .into_iter()
            .map(|m| {
                let (u, r) = m.expect("k ≥ 1");
                counts[u] += 1.0;
                r
            })
            .collect();
        let weights = counts.iter().map(|c| c / b.max(1) as f64).collect();
        Ok(Combined {
            rewards,
            utilities: utilities(batch),
            weights,
            selected: None,
        })
    }
    fn rescore(
        &self,
        _: &Combined,
        group_rewards: &[Vec<f32>],
        _: Option<&[f32]>,
    ) -> Result<Vec<f32>> {
        Ok(sample_minima(group_rewards)
            .into_iter()
            .map(|m| m.map_or(0.0, |(_, r)| r))
            .collect())
    }
}

/// `type = "softmin"`: weights λ ∝ exp(−F̂_u/τ), the gradient of the soft minimum.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SoftminConfig {
    /// Temperature τ (→ 0: maxmin; → ∞: equal weights).
    #[serde(default = "d_tau")]
    pub temperature: f64,
}
fn d_tau() -> f64 {
    0.1
}
objective_config!(
    SoftminConfig,
    "softmin",
    "soft minimum of group utilities, temperature τ"
);

#[derive(Debug)]
struct Softmin {
    k: usize,
    tau: f64,
}

#[typetag::serde(name = "softmin")]
impl ObjectiveConfig for SoftminConfig {
    fn validate(&self) -> Result<()> {
        check::positive_f64("temperature", self.temperature)
    }
    fn label(&self) -> String {
        format!("softmin(τ={})", self.temperature)
    }
    fn build(&self, groups: &Groups) -> Result<Box<dyn Objective>> {
        Ok(Box::new(Softmin {
            k: groups.names.len(),
            tau: self.temperature,
        }))
    }
}

/// Softmax of `x` (stable).
fn softmax(x: &[f64]) -> Vec<f64> {
    let m = x.iter().fold(f64::NEG_INFINITY, |a, b| a.max(*b));
    let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

impl Objective for Softmin {
    fn combine(&mut self, batch: &Batch<'_>) -> Result<Combined> {
        check_batch(batch, self.k)?;
        let u = utilities(batch);
        let w = softmax(&u.iter().map(|f| -f / self.tau).collect::<Vec<_>>());
        Ok(Combined {
            rewards: weighted_rows(batch.group_rewards, &w),
            utilities: u,
            weights: w,
            selected: None,
        })
    }
}

/// `type = "dro"`: exponentiated-gradient group weights, λ_u ← λ_u·exp(−η F̂_u), normalised.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DroConfig {
    /// Step size η of the weight update.
    #[serde(default = "d_eta")]
    pub step_size: f64,
}
fn d_eta() -> f64 {
    1.0
}
objective_config!(
    DroConfig,
    "dro",
    "group DRO: exponentiated-gradient weights on the worst groups"
);

#[derive(Debug)]
struct Dro {
    eta: f64,
    log_w: Vec<f64>,
}

#[typetag::serde(name = "dro")]
impl ObjectiveConfig for DroConfig {
    fn validate(&self) -> Result<()> {
        check::positive_f64("step-size", self.step_size)
    }
    fn label(&self) -> String {
        format!("dro(η={})", self.step_size)
    }
    fn build(&self, groups: &Groups) -> Result<Box<dyn Objective>> {
        let k = groups.names.len();
        Ok(Box::new(Dro {
            eta: self.step_size,
            log_w: vec![-(k as f64).ln(); k],
        }))
    }
}

impl Objective for Dro {
    fn combine(&mut self, batch: &Batch<'_>) -> Result<Combined> {
        check_batch(batch, self.log_w.len())?;
        let u = utilities(batch);
        for (lw, f) in self.log_w.iter_mut().zip(&u) {
            *lw -= self.eta * f;
        }
        let w = softmax(&self.log_w);
        // Keep the log-weights bounded: only their differences matter.
        self.log_w = w.iter().map(|x| x.max(1e-300).ln()).collect();
        Ok(Combined {
            rewards: weighted_rows(batch.group_rewards, &w),
            utilities: u,
            weights: w,
            selected: None,
        })
    }
    fn state(&self) -> serde_json::Value {
        serde_json::json!({ "log_w": self.log_w })
    }
    fn restore(&mut self, state: &serde_json::Value) -> Result<()> {
        let lw: Vec<f64> = serde_json::from_value(state["log_w"].clone())
            .map_err(|e| Error::Internal(format!("bad dro state: {e}")))?;
        if lw.len() != self.log_w.len() {
            return Err(Error::Internal(
                "dro state has the wrong number of groups".into(),
            ));
        }
        self.log_w = lw;
        Ok(())
    }
}

/// How learned rewards are put on a common footing before they are combined (`calibrate = …`):
/// `true` / `"z-score"` (default) subtracts each model's mean on reference-policy samples and
/// divides by its standard deviation there; `"center"` only subtracts the mean, keeping each
/// model in the Bradley–Terry units it was trained in (the users' own utility scale when the
/// groups share a preference temperature); `false` / `"none"` uses the raw rewards.
/// docs/algorithms.md, "Calibration".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Calibrate {
    /// Raw rewards.
    None,
    /// `(r − mean)/std` on reference samples.
    #[default]
    ZScore,
    /// `r − mean` on reference samples.
    Center,
}

impl Calibrate {
    /// Whether any calibration is fitted.
    pub fn is_on(self) -> bool {
        self != Calibrate::None
    }
    /// Fit this mode's calibration on `[K][N]` rewards of reference-policy samples.
    pub fn fit(self, rewards: &[Vec<f32>]) -> Calibration {
        match self {
            Calibrate::None => Calibration::identity(rewards.len()),
            Calibrate::ZScore => Calibration::fit(rewards),
            Calibrate::Center => {
                let z = Calibration::fit(rewards);
                Calibration {
                    std: vec![1.0; z.mean.len()],
                    ..z
                }
            }
        }
    }
}

impl Serialize for Calibrate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            Calibrate::None => "none",
            Calibrate::ZScore => "z-score",
            Calibrate::Center => "center",
        })
    }
}

impl<'de> Deserialize<'de> for Calibrate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Calibrate;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false, \"z-score\", \"center\" or \"none\"")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> std::result::Result<Calibrate, E> {
                Ok(if v {
                    Calibrate::ZScore
                } else {
                    Calibrate::None
                })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Calibrate, E> {
                match v {
                    "z-score" => Ok(Calibrate::ZScore),
                    "center" => Ok(Calibrate::Center),
                    "none" => Ok(Calibrate::None),
                    other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Per-group affine calibration `(r − mean)/std`, fitted on reference-policy samples, so that
/// rewards of separately trained models are comparable before a min is taken.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Calibration {
    /// Per-group mean on the reference samples.
    pub mean: Vec<f64>,
    /// Per-group standard deviation on the reference samples (floored at 1e-8).
    pub std: Vec<f64>,
}

impl Calibration {
    /// Fit on `[K][N]` rewards of reference-policy samples.
    pub fn fit(rewards: &[Vec<f32>]) -> Self {
        let (mut mean, mut std) = (Vec::new(), Vec::new());
        for r in rewards {
            let n = r.len().max(1) as f64;
            let m = r.iter().map(|x| *x as f64).sum::<f64>() / n;
            let v = r.iter().map(|x| (*x as f64 - m).powi(2)).sum::<f64>() / n;
            mean.push(m);
            std.push(v.sqrt().max(1e-8));
        }
        Self { mean, std }
    }

    /// The identity (no calibration).
    pub fn identity(k: usize) -> Self {
        Self {
            mean: vec![0.0; k],
            std: vec![1.0; k],
        }
    }

    /// Apply in place to `[K][B]` rewards.
    pub fn apply(&self, rewards: &mut [Vec<f32>]) {
        for (u, r) in rewards.iter_mut().enumerate() {
            for x in r.iter_mut() {
                *x = ((*x as f64 - self.mean[u]) / self.std[u]) as f32;
            }
        }
    }
}

/// `[kl]`: the KL penalty to the reference policy, fixed or adaptive (TRL's `AdaptiveKLController`,
/// Ziegler et al. 2019: β ← β·(1 + clip(KL/target − 1, ±0.2)·n/horizon)).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct KlConfig {
    /// Initial (or fixed) coefficient β.
    #[serde(default = "d_beta")]
    pub init: f64,
    /// Target KL for the adaptive controller; none keeps β fixed.
    #[serde(default)]
    pub target: Option<f64>,
    /// Horizon (in samples) of the adaptive controller.
    #[serde(default = "d_horizon")]
    pub horizon: f64,
}
fn d_beta() -> f64 {
    0.05
}
fn d_horizon() -> f64 {
    10_000.0
}

impl Default for KlConfig {
    fn default() -> Self {
        Self {
            init: d_beta(),
            target: None,
            horizon: d_horizon(),
        }
    }
}

impl KlConfig {
    /// Check values; keys relative to `[kl]`.
    pub fn validate(&self) -> Result<()> {
        check::non_negative_f64("init", self.init)?;
        check::positive_f64("horizon", self.horizon)?;
        if let Some(t) = self.target {
            check::positive_f64("target", t)?;
        }
        Ok(())
    }
}

/// The controller's running state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KlController {
    /// Current β.
    pub value: f64,
    target: Option<f64>,
    horizon: f64,
}

impl KlController {
    /// Start from a config.
    pub fn new(cfg: &KlConfig) -> Self {
        Self {
            value: cfg.init,
            target: cfg.target,
            horizon: cfg.horizon,
        }
    }

    /// Update after a batch of `n` samples with mean KL `kl`.
    pub fn update(&mut self, kl: f64, n: usize) {
        if let Some(t) = self.target {
            let err = (kl / t - 1.0).clamp(-0.2, 0.2);
            self.value *= 1.0 + err * n as f64 / self.horizon;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups() -> Groups {
        Groups {
            names: vec!["a".into(), "b".into()],
            shares: vec![0.8, 0.2],
        }
    }

    fn batch<'a>(r: &'a [Vec<f32>], single: Option<&'a [f32]>) -> Batch<'a> {
        Batch {
            group_rewards: r,
            single_rewards: single,
            mean_kl: 0.5,
            beta: 0.1,
        }
    }

    fn build(t: &str) -> Box<dyn Objective> {
        let cfg: Box<dyn ObjectiveConfig> = toml::from_str(&format!("type = \"{t}\"")).unwrap();
        cfg.validate().unwrap();
        cfg.build(&groups()).unwrap()
    }

    #[test]
    fn rescore_repeats_the_batch_decision_on_other_samples() {
        let r = vec![vec![2.0f32, 2.0, 0.3], vec![-1.0, 0.5, 0.1]];
        let single = [1.0f32, 1.5, -0.2];
        // Other samples (say, prefixes): group a low, group b high.
        let other = vec![vec![-3.0f32, 0.25], vec![4.0, -0.5]];
        let other_single = [7.0f32, -7.0];
        let cases: [(&str, [f32; 2]); 6] = [
            ("single", [7.0, -7.0]),
            (
                "utilitarian",
                [0.8 * -3.0 + 0.2 * 4.0, 0.8 * 0.25 + 0.2 * -0.5],
            ),
            // Group b has the lower mean on the batch, so maxmin scores everything with b.
            ("maxmin", [4.0, -0.5]),
            ("pointwise-min", [-3.0, -0.5]),
            ("softmin", [f32::NAN, f32::NAN]),
            ("dro", [f32::NAN, f32::NAN]),
        ];
        for (t, want) in cases {
            let mut o = build(t);
            let c = o.combine(&batch(&r, Some(&single))).unwrap();
            let own = o.rescore(&c, &r, Some(&single)).unwrap();
            assert_eq!(own, c.rewards, "{t}: rescoring the batch itself");
            let got = o.rescore(&c, &other, Some(&other_single)).unwrap();
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                let w = if w.is_nan() {
                    // Weighted objectives: Σ_u λ_u r_u with this batch's λ.
                    (c.weights[0] * other[0][i] as f64 + c.weights[1] * other[1][i] as f64) as f32
                } else {
                    w
                };
                assert!((g - w).abs() < 1e-6, "{t}: sample {i}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn each_objective_combines_as_documented() {
        // Group a: high mean; group b: low mean but a high second sample.
        let r = vec![vec![2.0f32, 2.0], vec![-1.0, 0.5]];
        let single = [1.0f32, 1.5];
        let out = build("single").combine(&batch(&r, Some(&single))).unwrap();
        assert_eq!(out.rewards, single.to_vec());
        assert!(build("single").combine(&batch(&r, None)).is_err());
        let out = build("utilitarian").combine(&batch(&r, None)).unwrap();
        assert!((out.rewards[0] - (0.8 * 2.0 - 0.2)).abs() < 1e-6);
        let out = build("maxmin").combine(&batch(&r, None)).unwrap();
        assert_eq!(out.selected, Some(1));
        assert_eq!(out.rewards, r[1]);
        assert!((out.utilities[1] - (-0.25 - 0.05)).abs() < 1e-9);
        let out = build("pointwise-min").combine(&batch(&r, None)).unwrap();
        assert_eq!(out.rewards, vec![-1.0, 0.5]);
        let r2 = vec![vec![0.0f32, 0.0], vec![1.0, -3.0]];
        let out = build("pointwise-min").combine(&batch(&r2, None)).unwrap();
        assert_eq!(out.rewards, vec![0.0, -3.0]);
        assert_eq!(out.weights, vec![0.5, 0.5]);
        let out = build("softmin").combine(&batch(&r, None)).unwrap();
        assert!(out.weights[1] > 0.99, "{:?}", out.weights);
    }

    #[test]
    fn smoothed_maxmin_follows_the_average_not_the_batch() {
        // Group b is behind by 0.2 on average, but every third batch it is ahead by 0.4: the
        // per-batch argmin follows the noise, the smoothed one stays on b.
        let batches: Vec<Vec<Vec<f32>>> = (0..30)
            .map(|t| {
                let b = if t % 3 == 2 { 0.4 } else { -0.5 };
                vec![vec![0.0f32; 4], vec![b; 4]]
            })
            .collect();
        let picks = |toml_text: &str| {
            let cfg: Box<dyn ObjectiveConfig> = toml::from_str(toml_text).unwrap();
            cfg.validate().unwrap();
            let mut o = cfg.build(&groups()).unwrap();
            batches
                .iter()
                .map(|r| o.combine(&batch(r, None)).unwrap().selected.unwrap())
                .collect::<Vec<_>>()
        };
        let plain = picks("type = \"maxmin\"");
        assert_eq!(plain.iter().filter(|&&g| g == 0).count(), 10);
        let smooth = picks("type = \"maxmin\"\nutility-smoothing = 0.8");
        assert!(smooth.iter().all(|&g| g == 1), "{smooth:?}");

        // The average survives a checkpoint: a restored objective picks as the original does.
        let cfg: Box<dyn ObjectiveConfig> =
            toml::from_str("type = \"maxmin\"\nutility-smoothing = 0.9").unwrap();
        assert_eq!(cfg.label(), "maxmin(ema=0.9)");
        let mut a = cfg.build(&groups()).unwrap();
        let behind = vec![vec![0.0f32; 4], vec![-1.0; 4]];
        for _ in 0..5 {
            a.combine(&batch(&behind, None)).unwrap();
        }
        let st = a.state();
        assert!(
            (st["utilities"][1].as_f64().unwrap() - (-1.05)).abs() < 1e-9,
            "{st}"
        );
        let mut b = cfg.build(&groups()).unwrap();
        b.restore(&st).unwrap();
        let ahead = vec![vec![0.0f32; 4], vec![0.5; 4]];
        let (x, y) = (
            a.combine(&batch(&ahead, None)).unwrap(),
            b.combine(&batch(&ahead, None)).unwrap(),
        );
        assert_eq!(x.selected, Some(1));
        assert_eq!(x, y);
        assert!(b
            .restore(&serde_json::json!({"ema": [0.0], "seen": 1}))
            .is_err());

        for bad in ["1.0", "-0.1", "nan"] {
            let cfg: Box<dyn ObjectiveConfig> =
                toml::from_str(&format!("type = \"maxmin\"\nutility-smoothing = {bad}")).unwrap();
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains("utility-smoothing"), "{e}");
        }
    }

    #[test]
    fn dro_shifts_weight_to_the_worse_group_and_checkpoints() {
        let r = vec![vec![1.0f32; 4], vec![0.0; 4]];
        let mut d = build("dro");
        let w1 = d.combine(&batch(&r, None)).unwrap().weights;
        let w2 = d.combine(&batch(&r, None)).unwrap().weights;
        assert!(w1[1] > 0.5 && w2[1] > w1[1], "{w1:?} {w2:?}");
        let mut e = build("dro");
        e.restore(&d.state()).unwrap();
        assert_eq!(
            e.combine(&batch(&r, None)).unwrap(),
            d.combine(&batch(&r, None)).unwrap()
        );
    }

    #[test]
    fn calibration_standardises_and_kl_controller_tracks_target() {
        let mut r = vec![vec![1.0f32, 3.0], vec![10.0, 30.0]];
        let c = Calibration::fit(&r);
        c.apply(&mut r);
        assert_eq!(r[0], r[1]);
        assert_eq!(r[0], vec![-1.0, 1.0]);
        let mut k = KlController::new(&KlConfig {
            init: 0.2,
            target: Some(6.0),
            horizon: 10_000.0,
        });
        k.update(12.0, 1000);
        assert!((k.value - 0.2 * 1.02).abs() < 1e-12);
        k.update(0.0, 1000);
        assert!(k.value < 0.2 * 1.02);
        let mut fixed = KlController::new(&KlConfig::default());
        fixed.update(100.0, 1000);
        assert_eq!(fixed.value, 0.05);
    }

    /// `calibrate` reads `true`/`false` (the old form) and the three names; `center` keeps the
    /// models' scales, `z-score` equalises them, `none` changes nothing; anything else is an
    /// error naming the accepted values.
    #[test]
    fn calibrate_modes_parse_and_fit() {
        #[derive(Deserialize)]
        struct T {
            calibrate: Calibrate,
        }
        let parse = |v: &str| toml::from_str::<T>(&format!("calibrate = {v}")).map(|t| t.calibrate);
        assert_eq!(parse("true").unwrap(), Calibrate::ZScore);
        assert_eq!(parse("false").unwrap(), Calibrate::None);
        assert_eq!(parse("\"z-score\"").unwrap(), Calibrate::ZScore);
        assert_eq!(parse("\"center\"").unwrap(), Calibrate::Center);
        assert_eq!(parse("\"none\"").unwrap(), Calibrate::None);
        let e = parse("\"zscore\"").unwrap_err().to_string();
        assert!(e.contains("center") && e.contains("zscore"), "{e}");
        let raw = vec![vec![1.0f32, 3.0], vec![10.0, 30.0]];
        let apply = |m: Calibrate| {
            let mut r = raw.clone();
            m.fit(&raw).apply(&mut r);
            r
        };
        assert_eq!(
            apply(Calibrate::ZScore),
            vec![vec![-1.0, 1.0], vec![-1.0, 1.0]]
        );
        assert_eq!(
            apply(Calibrate::Center),
            vec![vec![-1.0, 1.0], vec![-10.0, 10.0]]
        );
        assert_eq!(apply(Calibrate::None), raw);
        assert!(!Calibrate::None.is_on() && Calibrate::Center.is_on());
        assert_eq!(
            serde_json::to_string(&Calibrate::Center).unwrap(),
            "\"center\""
        );
    }
}
