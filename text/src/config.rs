//! The language-model experiment file (`kind = "lm-rlhf"`): which model, which prompts, which
//! simulated (or recorded) users, which reward models, which objectives — docs/algorithms.md's pipeline for
//! language models. See `configs/gpt2-imdb__maxmin.toml` for a documented example.

use crate::prompts::PromptsConfig;
use crate::psoups::{PsoupsFile, PsoupsSplit};
use crate::rewards::TextRewardConfig;
use maxmin_core::config::Validate;
use maxmin_core::error::check;
use maxmin_core::objective::ObjectiveConfig;
use maxmin_core::policy::RewardModelConfig;
use maxmin_core::prefs::population::{check_groups, normalised};
use maxmin_core::prefs::EmConfig;
use maxmin_core::{Error, Result};
use maxmin_lm::ppo::LmPpoConfig;
use maxmin_lm::LmConfig;
use serde::{Deserialize, Serialize};

/// The value of `kind` that marks a language-model experiment file.
pub const KIND: &str = "lm-rlhf";

/// A whole language-model experiment file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LmExperiment {
    /// Always `"lm-rlhf"` (tells `maxmin run` which pipeline reads the file).
    pub kind: String,
    /// Experiment name; runs go to `runs/<name>__<timestamp>/`.
    pub name: String,
    /// Root seed: every random stream derives from it.
    #[serde(default = "d_seed")]
    pub seed: u64,
    /// `[model]`: the policy / reference / reward backbone (`model` = directory or hub id,
    /// `dtype`, `device`, `[model.lora]`).
    pub model: LmConfig,
    /// `[prompts]`: the text environment's contexts.
    pub prompts: PromptsConfig,
    /// `[generation]`: how completions are sampled (episodes of the text environment).
    #[serde(default)]
    pub generation: GenerationConfig,
    /// `[population]`: simulated groups of users with ground-truth rewards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub population: Option<TextPopulation>,
    /// `[preferences]`: simulated comparisons, or recorded P-Soups files.
    #[serde(default)]
    pub preferences: TextPreferences,
    /// `[reward-model]`: the head trained on the frozen backbone's features (`mlp-reward` or
    /// `linear-reward`).
    #[serde(default = "d_reward_model")]
    pub reward_model: Box<dyn RewardModelConfig>,
    /// `[features]`: what the reward heads see of each completion token.
    #[serde(default)]
    pub features: FeatureConfig,
    /// `[em]`: the EM mixture of reward models.
    #[serde(default)]
    pub em: EmConfig,
    /// `[ppo]`: token-level PPO (TRL semantics).
    #[serde(default)]
    pub ppo: LmPpoConfig,
    /// `[compare]`: objectives × seeds. Without it the run stops after the reward models (a
    /// reward-model-only experiment such as the ratio sweep).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<LmCompare>,
}

fn d_seed() -> u64 {
    1
}

fn d_reward_model() -> Box<dyn RewardModelConfig> {
    use maxmin_core::prefs::reward_model::{MlpRewardConfig, TrainOptions};
    Box::new(MlpRewardConfig {
        hidden: vec![64],
        squares: false,
        train: TrainOptions {
            learning_rate: 3e-3,
            epochs: 40,
            batch_size: 64,
        },
    })
}

/// `[features]`: what the reward heads see of a completion — one row per token whose per-token
/// rewards are summed (`pooling = "sum"`), or one row per completion, the mean of its token rows
/// (`pooling = "mean"`); `crate::features` explains the channels. At least one channel must be
/// on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FeatureConfig {
    /// The token's final hidden state in the context of the prompt and earlier tokens.
    #[serde(default = "yes")]
    pub contextual: bool,
    /// Append each token's context-free hidden state to its contextual one (a word-identity
    /// channel; costs one forward pass per vocabulary entry at start-up).
    #[serde(default = "yes")]
    pub token_identity: bool,
    /// Append a one-hot of the token id at vocabulary width: summed over the completion, the
    /// bag-of-tokens counts, so a linear head is a weight per vocabulary entry. Needs
    /// `[reward-model] type = "linear-reward"`; off by default because its width is the
    /// vocabulary's (4,096 for the embedded GPT-2, 32,000 for Llama-2).
    #[serde(default)]
    pub token_counts: bool,
    /// How token rows become a completion's reward: `sum` (default) or `mean`.
    #[serde(default)]
    pub pooling: Pooling,
    /// With `mean` pooling: divide a completion's summed content rows by (tokens +
    /// `prior-tokens`) instead of by its token count, so a completion of few tokens scores near
    /// zero content evidence rather than its words' full weight — the form of a sentiment ground
    /// truth shrunk by `prior-ngrams` (docs/lm-rlhf.md, "Reward features"). Default 0: the mean.
    #[serde(default)]
    pub prior_tokens: f32,
    /// Append the completion's length (tokens / `[generation] max-new-tokens`) as one column:
    /// what lets a `mean`-pooled head express a length preference. With `sum` pooling each token
    /// row carries 1 / max-new-tokens, so the sum is the same number.
    #[serde(default)]
    pub length: bool,
}

