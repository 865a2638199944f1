//! The MaxMin-RLHF pipeline, once for every domain (docs/architecture.md, "One run"):
//!
//! 1. **preferences** — the domain's population labels comparisons (or reads recorded ones) and
//!    encodes them for the reward models ([`Domain::comparisons`]);
//! 2. **reward stage** — [`crate::prefs::stage::learn`]: the single pooled model, EM with K
//!    selection, the oracle, cluster ↔ group matching and held-out accuracy per group; with
//!    `[em] ratio-sweep` the two stages rerun at each majority:minority ratio;
//! 3. **policies** — every objective × seed ([`Domain::train`]), `workers` at a time, each
//!    result written to `policies/<objective>__seed<s>/result.json` and reused by `--resume`;
//! 4. **summary and report** ([`Domain::finish`]).
//!
//! A domain says what a comparison's items are, how a policy is trained and rolled out, and how a
//! group scores it: the control domain (`crate::control`: environments, segments of
//! trajectories, CleanRL-style PPO) and the text domain (`maxmin-text`: prompts, completions,
//! token-level PPO on a language model) are the two implementations. Every stage above — K
//! selection, the oracle, the interrupt check, reuse of finished policies, parallel policies, the
//! ratio sweep — exists here once and works for both.
//!
//! Ctrl-C: the reward stage stops at the next EM iteration, a policy at its next update (the
//! domain checkpoints it); both return [`Error::Interrupted`], and `--resume` reruns the
//! deterministic reward stage, reuses finished policies and continues the interrupted one.

use crate::error::{Error, Result};
use crate::objective::ObjectiveConfig;
use crate::prefs::em::RewardEnsemble;
use crate::prefs::stage::{self, EmHooks, Outcome, Settings, StageData, SweepRow};
use crate::run::{write_json_atomic, Metrics, Progress, RunDir};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Where a run goes.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// Run directory instead of `runs/<name>__<timestamp>`.
    pub out: Option<PathBuf>,
    /// Continue the run in this directory.
    pub resume: Option<PathBuf>,
}

impl RunOptions {
    /// The run directory these options name: with `resume`, that existing directory; otherwise a
    /// new `runs/<name>__<timestamp>` (or `out`) holding `config.resolved.toml` (the config as
    /// loaded, overrides applied), written atomically. `on_dir` receives it as soon as it
    /// exists, so the caller can print it before the long stages start.
    pub fn open_dir(
        &self,
        name: &str,
        resolved: &str,
        on_dir: impl FnOnce(&Path),
    ) -> Result<RunDir> {
        let dir = match &self.resume {
            Some(p) => RunDir::open(p)?,
            None => {
                let d = RunDir::create(name, self.out.as_deref())?;
                crate::run::write_atomic(&d.file("config.resolved.toml"), resolved.as_bytes())?;
                d
            }
        };
        on_dir(&dir.path);
        tracing::info!("run directory: {}", dir.path.display());
        Ok(dir)
    }
}

/// [`Kind::run`]: config path, `--set` overrides, options, progress, and the callback that
/// receives the run directory; returns the run directory.
pub type RunFn =
    fn(&Path, &[String], &RunOptions, &mut dyn Progress, &mut dyn FnMut(&Path)) -> Result<PathBuf>;

/// One experiment kind: the top-level `kind = "…"` of a config file (absent: `control`). The
/// CLI reads the key and dispatches `run`, `check` and `report` through this table; a crate adds
/// a kind with [`register_kind!`](crate::register_kind).
#[derive(Debug)]
pub struct Kind {
    /// The `kind` value.
    pub name: &'static str,
    /// One line for `maxmin list`.
    pub doc: &'static str,
    /// Load the config at `path` with `--set` overrides and run it (or, with `opts.resume`,
    /// continue that run; `path` is then its `config.resolved.toml`); `on_dir` receives the run
    /// directory as soon as it exists. Returns the run directory.
    pub run: RunFn,
    /// Load and build everything the config declares without training.
    pub check: fn(&Path, &[String]) -> Result<()>,
    /// Rebuild a run directory's `report.md` from its files.
    pub report: fn(&Path) -> Result<()>,
}

