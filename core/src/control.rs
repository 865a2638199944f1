//! The control domain of the MaxMin-RLHF pipeline ([`crate::pipeline::Domain`]): users compare
//! equal-length segments of trajectories from a behaviour policy on a classic-control
//! environment, each group scoring a segment with its ground-truth reward (registered next to its
//! environment); policies are CleanRL-style PPO on the environment with the objective's learned
//! reward ([`crate::compare`]), evaluated by each group's episodic ground-truth return.
//!
//! Outputs beyond the pipeline's: `preferences/{train,held_out}.jsonl` (the data trained on, read
//! back from disk), `reward_models.safetensors`, the stage's `report.md` (kept as
//! `report-preferences.md` once the policy comparison is appended), `summary.json`'s `em` and
//! `results`.

use crate::compare::{self, Cals, CompareConfig, PolicyResult};
use crate::env::EnvConfig;
use crate::error::{Error, Result};
use crate::mlp::MlpPolicyConfig;
use crate::objective::ObjectiveConfig;
use crate::pipeline::{Domain, MainRun, Plan};
use crate::policy::RewardModelConfig;
use crate::ppo::PpoConfig;
use crate::prefs::data::{read_all, Comparison, PrefWriter, ReadOptions};
use crate::prefs::em::{EmConfig, RewardEnsemble, UserData};
use crate::prefs::group_reward::GroupReward;
use crate::prefs::population::{sample_users, PopulationConfig};
use crate::prefs::reward_model::{Encoded, Features, RewardSpec};
use crate::prefs::simulate::{label, segments, PreferencesConfig};
use crate::prefs::stage::{Outcome, Settings, StageData, SweepRow};
use crate::rng::stream;
use crate::run::{write_atomic, write_json_atomic, Progress, RunDir};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The config sections the preference stage reads.
pub struct StageConfig<'a> {
    /// `[env]`.
    pub env: &'a dyn EnvConfig,
    /// Root seed.
    pub seed: u64,
    /// `[population]`.
    pub population: &'a PopulationConfig,
    /// `[preferences]`.
    pub preferences: &'a PreferencesConfig,
    /// `[reward-model]`.
    pub reward_model: &'a dyn RewardModelConfig,
    /// `[em]`.
    pub em: &'a EmConfig,
}

/// Each group's ground-truth reward on the environment `spec`, in config order (a group reward
/// registered for another environment is a config error at its key).
fn group_rewards(c: &StageConfig, spec: &crate::env::EnvSpec) -> Result<Vec<Box<dyn GroupReward>>> {
    c.population
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            crate::prefs::group_reward::build(g.reward.as_ref(), spec)
                .map_err(|e| e.under(&format!("population.groups.{i}.reward")))
        })
        .collect()
}

/// Cross-section checks `validate` cannot do per section.
pub fn validate(c: &StageConfig) -> Result<()> {
    let k_max = c.em.select_k.iter().copied().max().unwrap_or(c.em.k);
    if c.preferences.data.is_none() && k_max > c.population.users {
        return Err(Error::config(
            "em.k",
            format!(
                "K = {k_max} groups is more than the {} users of [population]",
                c.population.users
            ),
        ));
    }
    if !c.em.ratio_sweep.is_empty()
        && (c.population.groups.len() != 2 || c.preferences.data.is_some())
    {
        return Err(Error::config(
            "em.ratio-sweep",
            "a ratio sweep needs exactly two simulated groups",
        ));
    }
    RewardSpec::from_config(c.reward_model)?;
    let spec = c.env.build().map_err(|e| e.under("env"))?.spec().clone();
    group_rewards(c, &spec)?;
    Ok(())
}