/// `[features] pooling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pooling {
    /// A completion's reward is the sum of per-token rewards: a word's weight counts once per
    /// occurrence, so longer completions carry more evidence (and more reward, where the weights
    /// are positive).
    #[default]
    Sum,
    /// A completion is one row, the mean of its token rows: a reward of the text's average
    /// content, independent of its length unless `length = true` adds that column.
    Mean,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        Self {
            contextual: true,
            token_identity: true,
            token_counts: false,
            pooling: Pooling::Sum,
            prior_tokens: 0.0,
            length: false,
        }
    }
}

impl FeatureConfig {
    /// At least one channel; keys relative to `[features]`.
    pub fn validate(&self) -> Result<()> {
        if !(self.contextual || self.token_identity || self.token_counts || self.length) {
            return Err(Error::config(
                "contextual",
                "every feature channel is off: turn on at least one of contextual, token-identity, token-counts, length",
            ));
        }
        if !(self.prior_tokens.is_finite() && self.prior_tokens >= 0.0) {
            return Err(Error::config(
                "prior-tokens",
                format!(
                    "expected a finite number of tokens ≥ 0, got {}",
                    self.prior_tokens
                ),
            ));
        }
        if self.prior_tokens > 0.0 && self.pooling != Pooling::Mean {
            return Err(Error::config(
                "prior-tokens",
                "only means something with pooling = \"mean\" (a sum of per-token rewards has no denominator to shrink)",
            ));
        }
        Ok(())
    }
}

/// `[generation]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct GenerationConfig {
    /// Token budget of a completion.
    #[serde(default = "d_max_new")]
    pub max_new_tokens: usize,
    /// With `stop-at-eos = false`: each completion's length is drawn uniformly from
    /// `[min-new-tokens, max-new-tokens]` (TRL's `LengthSampler`, docs/algorithms.md's Tulu setting).
    #[serde(default)]
    pub min_new_tokens: Option<usize>,
    /// Stop a completion at the end-of-sequence token.
    #[serde(default = "yes")]
    pub stop_at_eos: bool,
    /// Softmax temperature.
    #[serde(default = "one")]
    pub temperature: f64,
    /// Top-k (0 = off, TRL's setting).
    #[serde(default)]
    pub top_k: usize,
    /// Top-p (1 = off, TRL's setting).
    #[serde(default = "one")]
    pub top_p: f64,
}

fn d_max_new() -> usize {
    32
}
fn yes() -> bool {
    true
}
fn one() -> f64 {
    1.0
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: d_max_new(),
            min_new_tokens: None,
            stop_at_eos: true,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
        }
    }
}

impl GenerationConfig {
    fn validate(&self) -> Result<()> {
        check::positive_usize("max-new-tokens", self.max_new_tokens)?;
        if let Some(m) = self.min_new_tokens {
            if m == 0 || m > self.max_new_tokens {
                return Err(Error::config(
                    "min-new-tokens",
                    format!(
                        "expected 1 ≤ min-new-tokens ≤ max-new-tokens ({}), found {m}",
                        self.max_new_tokens
                    ),
                ));
            }
            if self.stop_at_eos {
                return Err(Error::config(
                    "min-new-tokens",
                    "sampled response lengths only apply with stop-at-eos = false",
                ));
            }
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(Error::config("temperature", "expected a number > 0"));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::config("top-p", "expected a number in (0, 1]"));
        }
        Ok(())
    }
}

/// One simulated group: `[[population.groups]]`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TextGroup {
    /// Name used in data files, metrics and reports.
    pub name: String,
    /// Share of users (normalised over the groups).
    pub share: f64,
    /// Ground-truth reward (`type = "sentiment"` / `"conciseness"`).
    pub reward: Box<dyn TextRewardConfig>,
}

