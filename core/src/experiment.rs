//! The experiment file's top level and the pipeline it drives. docs/architecture.md's data flow: a config
//! names an environment, a policy and a trainer; `run` creates the run directory, writes the
//! resolved config, trains, and writes `summary.json`. `check` builds everything without
//! training.

use crate::compare::CompareConfig;
use crate::config::{Loaded, Validate};
use crate::env::{AutoresetMode, EnvConfig};
use crate::error::{Error, Result};
use crate::mlp::{ActorCritic, MlpPolicyConfig};
use crate::policy::{PolicyConfig, RewardModelConfig};
use crate::ppo::{self, PpoConfig, TrainCtx};
use crate::prefs::reward_model::LinearRewardConfig;
use crate::prefs::{stage, EmConfig, PopulationConfig, PreferencesConfig};
use crate::run::{write_atomic, write_json_atomic, Metrics, Progress, RunDir};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A whole experiment file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Experiment {
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
    fn stage_config<'a>(&'a self, d: &'a PrefsDefaults) -> Option<stage::StageConfig<'a>> {
        Some(stage::StageConfig {
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
            stage::validate(&sc)?;
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

/// Where a run goes.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// Run directory instead of `runs/<name>__<timestamp>`.
    pub out: Option<PathBuf>,
    /// Continue the run in this directory.
    pub resume: Option<PathBuf>,
}

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
    let dir = match &opts.resume {
        Some(p) => RunDir::open(p)?,
        None => {
            let d = RunDir::create(&cfg.name, opts.out.as_deref())?;
            write_atomic(&d.file("config.resolved.toml"), exp.resolved.as_bytes())?;
            d
        }
    };
    on_dir(&dir.path);
    tracing::info!("run directory: {}", dir.path.display());
    let metrics_path = dir.file("metrics.jsonl");
    let defaults = prefs_defaults();
    if let Some(sc) = cfg.stage_config(&defaults) {
        // The stage takes seconds to minutes: a resumed run restarts it from the beginning
        // (deterministic, so it ends where an uninterrupted run would).
        let mut metrics = Metrics::open(&metrics_path, 0)?;
        stage::validate(&sc)?;
        let (em, ensemble) = stage::run(&sc, &dir.path, &mut metrics, progress)?;
        metrics.sync()?;
        let env_id = cfg.env.build()?.spec().id.clone();
        tracing::info!(
            "{env_id}: EM K={} ARI {} purity {} after {} iterations",
            em["k"],
            em["ari"],
            em["purity"],
            em["iterations"]
        );
        let mut summary =
            serde_json::json!({ "name": cfg.name, "env": env_id, "seed": cfg.seed, "em": em });
        if let Some(cc) = &cfg.compare {
            let ensemble = ensemble.ok_or_else(|| {
                Error::Internal("the preference stage returned no reward models".into())
            })?;
            let results = run_compare(cfg, cc, &ensemble, &dir.path, progress)?;
            summary["results"] =
                serde_json::to_value(&results).map_err(|e| Error::Internal(e.to_string()))?;
        }
        write_json_atomic(&dir.file("summary.json"), &summary)?;
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

/// The policy stage: every objective × seed on the learned rewards, then the report section.
fn run_compare(
    cfg: &Experiment,
    cc: &CompareConfig,
    ensemble: &crate::prefs::em::RewardEnsemble,
    run_dir: &Path,
    progress: &mut dyn Progress,
) -> Result<Vec<crate::compare::PolicyResult>> {
    let pop = cfg
        .population
        .as_ref()
        .ok_or_else(|| Error::Internal("compare without a population".into()))?;
    let spec = cfg.env.build()?.spec().clone();
    let truth = pop
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            crate::prefs::group_reward::build(g.reward.as_ref(), &spec)
                .map(|r| (g.name.clone(), r))
                .map_err(|e| e.under(&format!("population.groups.{i}.reward")))
        })
        .collect::<Result<Vec<_>>>()?;
    let inputs = crate::compare::Inputs {
        env: cfg.env.as_ref(),
        policy: cfg.mlp_policy()?,
        ppo: &cfg.ppo,
        ensemble,
        truth,
        seed: cfg.seed,
    };
    let results = crate::compare::run(cc, &inputs, run_dir, progress)?;
    // Keep the preference stage's report beside the full one so `maxmin report` can rebuild it.
    let em_report = run_dir.join("report-preferences.md");
    if let Ok(text) = std::fs::read_to_string(run_dir.join("report.md")) {
        write_atomic(&em_report, text.as_bytes())?;
    }
    let order: Vec<String> = cc.objectives.iter().map(|o| o.label()).collect();
    write_report(run_dir, &order)?;
    Ok(results)
}

/// Rebuild `report.md` from a run directory's files: the preference stage's section (kept in
/// `report-preferences.md`) followed by the policy comparison.
pub fn write_report(run_dir: &Path, order: &[String]) -> Result<()> {
    let results = crate::compare_report::load_results(run_dir)?;
    if results.is_empty() {
        return Err(Error::input(
            format!(
                "{} has no trained policies (policies/*/result.json)",
                run_dir.display()
            ),
            Some("run an experiment with a [compare] section first".into()),
        ));
    }
    let mut text =
        std::fs::read_to_string(run_dir.join("report-preferences.md")).unwrap_or_default();
    if !text.is_empty() {
        text.push('\n');
    }
    text.push_str(&crate::compare_report::section(run_dir, &results, order)?);
    write_atomic(&run_dir.join("report.md"), text.as_bytes())
}