/// Build the feature layout, get the comparisons (simulated or read) and encode them per user.
fn prepare(c: &StageConfig, shares: &[f64], out: Option<&Path>) -> Result<StageData> {
    let env_spec = c.env.build()?.spec().clone();
    let rspec = RewardSpec::from_config(c.reward_model)?;
    let feats = Features {
        obs_dim: env_spec.observation_space.dim(),
        action_space: env_spec.action_space.clone(),
        squares: rspec.squares,
    };
    let names: Vec<String> = c.population.groups.iter().map(|g| g.name.clone()).collect();
    let split = match &c.preferences.data {
        Some(p) => from_file(c, p)?,
        None => simulate(c, shares, out)?,
    };
    let (train, train_ids) = user_data(&split.train, &names, &feats)?;
    let held = if split.held_out.is_empty() {
        None
    } else {
        Some(user_data(&split.held_out, &names, &feats)?.0)
    };
    Ok(StageData {
        feats,
        names,
        train,
        train_ids,
        held,
        skipped: split.skipped,
        truth_diffs: None,
    })
}

/// The experiment sections the policy stage reads.
pub struct PolicyConfig<'a> {
    /// `[compare]`.
    pub compare: &'a CompareConfig,
    /// `[policy]`.
    pub policy: &'a MlpPolicyConfig,
    /// `[ppo]`.
    pub ppo: &'a PpoConfig,
}

/// A control experiment with a `[population]`, as a pipeline domain.
pub struct Control<'a> {
    /// The preference stage's sections.
    pub stage: StageConfig<'a>,
    /// The policy stage's sections, with `[compare]`.
    pub policies: Option<PolicyConfig<'a>>,
    /// Experiment name (for `summary.json`).
    pub name: &'a str,
    started: Instant,
    stage_seconds: f64,
}

impl<'a> Control<'a> {
    /// The domain of one experiment.
    pub fn new(name: &'a str, stage: StageConfig<'a>, policies: Option<PolicyConfig<'a>>) -> Self {
        Self {
            stage,
            policies,
            name,
            started: Instant::now(),
            stage_seconds: 0.0,
        }
    }

    fn truth(&self) -> Result<Vec<(String, Box<dyn GroupReward>)>> {
        let spec = self.stage.env.build()?.spec().clone();
        let names = self.stage.population.groups.iter().map(|g| g.name.clone());
        Ok(names.zip(group_rewards(&self.stage, &spec)?).collect())
    }
}

/// What every control policy job reads.
pub struct Shared {
    ensemble: RewardEnsemble,
    /// The groups' names and ground-truth rewards, built once for every job's evaluation.
    truth: Vec<(String, Box<dyn GroupReward>)>,
    cals: Cals,
    run_dir: PathBuf,
}

