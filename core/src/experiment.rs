//! The experiment file's top level and the pipeline it drives. docs/architecture.md's data flow: a config
//! names an environment, a policy and a trainer; `run` creates the run directory, writes the
//! resolved config, trains, and writes `summary.json`. `check` builds everything without
//! training.

use crate::compare::CompareConfig;
use crate::config::{Loaded, Validate};
use crate::control;
use crate::env::{AutoresetMode, EnvConfig};
use crate::error::{Error, Result};
use crate::mlp::{ActorCritic, MlpPolicyConfig};
use crate::policy::{PolicyConfig, RewardModelConfig};
use crate::ppo::{self, PpoConfig, TrainCtx};
use crate::prefs::reward_model::LinearRewardConfig;
use crate::prefs::{EmConfig, PopulationConfig, PreferencesConfig};
use crate::run::{write_json_atomic, Metrics, Progress, RunDir};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A whole experiment file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Experiment {
    /// `kind = "control"` (the default when absent): the experiment kind the CLI dispatches on
    /// ([`crate::pipeline::Kind`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Experiment name; runs go to `runs/<name>__<timestamp>/`.
    pub name: String,
    /// Root seed: every random stream derives from it.
    #[serde(default = "d_seed")]
    pub seed: u64,
    /// The environment (`type = "cartpole"`, … see `maxmin list`).
    pub env: Box<dyn EnvConfig>,
    /// The policy (default: CleanRL's MLP actor-critic).
    #[serde(default = "d_policy")]
    pub policy: Box<dyn PolicyConfig>,
    /// PPO hyper-parameters (default: CleanRL's).
    #[serde(default)]
    pub ppo: PpoConfig,
    /// `[population]`: when present, the run is the preference + EM stage (docs/algorithms.md
    /// Algorithm 2; see [`crate::prefs`]) instead of PPO on the environment's reward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub population: Option<PopulationConfig>,
    /// `[preferences]`: how comparisons are simulated or read (with `[population]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferences: Option<PreferencesConfig>,
    /// `[reward-model]`: the Bradley–Terry reward model (default `linear-reward`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward_model: Option<Box<dyn RewardModelConfig>>,
    /// `[em]`: the EM mixture of reward models (with `[population]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub em: Option<EmConfig>,
    /// `[compare]`: after the preference stage, train a policy per objective and seed on the
    /// learned rewards and compare the groups' true utilities (needs `[population]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<CompareConfig>,
}

fn d_seed() -> u64 {
    1
}

fn d_policy() -> Box<dyn PolicyConfig> {
    Box::new(MlpPolicyConfig::default())
}

impl Validate for Experiment {
    fn validate(&self) -> Result<()> {
        crate::run::check_run_name(&self.name)?;
        if let Some(k) = self.kind.as_deref().filter(|k| *k != "control") {
            return Err(Error::config(
                "kind",
                format!("this file is read as a `control` experiment, not `{k}`"),
            ));
        }
        self.env.validate().map_err(|e| e.under("env"))?;
        self.policy.validate().map_err(|e| e.under("policy"))?;
        self.mlp_policy()?;
        self.ppo.validate().map_err(|e| e.under("ppo"))?;
        self.validate_prefs()?;
        if let Some(c) = &self.compare {
            if self.population.is_none() {
                return Err(Error::config(
                    "compare",
                    "[compare] trains on learned group rewards and needs a [population] section",
                ));
            }
            c.validate().map_err(|e| e.under("compare"))?;
        }
        Ok(())
    }
}

/// Defaults of the preference sections when `[population]` is present without them.
struct PrefsDefaults {
    preferences: PreferencesConfig,
    reward_model: LinearRewardConfig,
    em: EmConfig,
}

impl Experiment {
    fn validate_prefs(&self) -> Result<()> {
        let Some(pop) = &self.population else {
            for (present, key) in [
                (self.preferences.is_some(), "preferences"),
                (self.reward_model.is_some(), "reward-model"),
                (self.em.is_some(), "em"),
            ] {
                if present {
                    return Err(Error::config(
                        key,
                        format!("[{key}] only applies to the preference stage, which needs a [population] section"),
                    ));
                }
            }
            return Ok(());
        };
        pop.validate().map_err(|e| e.under("population"))?;
        if let Some(p) = &self.preferences {
            p.validate().map_err(|e| e.under("preferences"))?;
        }
        if let Some(r) = &self.reward_model {
            r.validate().map_err(|e| e.under("reward-model"))?;
        }
        if let Some(e) = &self.em {
            e.validate().map_err(|e| e.under("em"))?;
        }
        Ok(())
    }

    /// The preference stage's sections, if `[population]` is present.
    fn stage_config<'a>(&'a self, d: &'a PrefsDefaults) -> Option<control::StageConfig<'a>> {
        Some(control::StageConfig {
            env: self.env.as_ref(),
            seed: self.seed,
            population: self.population.as_ref()?,
            preferences: self.preferences.as_ref().unwrap_or(&d.preferences),
            reward_model: self.reward_model.as_deref().unwrap_or(&d.reward_model),
            em: self.em.as_ref().unwrap_or(&d.em),
        })
    }
}

fn prefs_defaults() -> PrefsDefaults {
    PrefsDefaults {
        preferences: PreferencesConfig::default(),
        reward_model: LinearRewardConfig::default(),
        em: EmConfig::default(),
    }
}