inventory::collect!(Kind);

/// Register an experiment [`Kind`]:
/// `maxmin_core::register_kind!(Kind { name: "lm-rlhf", doc: "…", run, check, report });`
#[macro_export]
macro_rules! register_kind {
    ($kind:expr) => {
        $crate::inventory::submit! { $kind }
    };
}

/// The kind of experiment the config text declares (`kind = "…"`, default `control`); an
/// unknown kind is a config error naming the registered ones. `path` is for messages.
pub fn kind_of(text: &str, path: &Path) -> Result<&'static Kind> {
    // A file that is not TOML goes to the control loader, whose error gives the line and column.
    let table: toml::Table = toml::from_str(text).unwrap_or_default();
    let at_kind = |msg: String| Error::Config {
        loc: crate::error::Location {
            file: Some(path.to_path_buf()),
            line_col: None,
            key: Some("kind".into()),
        },
        msg,
        hint: None,
    };
    let name = match table.get("kind") {
        None => "control",
        Some(toml::Value::String(s)) => s.as_str(),
        Some(v) => {
            return Err(at_kind(format!(
                "expected a string naming the experiment kind, found {v}"
            )))
        }
    };
    let all = kinds();
    if let Some(k) = all.iter().find(|k| k.name == name) {
        return Ok(k);
    }
    let known: Vec<&str> = all.iter().map(|k| k.name).collect();
    let hint = crate::registry::nearest(name, &known)
        .map(|n| format!(" (did you mean `{n}`?)"))
        .unwrap_or_default();
    Err(at_kind(format!(
        "unknown experiment kind `{name}`{hint}; known kinds: {}",
        known.join(", ")
    )))
}

/// The kind of the config file at `path` (read errors name the file).
pub fn kind_of_file(path: &Path) -> Result<&'static Kind> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
        loc: crate::error::Location {
            file: Some(path.to_path_buf()),
            ..Default::default()
        },
        msg: format!("cannot read the config file: {e}"),
        hint: Some("check the path; configs live in configs/".into()),
    })?;
    kind_of(&text, path)
}

/// Every registered experiment kind, by name.
pub fn kinds() -> Vec<&'static Kind> {
    let mut v: Vec<&'static Kind> = inventory::iter::<Kind>.into_iter().collect();
    v.sort_by_key(|k| k.name);
    v
}

/// The run's own preferences (not the ratio sweep's): where the domain writes its data files and
/// logs its statistics.
pub struct MainRun<'a> {
    /// The run directory.
    pub run: &'a RunDir,
    /// The run's `metrics.jsonl`.
    pub metrics: &'a mut Metrics,
}

/// The policy stage's plan: `objectives` × `seeds`, `workers` at a time, each `steps` units of
/// progress.
pub struct Plan<'a> {
    /// `[[compare.objectives]]`, in config order.
    pub objectives: Vec<&'a dyn ObjectiveConfig>,
    /// `[compare] seeds`.
    pub seeds: Vec<u64>,
    /// Policies trained at once (1: in order, on the calling thread).
    pub workers: usize,
    /// Progress units one policy reports (its PPO updates or steps).
    pub steps: usize,
}

/// What one MaxMin-RLHF domain supplies to [`run`].
pub trait Domain: Sync {
    /// One trained policy's evaluation, written to its `result.json` and reused on resume.
    type Result: Serialize + DeserializeOwned + Send;
    /// What every policy job reads (the learned rewards in the domain's form, calibrations).
    type Shared: Sync;

    /// The reward stage's settings.
    fn settings(&self) -> Result<Settings<'_>>;

    /// Group shares of the configured population (the main run's).
    fn shares(&self) -> Vec<f64>;

    /// `[em] ratio-sweep`: majority:minority ratios to rerun stages 1–2 at (empty: none).
    fn ratio_sweep(&self) -> Vec<f64>;

    /// Stage 1: comparisons labelled by users at group `shares`, encoded. `main` is set for the
    /// run's own preferences (write them under the run directory, log statistics) and unset for
    /// the ratio sweep's, which must be labelled the same way at other shares.
    fn comparisons(
        &mut self,
        shares: &[f64],
        main: Option<MainRun<'_>>,
        progress: &mut dyn Progress,
    ) -> Result<StageData>;