impl Domain for Control<'_> {
    type Result = PolicyResult;
    type Shared = Shared;

    fn settings(&self) -> Result<Settings<'_>> {
        Ok(Settings {
            seed: self.stage.seed,
            em_seed: self.stage.seed,
            reward_model: RewardSpec::from_config(self.stage.reward_model)?,
            em: self.stage.em,
        })
    }

    fn shares(&self) -> Vec<f64> {
        self.stage.population.shares()
    }

    fn ratio_sweep(&self) -> Vec<f64> {
        self.stage.em.ratio_sweep.clone()
    }

    fn comparisons(
        &mut self,
        shares: &[f64],
        main: Option<MainRun<'_>>,
        _progress: &mut dyn Progress,
    ) -> Result<StageData> {
        if main.is_some() {
            self.started = Instant::now();
        }
        let out = main.map(|m| m.run.path.join("preferences"));
        prepare(&self.stage, shares, out.as_deref())
    }

    fn rewards_learned(&mut self, run: &RunDir, main: &Outcome, sweep: &[SweepRow]) -> Result<()> {
        self.stage_seconds = self.started.elapsed().as_secs_f64();
        if let Some(e) = &main.ensemble {
            e.save(&run.path)?;
        }
        let names: Vec<String> = self
            .stage
            .population
            .groups
            .iter()
            .map(|g| g.name.clone())
            .collect();
        crate::prefs::report::write(&run.path, &names, main, sweep)?;
        let env_id = self.stage.env.build()?.spec().id.clone();
        tracing::info!(
            "{env_id}: EM K={} ARI {:?} purity {:?} after {} iterations",
            main.k,
            main.ari,
            main.purity,
            main.iterations
        );
        Ok(())
    }

    fn plan(&self) -> Option<Plan<'_>> {
        let p = self.policies.as_ref()?;
        Some(Plan {
            objectives: p
                .compare
                .objectives
                .iter()
                .map(|o| o.as_ref() as &dyn ObjectiveConfig)
                .collect(),
            seeds: p.compare.seeds.clone(),
            workers: 1,
            steps: 0,
        })
    }

    fn prepare(
        &self,
        ensemble: RewardEnsemble,
        _main: &Outcome,
        run: &RunDir,
        _progress: &mut dyn Progress,
    ) -> Result<Shared> {
        let p = self.policy_config()?;
        let truth = self.truth()?;
        let cals = compare::calibration(p.compare, &self.inputs(p, &ensemble, &truth))?;
        Ok(Shared {
            ensemble,
            truth,
            cals,
            run_dir: run.path.clone(),
        })
    }

    fn train(
        &self,
        shared: &Shared,
        objective: &dyn ObjectiveConfig,
        seed: u64,
        dir: &Path,
        progress: &mut dyn Progress,
    ) -> Result<PolicyResult> {
        let p = self.policy_config()?;
        let tag = crate::pipeline::policy_tag(&objective.label(), seed);
        let checkpoints = shared
            .run_dir
            .join("checkpoints")
            .join("policies")
            .join(tag);
        compare::train_one(
            p.compare,
            &self.inputs(p, &shared.ensemble, &shared.truth),
            &shared.cals,
            objective,
            seed,
            dir,
            checkpoints,
            progress,
        )
    }

    fn finish(
        &self,
        run: &RunDir,
        main: &Outcome,
        sweep: &[SweepRow],
        policies: Option<(&Shared, &[PolicyResult])>,
    ) -> Result<()> {
        let mut em = serde_json::to_value(main).map_err(|e| Error::Internal(e.to_string()))?;
        em["ratio_sweep"] =
            serde_json::to_value(sweep).map_err(|e| Error::Internal(e.to_string()))?;
        em["wall_time_s"] = json!(self.stage_seconds);
        let env_id = self.stage.env.build()?.spec().id.clone();
        let mut summary =
            json!({ "name": self.name, "env": env_id, "seed": self.stage.seed, "em": em });
        if let (Some((_, results)), Some(p)) = (policies, &self.policies) {
            summary["results"] =
                serde_json::to_value(results).map_err(|e| Error::Internal(e.to_string()))?;
            // Keep the preference stage's report beside the full one so `maxmin report` can
            // rebuild it.
            let em_report = run.path.join("report-preferences.md");
            if let Ok(text) = std::fs::read_to_string(run.path.join("report.md")) {
                write_atomic(&em_report, text.as_bytes())?;
            }
            let order: Vec<String> = p.compare.objectives.iter().map(|o| o.label()).collect();
            write_report(&run.path, &order)?;
        }
        write_json_atomic(&run.file("summary.json"), &summary)
    }
}

impl Control<'_> {
    fn policy_config(&self) -> Result<&PolicyConfig<'_>> {
        self.policies
            .as_ref()
            .ok_or_else(|| Error::Internal("policies without [compare]".into()))
    }

    fn inputs<'b>(
        &'b self,
        p: &'b PolicyConfig,
        ensemble: &'b RewardEnsemble,
        truth: &'b [(String, Box<dyn GroupReward>)],
    ) -> compare::Inputs<'b> {
        compare::Inputs {
            env: self.stage.env,
            policy: p.policy,
            ppo: p.ppo,
            ensemble,
            truth,
            seed: self.stage.seed,
        }
    }
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

struct Split {
    train: Vec<Comparison>,
    held_out: Vec<Comparison>,
    skipped: usize,
}