/// `[population]`: simulated users.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TextPopulation {
    /// The groups.
    pub groups: Vec<TextGroup>,
    /// Users whose comparisons train the reward models.
    #[serde(default = "d_users")]
    pub users: usize,
    /// Further users (same shares) whose comparisons only measure held-out accuracy.
    #[serde(default = "d_held_users")]
    pub held_out_users: usize,
    /// Comparisons each user labels.
    #[serde(default = "d_per_user")]
    pub comparisons_per_user: usize,
    /// How the held-out users are split over the groups: `"population"` (default) at the
    /// groups' shares, or `"equal"`: the same number in every group, drawn and labelled from
    /// random streams of their own. With `"equal"`, every ratio of `[em] ratio-sweep` is
    /// measured on the same held-out users and comparisons. The minority's accuracy then rests
    /// on as many comparisons as the majority's, instead of on a handful of users at 10:1.
    #[serde(default)]
    pub held_out_shares: HeldOutShares,
}

/// `[population] held-out-shares`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeldOutShares {
    /// The groups' shares, like the training users.
    #[default]
    Population,
    /// The same number of users per group, independent of the groups' shares.
    Equal,
}

fn d_users() -> usize {
    40
}
fn d_held_users() -> usize {
    20
}
fn d_per_user() -> usize {
    40
}

impl TextPopulation {
    /// Normalised shares.
    pub fn shares(&self) -> Vec<f64> {
        normalised(self.groups.iter().map(|g| g.share))
    }

    fn validate(&self) -> Result<()> {
        check_groups(self.groups.iter().map(|g| (g.name.as_str(), g.share)))?;
        for (i, g) in self.groups.iter().enumerate() {
            g.reward
                .validate()
                .map_err(|e| e.under(&format!("groups.{i}.reward")))?;
        }
        check::positive_usize("users", self.users)?;
        check::positive_usize("comparisons-per-user", self.comparisons_per_user)?;
        if self.held_out_shares == HeldOutShares::Equal && self.held_out_users < self.groups.len() {
            return Err(Error::config(
                "held-out-users",
                format!(
                    "held-out-shares = \"equal\" needs at least one held-out user per group \
                     ({} groups), found {}",
                    self.groups.len(),
                    self.held_out_users
                ),
            ));
        }
        Ok(())
    }
}

/// `[preferences]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TextPreferences {
    /// Prompts whose two reference completions form the pool users compare (simulation).
    #[serde(default = "d_pool")]
    pub pool: usize,
    /// Bradley–Terry temperature of simulated users: P(a ≻ b) = σ((r(a) − r(b)) / temperature).
    #[serde(default = "d_temp")]
    pub temperature: f64,
    /// Probability a simulated label is flipped.
    #[serde(default)]
    pub label_noise: f64,
    /// Recorded P-Soups files instead of simulation (`[[preferences.files]] group, path`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<PsoupsFile>,
    /// How P-Soups files are split into users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<PsoupsSplit>,
}

fn d_pool() -> usize {
    400
}
fn d_temp() -> f64 {
    0.1
}

impl Default for TextPreferences {
    fn default() -> Self {
        Self {
            pool: d_pool(),
            temperature: d_temp(),
            label_noise: 0.0,
            files: vec![],
            split: None,
        }
    }
}

/// `[compare]`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LmCompare {
    /// Objectives (`[[compare.objectives]] type = "maxmin"`, …).
    pub objectives: Vec<Box<dyn ObjectiveConfig>>,
    /// Policy seeds; every objective is trained once per seed.
    #[serde(default = "d_seeds")]
    pub seeds: Vec<u64>,
    /// PPO steps (one batch of `ppo.batch-size` prompts each) per policy.
    #[serde(default = "d_steps")]
    pub steps: usize,
    /// Calibrate each learned reward on reference completions before combining: `true` /
    /// `"z-score"` (default), `"center"` (subtract the mean only, keeping the Bradley–Terry
    /// units) or `false` / `"none"` (docs/algorithms.md, "Calibration").
    #[serde(default)]
    pub calibrate: maxmin_core::objective::Calibrate,
    /// How the objective's score reaches the response tokens: `none` (the paper, TRL: the whole
    /// score at the last token) or `prefix` (token t gets Φ(y≤t) − Φ(y<t), Φ being the
    /// objective's score of the prefix under this batch's group choice; the sum is the same
    /// score). docs/lm-rlhf.md, "Token rewards".
    #[serde(default)]
    pub reward_shaping: Shaping,
    /// Checkpoint every this many PPO steps.
    #[serde(default = "d_ck")]
    pub checkpoint_every: usize,
    /// Sample generations per policy shown in the report.
    #[serde(default = "d_samples")]
    pub samples: usize,
    /// Policies trained at the same time, each on its own thread; none = one per available CPU
    /// core. One LM PPO step keeps about one core busy at these sizes, so this is what uses
    /// the others. Results do not depend on it: every policy has its own seed-derived streams.
    #[serde(default)]
    pub jobs: Option<usize>,
}