impl Experiment {
    fn mlp_policy(&self) -> Result<&MlpPolicyConfig> {
        self.policy
            .as_any()
            .downcast_ref::<MlpPolicyConfig>()
            .ok_or_else(|| {
                Error::config(
                    "policy.type",
                    "the control PPO trainer needs an observation-vector policy (`type = \"mlp\"`)",
                )
            })
    }

    /// Build the environment (one and vectorised) and the policy without training, so that a
    /// config that passes `check` fails at run time only for reasons outside the config.
    pub fn check(&self) -> Result<()> {
        let defaults = prefs_defaults();
        if let Some(sc) = self.stage_config(&defaults) {
            control::validate(&sc)?;
        }
        let env = self.env.build().map_err(|e| e.under("env"))?;
        let spec = env.spec().clone();
        let mut venv = self
            .env
            .build_vec(self.ppo.num_envs, AutoresetMode::SameStep)
            .map_err(|e| e.under("env"))?;
        venv.reset(self.seed);
        let mut rng = crate::rng::stream(self.seed, "check");
        ActorCritic::new(
            self.mlp_policy()?,
            &spec.observation_space,
            &spec.action_space,
            &mut rng,
            &Device::Cpu,
        )?;
        Ok(())
    }
}

pub use crate::pipeline::RunOptions;

/// Load the experiment to continue from a run directory's resolved config.
pub fn load_for_resume(run_dir: &Path) -> Result<Loaded<Experiment>> {
    RunDir::open(run_dir)?;
    crate::config::load(&run_dir.join("config.resolved.toml"), &[])
}

/// Run an experiment; returns the run directory.
pub fn run(
    exp: &Loaded<Experiment>,
    opts: &RunOptions,
    progress: &mut dyn Progress,
) -> Result<PathBuf> {
    run_with(exp, opts, progress, |_| {})
}

/// As [`run`], calling `on_dir` with the run directory as soon as it exists (the binary uses
/// it to start `log.txt`).
pub fn run_with(
    exp: &Loaded<Experiment>,
    opts: &RunOptions,
    progress: &mut dyn Progress,
    on_dir: impl FnOnce(&Path),
) -> Result<PathBuf> {
    let cfg = &exp.value;
    let dir = opts.open_dir(&cfg.name, &exp.resolved, on_dir)?;
    let metrics_path = dir.file("metrics.jsonl");
    let defaults = prefs_defaults();
    if let Some(sc) = cfg.stage_config(&defaults) {
        control::validate(&sc)?;
        let policies = match &cfg.compare {
            Some(compare) => Some(control::PolicyConfig {
                compare,
                policy: cfg.mlp_policy()?,
                ppo: &cfg.ppo,
            }),
            None => None,
        };
        let mut domain = control::Control::new(&cfg.name, sc, policies);
        crate::pipeline::run(&mut domain, &dir, progress)?;
        return Ok(dir.path);
    }
    let existing = std::fs::metadata(&metrics_path)
        .map(|m| m.len())
        .unwrap_or(0);
    let mut metrics = Metrics::open(&metrics_path, existing)?;
    let mut ctx = TrainCtx {
        metrics: &mut metrics,
        checkpoints: dir.checkpoints().join("ppo"),
        progress,
    };
    let (summary, _policy) = ppo::train(
        &cfg.ppo,
        cfg.mlp_policy()?,
        cfg.env.as_ref(),
        cfg.seed,
        &mut ctx,
    )?;
    metrics.sync()?;
    let env_id = cfg.env.build()?.spec().id.clone();
    tracing::info!(
        "{env_id}: final return {:.2} after {} env steps ({:.1} s)",
        summary.final_return,
        summary.env_steps,
        summary.wall_time_s
    );
    write_json_atomic(
        &dir.file("summary.json"),
        &serde_json::json!({
            "name": cfg.name,
            "env": env_id,
            "seed": cfg.seed,
            "final_return": summary.final_return,
            "env_steps": summary.env_steps,
            "episodes": summary.episodes,
            "updates": summary.updates,
            "wall_time_s": summary.wall_time_s,
        }),
    )?;
    Ok(dir.path)
}

crate::register_kind!(crate::pipeline::Kind {
    name: "control",
    doc: "classic control: PPO on an environment's reward, or with [population] the MaxMin-RLHF pipeline on segments of trajectories (the default kind)",
    run: run_kind,
    check: check_kind,
    report: report_kind,
});

fn run_kind(
    path: &Path,
    sets: &[String],
    opts: &RunOptions,
    progress: &mut dyn Progress,
    on_dir: &mut dyn FnMut(&Path),
) -> Result<PathBuf> {
    let exp: Loaded<Experiment> = crate::config::load(path, sets)?;
    run_with(&exp, opts, progress, |d| on_dir(d))
}

fn check_kind(path: &Path, sets: &[String]) -> Result<()> {
    let exp: Loaded<Experiment> = crate::config::load(path, sets)?;
    exp.value.check()
}

fn report_kind(run_dir: &Path) -> Result<()> {
    let exp = load_for_resume(run_dir)?;
    let order: Vec<String> = exp
        .value
        .compare
        .as_ref()
        .map(|c| c.objectives.iter().map(|o| o.label()).collect())
        .unwrap_or_default();
    control::write_report(run_dir, &order)
}