fn simulate(c: &StageConfig, shares: &[f64], out: Option<&Path>) -> Result<Split> {
    let mut env = c.env.build()?;
    let spec = env.spec().clone();
    let obs_dim = spec.observation_space.dim();
    let rewards = group_rewards(c, &spec)?;
    let names: Vec<String> = c.population.groups.iter().map(|g| g.name.clone()).collect();
    let mut rng = stream(c.seed, "population");
    let users = sample_users(c.population.users, shares, "u", &mut rng);
    let held = sample_users(c.population.held_out_users, shares, "h", &mut rng);
    let segs = segments(
        env.as_mut(),
        c.preferences,
        &mut stream(c.seed, "preferences/segments"),
    )?;
    let per = c.population.comparisons_per_user;
    let mut lrng = stream(c.seed, "preferences/labels");
    let train = label(
        &users,
        &names,
        &rewards,
        &segs,
        obs_dim,
        per,
        c.preferences,
        &spec.id,
        &mut lrng,
    );
    let held_out = label(
        &held,
        &names,
        &rewards,
        &segs,
        obs_dim,
        per,
        c.preferences,
        &spec.id,
        &mut lrng,
    );
    let Some(dir) = out else {
        return Ok(Split {
            train,
            held_out,
            skipped: 0,
        });
    };
    // Write the data, then train from what is on disk: the file is the record of the run.
    let opts = ReadOptions {
        width: Some(obs_dim + spec.action_space.dim()),
        skip_bad: false,
    };
    let mut split = Split {
        train: vec![],
        held_out: vec![],
        skipped: 0,
    };
    for (name, cs, dst) in [
        ("train", train, &mut split.train),
        ("held_out", held_out, &mut split.held_out),
    ] {
        let path = dir.join(format!("{name}.jsonl"));
        let mut w = PrefWriter::create(&path)?;
        for x in &cs {
            w.write(x)?;
        }
        w.finish()?;
        *dst = read_all(&path, opts)?.comparisons;
    }
    Ok(split)
}

fn from_file(c: &StageConfig, path: &Path) -> Result<Split> {
    let spec = c.env.build()?.spec().clone();
    let width = spec.observation_space.dim() + spec.action_space.dim();
    let r = read_all(
        path,
        ReadOptions {
            width: Some(width),
            skip_bad: c.preferences.skip_bad,
        },
    )?;
    if r.comparisons.is_empty() {
        return Err(Error::data(path, None, "no comparisons"));
    }
    // Held-out users: a seeded, per-group share of the users (by user, never by comparison).
    let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for x in &r.comparisons {
        let g = x.group.clone().unwrap_or_default();
        let v = by_group.entry(g).or_default();
        if !v.contains(&x.user) {
            v.push(x.user.clone());
        }
    }
    let mut rng = stream(c.seed, "preferences/held-out");
    let mut held = std::collections::HashSet::new();
    for users in by_group.values_mut() {
        use rand::seq::SliceRandom;
        users.sort();
        users.shuffle(&mut rng);
        let n = (users.len() as f64 * c.preferences.held_out_fraction).round() as usize;
        held.extend(
            users
                .iter()
                .take(n.min(users.len().saturating_sub(1)))
                .cloned(),
        );
    }
    let (held_out, train) = r
        .comparisons
        .into_iter()
        .partition(|x| held.contains(&x.user));
    Ok(Split {
        train,
        held_out,
        skipped: r.skipped,
    })
}

/// Users (in first-seen order), their true groups (if every comparison names a known group),
/// and the encoded comparisons.
fn user_data(
    cs: &[Comparison],
    names: &[String],
    feats: &Features,
) -> Result<(UserData, Vec<String>)> {
    let mut ids: Vec<String> = Vec::new();
    let mut index = std::collections::HashMap::new();
    let mut user_of = Vec::with_capacity(cs.len());
    let mut truth: Vec<Option<usize>> = Vec::new();
    for x in cs {
        let u = *index.entry(x.user.clone()).or_insert_with(|| {
            ids.push(x.user.clone());
            truth.push(None);
            ids.len() - 1
        });
        user_of.push(u as u32);
        let g = x
            .group
            .as_ref()
            .and_then(|g| names.iter().position(|n| n == g));
        match (truth[u], g) {
            (None, Some(g)) => truth[u] = Some(g),
            (Some(a), Some(b)) if a != b => {
                return Err(Error::input(
                    format!(
                        "user {} appears in groups {} and {}",
                        x.user, names[a], names[b]
                    ),
                    Some("a user belongs to one group".into()),
                ))
            }
            _ => {}
        }
    }
    let truth = truth.into_iter().collect::<Option<Vec<usize>>>();
    let refs: Vec<&Comparison> = cs.iter().collect();
    let n = ids.len();
    Ok((
        UserData::new(Encoded::new(&refs, feats)?, user_of, n, truth),
        ids,
    ))
}