    /// After stage 2: save the main run's models and write the stage's own outputs.
    fn rewards_learned(&mut self, run: &RunDir, main: &Outcome, sweep: &[SweepRow]) -> Result<()>;

    /// The policy stage's plan; `None` when the config stops after the reward models.
    fn plan(&self) -> Option<Plan<'_>>;

    /// Build what the policy jobs share from the main run's learned models.
    fn prepare(
        &self,
        ensemble: RewardEnsemble,
        main: &Outcome,
        run: &RunDir,
        progress: &mut dyn Progress,
    ) -> Result<Self::Shared>;

    /// Train one policy for `objective` with `seed` and evaluate each group's ground truth on
    /// it. `dir` is the policy's directory (created); the domain may keep metrics and
    /// checkpoints there and continue from them.
    fn train(
        &self,
        shared: &Self::Shared,
        objective: &dyn ObjectiveConfig,
        seed: u64,
        dir: &Path,
        progress: &mut dyn Progress,
    ) -> Result<Self::Result>;

    /// Stage 4: write `summary.json` and `report.md`.
    fn finish(
        &self,
        run: &RunDir,
        main: &Outcome,
        sweep: &[SweepRow],
        policies: Option<(&Self::Shared, &[Self::Result])>,
    ) -> Result<()>;
}

/// Run the pipeline in `run` (created or reopened by the caller, `config.resolved.toml` written).
pub fn run<D: Domain>(domain: &mut D, run: &RunDir, progress: &mut dyn Progress) -> Result<()> {
    let interrupt_dir = run.checkpoints();
    // Stages 1–2 take seconds to minutes: a resumed run restarts them from the beginning
    // (deterministic, so they end where an uninterrupted run would).
    let mut metrics = Metrics::open(&run.file("metrics.jsonl"), 0)?;
    let shares = domain.shares();
    let data = domain.comparisons(
        &shares,
        Some(MainRun {
            run,
            metrics: &mut metrics,
        }),
        progress,
    )?;
    let mut main = {
        let settings = domain.settings()?;
        let hooks = EmHooks {
            log: Some(&mut metrics),
            progress: &mut *progress,
            interrupt_dir: &interrupt_dir,
        };
        stage::learn(&settings, &data, &shares, hooks)?
    };
    drop(data);
    metrics.sync()?;
    let sweep = ratio_sweep(domain, &interrupt_dir, progress)?;
    domain.rewards_learned(run, &main, &sweep)?;
    let ensemble = main
        .ensemble
        .take()
        .ok_or_else(|| Error::Internal("the reward stage returned no models".into()))?;
    let d: &D = domain;
    if d.plan().is_none() {
        return d.finish(run, &main, &sweep, None);
    }
    let shared = d.prepare(ensemble, &main, run, progress)?;
    let plan = d
        .plan()
        .ok_or_else(|| Error::Internal("the policy plan disappeared".into()))?;
    let jobs: Vec<(&dyn ObjectiveConfig, u64)> = plan
        .objectives
        .iter()
        .flat_map(|&o| plan.seeds.iter().map(move |&s| (o, s)))
        .collect();
    let train = |(objective, seed): (&dyn ObjectiveConfig, u64), p: &mut dyn Progress| {
        train_or_reuse(d, &shared, objective, seed, &run.path, p)
    };
    let results = run_jobs(&jobs, plan.workers, plan.steps, train, progress)?;
    d.finish(run, &main, &sweep, Some((&shared, &results)))
}

/// `[em] ratio-sweep`: stages 1–2 again at shares r/(r+1), 1/(r+1) per ratio r (the same users'
/// seeds; only the shares change).
fn ratio_sweep<D: Domain>(
    domain: &mut D,
    interrupt_dir: &Path,
    progress: &mut dyn Progress,
) -> Result<Vec<SweepRow>> {
    let mut rows = Vec::new();
    for r in domain.ratio_sweep() {
        tracing::info!("ratio sweep: {r}:1");
        let shares = [r / (r + 1.0), 1.0 / (r + 1.0)];
        let data = domain.comparisons(&shares, None, progress)?;
        let settings = domain.settings()?;
        let hooks = EmHooks {
            log: None,
            progress: &mut *progress,
            interrupt_dir,
        };
        let mut outcome = stage::learn(&settings, &data, &shares, hooks)?;
        outcome.ensemble = None;
        rows.push(SweepRow { ratio: r, outcome });
    }
    Ok(rows)
}