/// `[compare] reward-shaping`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shaping {
    /// The sequence score at the response's last token.
    #[default]
    None,
    /// Potential-based shaping with the prefix scores as the potential.
    Prefix,
}

impl LmCompare {
    /// Worker threads for `n` policies: `jobs`, or the available cores, at most `n`.
    pub fn workers(&self, n: usize) -> usize {
        let auto = || std::thread::available_parallelism().map_or(1, |c| c.get());
        self.jobs.unwrap_or_else(auto).clamp(1, n.max(1))
    }
}

fn d_seeds() -> Vec<u64> {
    vec![1, 2, 3]
}
fn d_steps() -> usize {
    50
}
fn d_ck() -> usize {
    10
}
fn d_samples() -> usize {
    4
}

impl Validate for LmExperiment {
    fn validate(&self) -> Result<()> {
        if self.kind != KIND {
            return Err(Error::config(
                "kind",
                format!("expected \"{KIND}\", found {:?}", self.kind),
            ));
        }
        maxmin_core::run::check_run_name(&self.name)?;
        self.model.validate().map_err(|e| e.under("model"))?;
        if self.model.lora.is_none() && self.compare.is_some() {
            return Err(Error::config(
                "model.lora",
                "the policy trains LoRA adapters on the frozen model: add a [model.lora] table (e.g. rank = 8)",
            ));
        }
        self.prompts.validate().map_err(|e| e.under("prompts"))?;
        self.generation
            .validate()
            .map_err(|e| e.under("generation"))?;
        let p = &self.preferences;
        if !(p.temperature.is_finite() && p.temperature > 0.0) {
            return Err(Error::config(
                "preferences.temperature",
                "expected a number > 0",
            ));
        }
        if !(0.0..0.5).contains(&p.label_noise) {
            return Err(Error::config(
                "preferences.label-noise",
                "expected a probability in [0, 0.5)",
            ));
        }
        match (&self.population, p.files.is_empty()) {
            (Some(pop), true) => {
                pop.validate().map_err(|e| e.under("population"))?;
                check::positive_usize("preferences.pool", p.pool)?;
                if p.pool < 2 {
                    return Err(Error::config("preferences.pool", "expected ≥ 2 prompts"));
                }
            }
            (None, false) => {}
            (Some(_), false) => {
                return Err(Error::config(
                    "preferences.files",
                    "recorded preference files and a simulated [population] exclude each other",
                ))
            }
            (None, true) => {
                return Err(Error::config(
                    "population",
                    "expected a [population] to simulate users, or [[preferences.files]] with recorded comparisons",
                ))
            }
        }
        self.reward_model
            .validate()
            .map_err(|e| e.under("reward-model"))?;
        let spec =
            maxmin_core::prefs::reward_model::RewardSpec::from_config(self.reward_model.as_ref())?;
        self.features.validate().map_err(|e| e.under("features"))?;
        if self.features.token_counts && !spec.hidden.is_empty() {
            return Err(Error::config(
                "features.token-counts",
                "token counts (a one-hot at vocabulary width per token) need a linear head: set [reward-model] type = \"linear-reward\", or token-counts = false",
            ));
        }
        self.em.validate().map_err(|e| e.under("em"))?;
        self.validate_sweep()?;
        self.ppo.validate().map_err(|e| e.under("ppo"))?;
        let Some(c) = &self.compare else {
            return self.check_memory();
        };
        if c.objectives.is_empty() {
            return Err(Error::config(
                "compare.objectives",
                "expected at least one objective",
            ));
        }
        for (i, o) in c.objectives.iter().enumerate() {
            o.validate()
                .map_err(|e| e.under(&format!("compare.objectives.{i}")))?;
        }
        if c.seeds.is_empty() {
            return Err(Error::config("compare.seeds", "expected at least one seed"));
        }
        check::positive_usize("compare.steps", c.steps)?;
        check::positive_usize("compare.checkpoint-every", c.checkpoint_every)?;
        if let Some(j) = c.jobs {
            check::positive_usize("compare.jobs", j)?;
        }
        self.check_memory()
    }
}

