//! The experiment file's top level and the pipeline it drives. DESIGN.md's data flow: a config
//! names an environment, a policy and a trainer; `run` creates the run directory, writes the
//! resolved config, trains, and writes `summary.json`. `check` builds everything without
//! training.

use crate::config::{Loaded, Validate};
use crate::env::{AutoresetMode, EnvConfig};
use crate::error::{Error, Result};
use crate::mlp::{ActorCritic, MlpPolicyConfig};
use crate::policy::PolicyConfig;
use crate::ppo::{self, PpoConfig, TrainCtx};
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
}

fn d_seed() -> u64 {
    1
}

fn d_policy() -> Box<dyn PolicyConfig> {
    Box::new(MlpPolicyConfig::default())
}

impl Validate for Experiment {
    fn validate(&self) -> Result<()> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(Error::config(
                "name",
                format!(
                    "expected a non-empty name of letters, digits, '-', '_' or '.', found {:?}",
                    self.name
                ),
            ));
        }
        self.env.validate().map_err(|e| e.under("env"))?;
        self.policy.validate().map_err(|e| e.under("policy"))?;
        self.mlp_policy()?;
        self.ppo.validate().map_err(|e| e.under("ppo"))?;
        Ok(())
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
    let existing = std::fs::metadata(&metrics_path).map(|m| m.len()).unwrap_or(0);
    let mut metrics = Metrics::open(&metrics_path, existing)?;
    let mut ctx = TrainCtx {
        metrics: &mut metrics,
        checkpoints: dir.checkpoints().join("ppo"),
        progress,
    };
    let (summary, _policy) = ppo::train(&cfg.ppo, cfg.mlp_policy()?, cfg.env.as_ref(), cfg.seed, &mut ctx)?;
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
