//! The language-model experiment file (`kind = "lm-rlhf"`): which model, which prompts, which
//! simulated (or recorded) users, which reward models, which objectives — PAPER.md's pipeline for
//! language models. See `configs/gpt2-imdb__maxmin.toml` for a documented example.

use crate::prompts::PromptsConfig;
use crate::rewards::TextRewardConfig;
use maxmin_core::config::Validate;
use maxmin_core::error::check;
use maxmin_core::objective::ObjectiveConfig;
use maxmin_core::policy::RewardModelConfig;
use maxmin_core::prefs::population::{check_groups, normalised};
use maxmin_core::prefs::psoups::{PsoupsFile, PsoupsSplit};
use maxmin_core::prefs::EmConfig;
use maxmin_core::{Error, Result};
use maxmin_gpt2::ppo::LmPpoConfig;
use maxmin_gpt2::LmConfig;
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
    /// `[compare]`: objectives × seeds.
    pub compare: LmCompare,
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

/// `[features]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FeatureConfig {
    /// Append each token's context-free hidden state to its contextual one (a word-identity
    /// channel; costs one forward pass per vocabulary entry at start-up).
    #[serde(default = "yes")]
    pub token_identity: bool,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        Self {
            token_identity: true,
        }
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
    /// `[min-new-tokens, max-new-tokens]` (TRL's `LengthSampler`, PAPER.md's Tulu setting).
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
    /// Z-score each learned reward on reference completions before combining.
    #[serde(default = "yes")]
    pub calibrate: bool,
    /// Checkpoint every this many PPO steps.
    #[serde(default = "d_ck")]
    pub checkpoint_every: usize,
    /// Sample generations per policy shown in the report.
    #[serde(default = "d_samples")]
    pub samples: usize,
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
        if self.model.lora.is_none() {
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
        maxmin_core::prefs::reward_model::RewardSpec::from_config(self.reward_model.as_ref())?;
        self.em.validate().map_err(|e| e.under("em"))?;
        self.ppo.validate().map_err(|e| e.under("ppo"))?;
        let c = &self.compare;
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
        Ok(())
    }
}

impl LmExperiment {
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

/// Whether a TOML text is a language-model experiment (`kind = "lm-rlhf"` at the top level).
pub fn is_lm_experiment(text: &str) -> bool {
    toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|t| t.get("kind").and_then(|k| k.as_str().map(|s| s == KIND)))
        .unwrap_or(false)
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
        assert!(is_lm_experiment(BASE));
        assert!(!is_lm_experiment(
            "name = \"x\"\n[env]\ntype = \"cartpole\"\n"
        ));
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
}