impl LmExperiment {
    /// Refuse, before anything is allocated, a run whose frozen model or PPO buffers cannot fit
    /// in this machine's memory ([`maxmin_core::budget`]): the weights in the compute dtype, plus
    /// per policy trained at once a lower bound of one mini-batch's buffers — logits and their
    /// gradient over the response tokens, `[mini-batch, max-new-tokens + 1, vocabulary]` in f32
    /// twice — and the reward features of a PPO batch when token counts are kept per token.
    /// Skipped when the model's `config.json` cannot be read (loading reports that).
    fn check_memory(&self) -> Result<()> {
        use maxmin_core::budget;
        let Ok(dir) = self.model.model_dir() else {
            return Ok(());
        };
        let Ok(dtype) = self.model.compute_dtype() else {
            return Ok(());
        };
        let (Ok(est), Ok((vocab, _))) = (
            maxmin_lm::auto::memory_estimate(&dir, dtype, dtype),
            maxmin_lm::auto::shape(&dir),
        ) else {
            return Ok(());
        };
        let weights = est.compute_bytes as u128 + est.largest_tensor_bytes as u128;
        let what = format!(
            "{} ({:.3} B parameters in {dtype:?})",
            dir.display(),
            est.params as f64 / 1e9
        );
        budget::check("model.model", &what, weights)?;
        let Some(compare) = &self.compare else {
            return Ok(());
        };
        let rows = self.generation.max_new_tokens as u128 + 1;
        let v = vocab as u128;
        let logits = 8 * self.ppo.mini_batch_size as u128 * rows * v;
        let per_token = self.features.token_counts && self.features.pooling == Pooling::Sum;
        let features = if per_token {
            4 * self.ppo.batch_size as u128 * rows * v
        } else {
            0
        };
        let jobs = compare.workers(compare.objectives.len() * compare.seeds.len());
        let total = (jobs as u128)
            .saturating_mul(logits.saturating_add(features))
            .saturating_add(weights);
        let what = format!(
            "training {jobs} policies at once, each with mini-batches of {} × {rows} response \
             tokens × {vocab} logits (and PPO batches of {} for the reward features), besides the weights,",
            self.ppo.mini_batch_size, self.ppo.batch_size
        );
        budget::check("ppo.mini-batch-size", &what, total)
    }

    /// `[em] ratio-sweep` reruns the reward-model stage with changed shares of two simulated
    /// groups: it needs a `[population]` of exactly two groups.
    fn validate_sweep(&self) -> Result<()> {
        if self.em.ratio_sweep.is_empty() {
            return Ok(());
        }
        match &self.population {
            Some(p) if p.groups.len() == 2 && p.held_out_users > 0 => Ok(()),
            Some(p) if p.groups.len() == 2 => Err(Error::config(
                "population.held-out-users",
                "the ratio sweep reports held-out accuracy: expected held-out users > 0",
            )),
            _ => Err(Error::config(
                "em.ratio-sweep",
                "a ratio sweep needs a simulated [population] with exactly two groups (majority first, minority second)",
            )),
        }
    }