/// A policy's directory name: `<objective label>__seed<s>`, the label's characters other than
/// ASCII letters, digits and `-` replaced by `_`.
pub fn policy_tag(label: &str, seed: u64) -> String {
    let clean: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{clean}__seed{seed}")
}

/// One policy: its finished `result.json` if there is one (a resumed run), else trained by the
/// domain, with the result written atomically.
fn train_or_reuse<D: Domain>(
    domain: &D,
    shared: &D::Shared,
    objective: &dyn ObjectiveConfig,
    seed: u64,
    run_dir: &Path,
    progress: &mut dyn Progress,
) -> Result<D::Result> {
    let label = objective.label();
    let tag = policy_tag(&label, seed);
    let dir = run_dir.join("policies").join(&tag);
    let done = dir.join("result.json");
    if let Some(r) = std::fs::read_to_string(&done)
        .ok()
        .and_then(|t| serde_json::from_str::<D::Result>(&t).ok())
    {
        tracing::info!("{tag}: finished earlier, reusing its result");
        return Ok(r);
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    tracing::info!("training {label} (seed {seed})");
    let r = domain.train(shared, objective, seed, &dir, progress)?;
    write_json_atomic(&done, &r)?;
    Ok(r)
}

/// Run `jobs` on `workers` threads (in order when `workers` is 1), results in job order. Each
/// job reports `steps` units of progress; with several workers they add up on one shared stage.
/// After the first error no new job starts; the running ones finish (or, on Ctrl-C, checkpoint)
/// and the error of the earliest failed job is returned.
///
/// With several workers each one runs its jobs inside its own rayon pool of
/// [`threads_per_worker`] threads, so the data parallelism inside a job (candle's element-wise
/// ops, our kernels) stays on that worker's share of the cores instead of every job's
/// operations competing for the one global pool. candle's matrix products choose their threads
/// from `RAYON_NUM_THREADS` on every call instead; the `maxmin run` binary sets it to 1 for them
/// (src/main.rs, docs/lm-rlhf.md "Speed"). Results do not depend on either: no kernel here
/// changes its arithmetic with the thread count (the tests compare thread counts).
pub fn run_jobs<J: Copy + Sync, R: Send>(
    jobs: &[J],
    workers: usize,
    steps: usize,
    run: impl Fn(J, &mut dyn Progress) -> Result<R> + Sync,
    progress: &mut dyn Progress,
) -> Result<Vec<R>> {
    if workers <= 1 {
        return jobs.iter().map(|&j| run(j, progress)).collect();
    }
    tracing::info!("training {} policies, {workers} at a time", jobs.len());
    progress.start("policies", (jobs.len() * steps) as u64, 0);
    let shared = Mutex::new((progress, 0u64));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let out: Vec<Mutex<Option<Result<R>>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    let per_worker = threads_per_worker(workers);
    let work = || loop {
        let i = next.fetch_add(1, Ordering::SeqCst);
        if i >= jobs.len() || failed.load(Ordering::SeqCst) {
            break;
        }
        let mut tick = SharedTick {
            shared: &shared,
            done: 0,
            stage: String::new(),
        };
        let r = run(jobs[i], &mut tick);
        if r.is_err() {
            failed.store(true, Ordering::SeqCst);
        }
        *out[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    };
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                match rayon::ThreadPoolBuilder::new()
                    .num_threads(per_worker)
                    .thread_name(|i| format!("maxmin-job-{i}"))
                    .build()
                {
                    Ok(pool) => pool.install(work),
                    // No pool of its own (out of threads): the global one, slower but correct.
                    Err(e) => {
                        tracing::warn!(
                            "policy worker: no thread pool of its own ({e}); sharing the global one"
                        );
                        work()
                    }
                }
            });
        }
    });
    shared
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .0
        .finish();
    let mut results = Vec::with_capacity(jobs.len());
    for slot in out {
        if let Some(r) = slot.into_inner().unwrap_or_else(|e| e.into_inner()) {
            results.push(r?);
        }
    }
    if results.len() != jobs.len() {
        return Err(Error::Internal("a policy job did not run".into()));
    }
    Ok(results)
}