    /// Group names: the population's, or the P-Soups files' groups in first-seen order.
    pub fn group_names(&self) -> Vec<String> {
        match &self.population {
            Some(p) => p.groups.iter().map(|g| g.name.clone()).collect(),
            None => {
                let mut v: Vec<String> = Vec::new();
                for f in &self.preferences.files {
                    if !v.contains(&f.group) {
                        v.push(f.group.clone());
                    }
                }
                v
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const BASE: &str = "kind = \"lm-rlhf\"\nname = \"t\"\n[model]\nmodel = \"m\"\n[model.lora]\nrank = 4\n\
        [prompts]\npath = \"p.txt\"\n[population]\n[[population.groups]]\nname = \"a\"\nshare = 1\n\
        reward = { type = \"conciseness\" }\n[compare]\n[[compare.objectives]]\ntype = \"maxmin\"\n";

    fn load(text: &str, sets: &[&str]) -> Result<LmExperiment> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Ok(maxmin_core::config::load_str::<LmExperiment>(text, Path::new("x.toml"), &sets)?.value)
    }

    #[test]
    fn defaults_load_and_detection_works() {
        let e = load(BASE, &[]).unwrap();
        assert_eq!(e.generation.max_new_tokens, 32);
        assert!(e.features.token_identity);
        let at = Path::new("x.toml");
        let kind = |t: &str| maxmin_core::pipeline::kind_of(t, at).map(|k| k.name);
        assert_eq!(kind(BASE).unwrap(), KIND);
        assert_eq!(
            kind("name = \"x\"\n[env]\ntype = \"cartpole\"\n").unwrap(),
            "control"
        );
        let e = kind("kind = \"lm-rlfh\"\n").unwrap_err().to_string();
        assert!(
            e.contains("x.toml") && e.contains("`kind`") && e.contains("did you mean `lm-rlhf`"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        for (set, key) in [
            ("kind=\"rlhf\"", "kind"),
            ("name=\"a b\"", "name"),
            ("generation.max-new-tokens=0", "generation.max-new-tokens"),
            ("generation.min-new-tokens=4", "generation.min-new-tokens"),
            ("generation.top-p=0", "generation.top-p"),
            ("preferences.temperature=0", "preferences.temperature"),
            ("compare.steps=0", "compare.steps"),
            ("compare.seeds=[]", "compare.seeds"),
            ("population.groups.0.share=-1", "population.groups.0.share"),
            (
                "population.groups.0.name=\"a/b\"",
                "population.groups.0.name",
            ),
            ("prompts.eval=0", "prompts.eval"),
        ] {
            let e = load(BASE, &[set]).unwrap_err().to_string();
            assert!(e.contains(key), "{set}: {e}");
        }
        let no_lora = BASE.replace("[model.lora]\nrank = 4\n", "");
        let e = load(&no_lora, &[]).unwrap_err().to_string();
        assert!(e.contains("model.lora"), "{e}");
        let none = BASE.replace("[population]\n[[population.groups]]\nname = \"a\"\nshare = 1\nreward = { type = \"conciseness\" }\n", "");
        let e = load(&none, &[]).unwrap_err().to_string();
        assert!(e.contains("population"), "{e}");
    }

    /// `[features]`, `[em] ratio-sweep` and a missing `[compare]`: the checks name the key and
    /// say what was expected.
    #[test]
    fn feature_and_sweep_keys_are_checked() {
        let e = load(BASE, &["features.token-counts=true"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("features.token-counts") && e.contains("linear-reward"),
            "{e}"
        );
        let lin = format!(
            "{BASE}[reward-model]\ntype = \"linear-reward\"\nlearning-rate = 0.01\nepochs = 2\nbatch-size = 8\n"
        );
        let ok = load(&lin, &["features.token-counts=true"]).unwrap();
        assert!(ok.features.token_counts && ok.features.contextual);
        let e = load(
            &lin,
            &["features.contextual=false", "features.token-identity=false"],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("features.contextual"), "{e}");
        let e = load(&lin, &["features.token-count=true"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("token-count"), "{e}");
        // One group cannot be swept; two can, and [compare] may be left out.
        let e = load(&lin, &["em.ratio-sweep=[1, 2]"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("em.ratio-sweep") && e.contains("two groups"),
            "{e}"
        );
        let two = lin.replace(
            "[compare]",
            "[[population.groups]]\nname = \"b\"\nshare = 1\nreward = { type = \"conciseness\" }\n[compare]",
        );
        let no_compare = two.replace("[compare]\n[[compare.objectives]]\ntype = \"maxmin\"\n", "");
        let e = load(&no_compare, &["em.ratio-sweep=[1, 2]"]).unwrap();
        assert!(e.compare.is_none() && e.em.ratio_sweep == vec![1.0, 2.0]);
        let e = load(&no_compare, &["em.ratio-sweep=[0.5]"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("em.ratio-sweep.0"), "{e}");
        let e = load(
            &no_compare,
            &["em.ratio-sweep=[1]", "population.held-out-users=0"],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("population.held-out-users"), "{e}");
    }
}