/// Threads each of `workers` policy workers gets: the global rayon pool's threads (one per
/// core unless the program or `RAYON_NUM_THREADS` chose otherwise) split evenly, at least one.
pub fn threads_per_worker(workers: usize) -> usize {
    (rayon::current_num_threads() / workers.max(1)).max(1)
}

/// One worker's view of the shared progress stage: its steps add to the total, and its message
/// (objective, seed, KL, score) is shown as the latest.
struct SharedTick<'a, 'p> {
    shared: &'a Mutex<(&'p mut dyn Progress, u64)>,
    done: u64,
    stage: String,
}

impl Progress for SharedTick<'_, '_> {
    fn start(&mut self, stage: &str, _total: u64, done: u64) {
        self.stage = stage.to_string();
        self.update(done, "starting");
    }
    fn update(&mut self, done: u64, msg: &str) {
        let mut g = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        g.1 += done.saturating_sub(self.done);
        self.done = self.done.max(done);
        let total = g.1;
        g.0.update(total, &format!("{}: {msg}", self.stage));
    }
    fn finish(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::NoProgress;

    #[test]
    fn policy_tags_are_file_names() {
        assert_eq!(policy_tag("maxmin", 3), "maxmin__seed3");
        assert_eq!(policy_tag("softmin(τ=0.1)", 1), "softmin___0_1___seed1");
    }

    #[test]
    fn kinds_dispatch_on_the_kind_key() {
        let p = Path::new("x.toml");
        assert_eq!(kind_of("name = \"a\"\n", p).unwrap().name, "control");
        assert_eq!(kind_of("kind = \"control\"\n", p).unwrap().name, "control");
        let e = kind_of("kind = \"contrl\"\n", p).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = e.to_string();
        assert!(
            e.contains("x.toml") && e.contains("`kind`") && e.contains("did you mean `control`"),
            "{e}"
        );
        let e = kind_of("kind = 3\n", p).unwrap_err().to_string();
        assert!(e.contains("expected a string"), "{e}");
    }

    #[test]
    fn parallel_jobs_run_in_their_workers_own_pools() {
        // Inside a job, rayon's parallelism is the worker's share, not the global pool: with
        // as many workers as the global pool has threads, each job sees one thread.
        let global = rayon::current_num_threads();
        let jobs: Vec<usize> = (0..4).collect();
        for w in [2, global.max(2), 2 * global + 1] {
            let seen = run_jobs(
                &jobs,
                w,
                1,
                |_, _| Ok(rayon::current_num_threads()),
                &mut NoProgress,
            )
            .unwrap();
            assert!(
                seen.iter().all(|&n| n == threads_per_worker(w)),
                "workers {w}: {seen:?}"
            );
        }
        assert_eq!(threads_per_worker(global), 1);
        assert_eq!(threads_per_worker(2 * global + 1), 1);
        assert_eq!(threads_per_worker(1), global);
    }

    /// Results come back in job order whatever the worker count, and an error stops new jobs and
    /// is returned.
    #[test]
    fn jobs_keep_order_and_report_errors() {
        let jobs: Vec<usize> = (0..7).collect();
        for w in [1, 2, 3] {
            let r = run_jobs(&jobs, w, 1, |j, _| Ok(j * 10), &mut NoProgress).unwrap();
            assert_eq!(r, vec![0, 10, 20, 30, 40, 50, 60], "workers {w}");
            let e = run_jobs(
                &jobs,
                w,
                1,
                |j, _| {
                    if j == 4 {
                        Err(Error::Internal("job 4".into()))
                    } else {
                        Ok(j)
                    }
                },
                &mut NoProgress,
            )
            .unwrap_err();
            assert!(e.to_string().contains("job 4"), "{e}");
        }
    }
}
