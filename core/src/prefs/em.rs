//! The single pooled reward model (the RLHF baseline) and the EM mixture of K Bradley–Terry
//! reward models (docs/algorithms.md "EM for a mixture of reward models", the paper's Algorithm 2).
//!
//! As in the paper: users (not comparisons) are clustered; the hard E-step assigns user h to
//! `argmax_u Σ_{pairs of h} log σ(r_u(y_w) − r_u(y_l))` (no mixing weights), the M-step trains
//! each r_u on its users' pairs warm-started from the previous iteration (`m-step-epochs`, 10 in
//! the released code), the first assignment is `h mod K` (released code), and an empty cluster
//! keeps its model (skipped).
//!
//! Our additions (each a config key): a soft E-step with responsibilities and mixing weights
//! (`e-step = "soft"`); several restarts keeping the best training log-likelihood (`restarts`,
//! restarts after the first start from random assignments); choosing K by held-out likelihood
//! (`select-k`, skipping fits that end with an empty cluster and preferring the smaller K
//! within `select-k-margin` nats); stopping when assignments stop changing with a cap (`max-iterations`, the
//! released code always ran 10); empty clusters either skipped (paper) or reseeded with the
//! worst-fitting user (`empty-clusters = "reseed"`), counted and reported either way.
//!
//! The per-user × per-group log-likelihood is [`crate::ops::bt_estep`] (CPU here; the same op
//! has a CUDA kernel).

use super::diagnostics::{ari, purity};
use super::reward_model::{Encoded, Features, RewardModel, RewardSpec};
use crate::device::Device;
use crate::error::{check, Error, Result};
use crate::ops::bt_estep::{bt_estep, Comparisons};
use crate::rng::{stream, Rng};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// Hard or soft E-step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EStep {
    /// Each user goes to the cluster with the highest likelihood (the paper).
    #[default]
    Hard,
    /// Responsibilities ∝ π_k · likelihood, mixing weights π_k = mean responsibility (ours).
    Soft,
}

/// First assignment of the first restart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    /// User h → h mod K (the released code).
    #[default]
    Modulo,
    /// Users shuffled, then i mod K (balanced random).
    Random,
}

/// What to do with a cluster no user is assigned to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EmptyClusters {
    /// Keep its model untrained this iteration (the paper's "skip empty clusters").
    #[default]
    Skip,
    /// Move the worst-fitting user of a cluster with several users into it (ours).
    Reseed,
}

/// `[em]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EmConfig {
    /// Number of groups K (used unless `select-k` is given).
    #[serde(default = "d_k")]
    pub k: usize,
    /// Candidate K values; the one with the best held-out likelihood is used (ours).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub select_k: Vec<usize>,
    /// With `select-k`: nats of held-out log-likelihood a larger K must gain over a smaller one.
    #[serde(default = "d_margin")]
    pub select_k_margin: f64,
    /// Hard (paper) or soft E-step.
    #[serde(default)]
    pub e_step: EStep,
    /// First assignment of the first restart.
    #[serde(default)]
    pub init: Init,
    /// EM runs from different starts; the best training log-likelihood wins.
    #[serde(default = "d_restarts")]
    pub restarts: usize,
    /// Iteration cap (EM stops earlier when no assignment changes).
    #[serde(default = "d_iters")]
    pub max_iterations: usize,
    /// Epochs of each warm-started M-step.
    #[serde(default = "d_m_epochs")]
    pub m_step_epochs: usize,
    /// Empty-cluster handling.
    #[serde(default)]
    pub empty_clusters: EmptyClusters,
    /// After EM, train each cluster's model afresh on its final users (weighted by the
    /// responsibilities) for `[reward-model] epochs`, as the true-split model is trained (ours).
    /// EM's own models were warm-started from fits to mixed clusters and saw only
    /// `m-step-epochs` on the final ones; off (`false`) keeps them, as the paper does.
    #[serde(default)]
    pub refit: bool,
    /// Also train the oracle: one model per true group on the true split.
    #[serde(default = "d_true")]
    pub oracle: bool,
    /// Majority:minority ratios r (shares r/(r+1), 1/(r+1) for two groups) at which to rerun
    /// the stage for the report's ratio table and plot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ratio_sweep: Vec<f64>,
}

fn d_k() -> usize {
    2
}
fn d_margin() -> f64 {
    2.0
}
fn d_restarts() -> usize {
    3
}
fn d_iters() -> usize {
    20
}
fn d_m_epochs() -> usize {
    10
}
fn d_true() -> bool {
    true
}

impl Default for EmConfig {
    fn default() -> Self {
        Self {
            k: d_k(),
            select_k: vec![],
            select_k_margin: d_margin(),
            e_step: EStep::Hard,
            init: Init::Modulo,
            restarts: d_restarts(),
            max_iterations: d_iters(),
            m_step_epochs: d_m_epochs(),
            empty_clusters: EmptyClusters::Skip,
            refit: false,
            oracle: true,
            ratio_sweep: vec![],
        }
    }
}

impl EmConfig {
    /// Check values; keys relative to `[em]`.
    pub fn validate(&self) -> Result<()> {
        check::positive_usize("k", self.k)?;
        for (i, k) in self.select_k.iter().enumerate() {
            check::positive_usize(&format!("select-k.{i}"), *k)?;
        }
        check::non_negative_f64("select-k-margin", self.select_k_margin)?;
        check::positive_usize("restarts", self.restarts)?;
        check::positive_usize("max-iterations", self.max_iterations)?;
        check::positive_usize("m-step-epochs", self.m_step_epochs)?;
        for (i, r) in self.ratio_sweep.iter().enumerate() {
            if !(r.is_finite() && *r >= 1.0) {
                return Err(Error::config(
                    format!("ratio-sweep.{i}"),
                    format!("expected a ratio ≥ 1 (majority : minority), found {r}"),
                ));
            }
        }
        Ok(())
    }
}

/// Comparisons grouped by user.
#[derive(Debug)]
pub struct UserData {
    /// The encoded comparisons.
    pub data: Encoded,
    /// User index of each comparison.
    pub user_of: Vec<u32>,
    /// Comparison indices of each user.
    pub rows_of: Vec<Vec<usize>>,
    /// True group of each user, when known.
    pub truth: Option<Vec<usize>>,
}

impl UserData {
    /// Build from per-comparison user indices.
    pub fn new(
        data: Encoded,
        user_of: Vec<u32>,
        n_users: usize,
        truth: Option<Vec<usize>>,
    ) -> Self {
        let mut rows_of = vec![Vec::new(); n_users];
        for (i, &u) in user_of.iter().enumerate() {
            rows_of[u as usize].push(i);
        }
        Self {
            data,
            user_of,
            rows_of,
            truth,
        }
    }

    /// Number of users.
    pub fn users(&self) -> usize {
        self.rows_of.len()
    }
}

/// `[users, K]` log-likelihoods (row-major, f64) of each user's comparisons under each model.
pub fn user_log_likelihood(models: &[RewardModel], ud: &UserData) -> Result<Vec<f64>> {
    let k = models.len();
    let m = ud.data.m;
    let mut chosen = vec![0f32; m * k];
    for (j, model) in models.iter().enumerate() {
        for (i, d) in model.diffs(&ud.data)?.into_iter().enumerate() {
            chosen[i * k + j] = d;
        }
    }
    let rejected = vec![0f32; m * k];
    let ll = bt_estep(
        &Device::Cpu,
        &Comparisons {
            r_chosen: &chosen,
            r_rejected: &rejected,
            user: &ud.user_of,
            k,
            users: ud.users(),
        },
    )?;
    Ok(ll.into_iter().map(|x| x as f64).collect())
}

fn logsumexp(xs: &[f64]) -> f64 {
    let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + xs.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// Diagnostics of one EM iteration.
#[derive(Debug, Clone, Serialize)]
pub struct IterStats {
    /// K of this fit.
    pub k: usize,
    /// Restart index.
    pub restart: usize,
    /// Iteration (1-based; each is one E-step, then an M-step unless EM stopped).
    pub iteration: usize,
    /// Training log-likelihood (hard: of the assignment; soft: of the mixture).
    pub log_likelihood: f64,
    /// Users whose cluster changed.
    pub assignment_changes: usize,
    /// Users per cluster.
    pub group_sizes: Vec<usize>,
    /// Clusters without users.
    pub empty_clusters: usize,
    /// Purity against the true groups, when known.
    pub purity: Option<f64>,
    /// Adjusted Rand index against the true groups, when known.
    pub ari: Option<f64>,
}

impl IterStats {
    /// The `metrics.jsonl` line of this iteration at `global_step`.
    pub fn metrics_line(&self, global_step: u64) -> serde_json::Value {
        serde_json::json!({
            "global_step": global_step, "em/k": self.k, "em/restart": self.restart,
            "em/iteration": self.iteration, "em/log_likelihood": self.log_likelihood,
            "em/assignment_changes": self.assignment_changes, "em/group_sizes": self.group_sizes,
            "em/empty_clusters": self.empty_clusters, "em/purity": self.purity, "em/ari": self.ari,
        })
    }
}

/// A fitted mixture.
#[derive(Debug)]
pub struct MixtureFit {
    /// The K reward models.
    pub models: Vec<RewardModel>,
    /// Cluster of each training user.
    pub assign: Vec<usize>,
    /// Responsibilities `[users][K]` (one-hot for the hard E-step).
    pub resp: Vec<Vec<f64>>,
    /// Mixing weights (cluster shares for the hard E-step).
    pub weights: Vec<f64>,
    /// Final training log-likelihood.
    pub log_likelihood: f64,
    /// Iterations of the winning restart.
    pub iterations: usize,
    /// Whether the winning restart stopped because no assignment changed.
    pub converged: bool,
    /// Index of the winning restart.
    pub restart: usize,
    /// Final log-likelihood of every restart.
    pub restart_log_likelihoods: Vec<f64>,
    /// Iterations of all restarts.
    pub history: Vec<IterStats>,
    /// Empty clusters met (summed over iterations and restarts).
    pub empty_events: usize,
}

/// Train one model from scratch on `rows`.
pub fn fit_model(
    ud: &UserData,
    rows: &[usize],
    spec: &RewardSpec,
    feats: &Features,
    rng: &mut Rng,
) -> Result<RewardModel> {
    let mut m = RewardModel::new(&spec.hidden, feats.clone(), rng)?;
    m.train(&ud.data, rows, None, &spec.train, spec.train.epochs, rng)?;
    Ok(m)
}

/// Comparison rows of cluster `k`'s users and a per-comparison weight (its user's
/// responsibility; 0 elsewhere).
fn cluster_rows(ud: &UserData, resp: &[Vec<f64>], k: usize) -> (Vec<usize>, Vec<f32>) {
    let mut rows = Vec::new();
    let mut w = vec![0f32; ud.data.m];
    for (h, r) in resp.iter().enumerate() {
        // Responsibilities this small change nothing but cost time.
        if r[k] > 1e-4 {
            rows.extend_from_slice(&ud.rows_of[h]);
            for &i in &ud.rows_of[h] {
                w[i] = r[k] as f32;
            }
        }
    }
    (rows, w)
}

fn m_step(
    models: &mut [RewardModel],
    ud: &UserData,
    resp: &[Vec<f64>],
    spec: &RewardSpec,
    epochs: usize,
    rng: &mut Rng,
) -> Result<()> {
    for (k, model) in models.iter_mut().enumerate() {
        let (rows, w) = cluster_rows(ud, resp, k);
        if rows.is_empty() {
            continue;
        }
        model.train(&ud.data, &rows, Some(&w), &spec.train, epochs, rng)?;
    }
    Ok(())
}

/// The state of one EM restart, updated in place by each iteration.
struct RestartState {
    models: Vec<RewardModel>,
    assign: Vec<usize>,
    resp: Vec<Vec<f64>>,
    weights: Vec<f64>,
}

/// How a restart ended.
struct RestartEnd {
    log_likelihood: f64,
    iterations: usize,
    converged: bool,
}

/// What the restarts of one fit accumulate for [`MixtureFit`].
#[derive(Default)]
struct Trace {
    history: Vec<IterStats>,
    restart_lls: Vec<f64>,
    empty_events: usize,
}

/// The fixed inputs of one EM fit with K clusters.
struct Em<'a> {
    ud: &'a UserData,
    k: usize,
    spec: &'a RewardSpec,
    cfg: &'a EmConfig,
}

impl Em<'_> {
    /// User `h`'s log-likelihoods under the K models, from [`user_log_likelihood`]'s `ll`.
    fn row<'l>(&self, ll: &'l [f64], h: usize) -> &'l [f64] {
        &ll[h * self.k..(h + 1) * self.k]
    }

    /// The first assignment (`h mod K` for restart 0 with `init = "modulo"`, else a seeded
    /// shuffle dealt round-robin), fresh models, and one M-step on it.
    fn start(&self, restart: usize, feats: &Features, rng: &mut Rng) -> Result<RestartState> {
        let (n, k) = (self.ud.users(), self.k);
        let assign: Vec<usize> = if restart == 0 && self.cfg.init == Init::Modulo {
            (0..n).map(|h| h % k).collect()
        } else {
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(rng);
            let mut a = vec![0; n];
            for (i, h) in order.into_iter().enumerate() {
                a[h] = i % k;
            }
            a
        };
        let resp: Vec<Vec<f64>> = assign.iter().map(|&a| one_hot(a, k)).collect();
        let weights = vec![1.0 / k as f64; k];
        let mut models = (0..k)
            .map(|_| RewardModel::new(&self.spec.hidden, feats.clone(), rng))
            .collect::<Result<Vec<_>>>()?;
        m_step(
            &mut models,
            self.ud,
            &resp,
            self.spec,
            self.cfg.m_step_epochs,
            rng,
        )?;
        Ok(RestartState {
            models,
            assign,
            resp,
            weights,
        })
    }

    /// Iterate E- and M-steps until the assignment is stable or `max-iterations`.
    fn iterate(
        &self,
        st: &mut RestartState,
        restart: usize,
        rng: &mut Rng,
        trace: &mut Trace,
        on_iter: &mut dyn FnMut(&IterStats) -> Result<()>,
    ) -> Result<RestartEnd> {
        let (k, cfg) = (self.k, self.cfg);
        let mut end = RestartEnd {
            log_likelihood: f64::NEG_INFINITY,
            iterations: 0,
            converged: false,
        };
        for it in 1..=cfg.max_iterations {
            let ll = user_log_likelihood(&st.models, self.ud)?;
            let old = st.assign.clone();
            let old_resp = st.resp.clone();
            self.e_step(st, &ll);
            let mut sizes = vec![0usize; k];
            for &a in &st.assign {
                sizes[a] += 1;
            }
            let empty = sizes.iter().filter(|&&s| s == 0).count();
            trace.empty_events += empty;
            if empty > 0 && cfg.empty_clusters == EmptyClusters::Reseed {
                self.reseed_empty(st, &mut sizes, &ll);
            }
            end.log_likelihood = self.update_weights(st, &sizes, &ll);
            let changes = st.assign.iter().zip(&old).filter(|(a, b)| a != b).count();
            let stats = IterStats {
                k,
                restart,
                iteration: it,
                log_likelihood: end.log_likelihood,
                assignment_changes: changes,
                group_sizes: sizes.clone(),
                empty_clusters: sizes.iter().filter(|&&s| s == 0).count(),
                purity: self.ud.truth.as_ref().map(|t| purity(&st.assign, t)),
                ari: self.ud.truth.as_ref().map(|t| ari(&st.assign, t)),
            };
            on_iter(&stats)?;
            trace.history.push(stats);
            end.iterations = it;
            let resp_moved = old_resp
                .iter()
                .zip(&st.resp)
                .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
                .fold(0f64, f64::max);
            let stable = changes == 0 && (cfg.e_step == EStep::Hard || resp_moved < 1e-3);
            if stable && it > 1 {
                end.converged = true;
                break;
            }
            if it < cfg.max_iterations {
                m_step(
                    &mut st.models,
                    self.ud,
                    &st.resp,
                    self.spec,
                    cfg.m_step_epochs,
                    rng,
                )?;
            }
        }
        Ok(end)
    }

    /// Assign each user (hard: the best model; soft: responsibilities ∝ π_k · likelihood).
    fn e_step(&self, st: &mut RestartState, ll: &[f64]) {
        match self.cfg.e_step {
            EStep::Hard => {
                for (h, a) in st.assign.iter_mut().enumerate() {
                    *a = argmax(self.row(ll, h));
                }
            }
            EStep::Soft => {
                let lw: Vec<f64> = st.weights.iter().map(|w| w.max(1e-300).ln()).collect();
                for h in 0..self.ud.users() {
                    let s: Vec<f64> = self
                        .row(ll, h)
                        .iter()
                        .zip(&lw)
                        .map(|(a, b)| a + b)
                        .collect();
                    let z = logsumexp(&s);
                    st.resp[h] = s.iter().map(|x| (x - z).exp()).collect();
                    st.assign[h] = argmax(&st.resp[h]);
                }
            }
        }
    }

    /// Give each empty cluster the worst-fitting user (per comparison) of a cluster that can
    /// spare one; `sizes` follows.
    fn reseed_empty(&self, st: &mut RestartState, sizes: &mut [usize], ll: &[f64]) {
        let (n, k) = (self.ud.users(), self.k);
        let assign = &mut st.assign;
        for c in 0..k {
            if sizes[c] > 0 {
                continue;
            }
            let worst = (0..n).filter(|&h| sizes[assign[h]] > 1).min_by(|&a, &b| {
                let fa = self.row(ll, a)[assign[a]] / self.ud.rows_of[a].len().max(1) as f64;
                let fb = self.row(ll, b)[assign[b]] / self.ud.rows_of[b].len().max(1) as f64;
                fa.total_cmp(&fb)
            });
            if let Some(h) = worst {
                sizes[assign[h]] -= 1;
                assign[h] = c;
                sizes[c] += 1;
                if self.cfg.e_step == EStep::Soft {
                    st.resp[h] = one_hot(c, k);
                }
            }
        }
    }

    /// Update responsibilities (hard) and mixing weights after the E-step; returns the training
    /// log-likelihood (hard: of the assignment; soft: of the mixture under the old weights).
    fn update_weights(&self, st: &mut RestartState, sizes: &[usize], ll: &[f64]) -> f64 {
        let (n, k) = (self.ud.users(), self.k);
        if self.cfg.e_step == EStep::Hard {
            st.resp = st.assign.iter().map(|&a| one_hot(a, k)).collect();
            st.weights = sizes.iter().map(|&s| s as f64 / n as f64).collect();
            (0..n).map(|h| self.row(ll, h)[st.assign[h]]).sum()
        } else {
            let ll_total = (0..n)
                .map(|h| {
                    let s: Vec<f64> = self
                        .row(ll, h)
                        .iter()
                        .zip(&st.weights)
                        .map(|(a, w)| a + w.max(1e-300).ln())
                        .collect();
                    logsumexp(&s)
                })
                .sum();
            st.weights = (0..k)
                .map(|c| st.resp.iter().map(|r| r[c]).sum::<f64>() / n as f64)
                .collect();
            ll_total
        }
    }
}

/// Run EM with K clusters (all restarts); `on_iter` sees every iteration (metrics, interrupt).
pub fn fit_mixture(
    ud: &UserData,
    k: usize,
    spec: &RewardSpec,
    feats: &Features,
    cfg: &EmConfig,
    seed: u64,
    on_iter: &mut dyn FnMut(&IterStats) -> Result<()>,
) -> Result<MixtureFit> {
    let n = ud.users();
    if k > n {
        return Err(Error::input(
            format!("EM with K = {k} groups needs at least {k} users with comparisons, found {n}"),
            Some("lower [em] k or add users".into()),
        ));
    }
    let em = Em { ud, k, spec, cfg };
    let mut best: Option<MixtureFit> = None;
    let mut trace = Trace::default();
    for restart in 0..cfg.restarts {
        let mut rng = stream(seed, &format!("em/k{k}/restart{restart}"));
        let mut st = em.start(restart, feats, &mut rng)?;
        let end = em.iterate(&mut st, restart, &mut rng, &mut trace, on_iter)?;
        let RestartEnd {
            log_likelihood: ll_total,
            iterations,
            converged,
        } = end;
        tracing::info!("EM K={k} restart {restart}: log-likelihood {ll_total:.2} after {iterations} iterations (converged: {converged})");
        trace.restart_lls.push(ll_total);
        if best.as_ref().is_none_or(|b| ll_total > b.log_likelihood) {
            best = Some(MixtureFit {
                models: st.models,
                assign: st.assign,
                resp: st.resp,
                weights: st.weights,
                log_likelihood: ll_total,
                iterations,
                converged,
                restart,
                restart_log_likelihoods: vec![],
                history: vec![],
                empty_events: 0,
            });
        }
    }
    let mut best = best.ok_or_else(|| Error::Internal("EM ran no restart".into()))?;
    if cfg.refit {
        let mut rng = stream(seed, &format!("em/k{k}/refit"));
        for (c, model) in best.models.iter_mut().enumerate() {
            let (rows, w) = cluster_rows(ud, &best.resp, c);
            // An empty cluster keeps EM's model (nothing to refit it on).
            if rows.is_empty() {
                continue;
            }
            let mut fresh = RewardModel::new(&spec.hidden, feats.clone(), &mut rng)?;
            fresh.train(
                &ud.data,
                &rows,
                Some(&w),
                &spec.train,
                spec.train.epochs,
                &mut rng,
            )?;
            *model = fresh;
        }
    }
    best.restart_log_likelihoods = trace.restart_lls;
    best.history = trace.history;
    best.empty_events = trace.empty_events;
    Ok(best)
}

/// Held-out log-likelihood of users under a mixture: Σ_h log Σ_k π_k Π_i σ(d_ik).
pub fn held_out_log_likelihood(
    models: &[RewardModel],
    weights: &[f64],
    ud: &UserData,
) -> Result<f64> {
    let k = models.len();
    let ll = user_log_likelihood(models, ud)?;
    Ok((0..ud.users())
        .filter(|&h| !ud.rows_of[h].is_empty())
        .map(|h| {
            let s: Vec<f64> = ll[h * k..(h + 1) * k]
                .iter()
                .zip(weights)
                .map(|(a, w)| a + w.max(1e-300).ln())
                .collect();
            logsumexp(&s)
        })
        .sum())
}

fn one_hot(a: usize, k: usize) -> Vec<f64> {
    (0..k).map(|c| if c == a { 1.0 } else { 0.0 }).collect()
}

fn argmax(xs: &[f64]) -> usize {
    // Ties go to the lowest index, so the result never depends on float noise in ordering.
    let mut best = 0;
    for (i, x) in xs.iter().enumerate() {
        if *x > xs[best] {
            best = i;
        }
    }
    best
}

/// What a policy trainer needs from the preference stage: the single pooled model, the K
/// mixture models, and each cluster's share of users (its mixing weight).
#[derive(Debug)]
pub struct RewardEnsemble {
    /// The single pooled reward model (RLHF baseline, objective `single`).
    pub single: RewardModel,
    /// The EM mixture's K reward models.
    pub mixture: Vec<RewardModel>,
    /// Share of users in each mixture cluster (weights of the `utilitarian` objective).
    pub shares: Vec<f64>,
}

impl RewardEnsemble {
    /// Rewards of every mixture model for a batch of steps, `[K][n]`.
    pub fn mixture_rewards(&self, obs: &[f32], act: &[f32]) -> Result<Vec<Vec<f32>>> {
        self.mixture
            .iter()
            .map(|m| m.reward_batch(obs, act))
            .collect()
    }

    /// Save every model's weights to one safetensors file (`single.*`, `mixture.<k>.*`) and
    /// the shares beside it in JSON.
    pub fn save(&self, dir: &std::path::Path) -> Result<()> {
        let mut t = self.single.tensors("single");
        for (k, m) in self.mixture.iter().enumerate() {
            t.extend(m.tensors(&format!("mixture.{k}")));
        }
        let bytes = safetensors::serialize(t.iter().map(|(k, v)| (k.as_str(), v)), None)
            .map_err(|e| Error::Internal(format!("cannot serialise reward models: {e}")))?;
        crate::run::write_atomic(&dir.join("reward_models.safetensors"), &bytes)?;
        crate::run::write_json_atomic(
            &dir.join("reward_models.json"),
            &serde_json::json!({ "k": self.mixture.len(), "shares": self.shares }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_and_logsumexp() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
        assert!((logsumexp(&[-1e4, -1e4]) - (-1e4 + 2f64.ln())).abs() < 1e-9);
    }
}

#[cfg(test)]
mod extreme_tests {
    use super::*;
    use crate::env::Space;
    use crate::prefs::data::{Comparison, Segment};
    use crate::prefs::reward_model::Encoded;
    use candle_core::{Device as CDevice, Tensor};
    use std::collections::HashMap;

    /// Features of one scalar observation (and an unused binary action).
    pub(super) fn features_1d() -> Features {
        Features {
            obs_dim: 1,
            action_space: Space::Discrete { n: 2 },
            squares: false,
        }
    }

    /// `user` prefers the one-step segment with observation `chosen` to the one with `rejected`.
    pub(super) fn pair(user: &str, chosen: f32, rejected: f32) -> Comparison {
        let seg = |x: f32| Segment::Rows(vec![vec![x, 0.0]]);
        Comparison {
            user: user.into(),
            context: serde_json::Value::Null,
            chosen: seg(chosen),
            rejected: seg(rejected),
            group: None,
        }
    }

    /// Reward differences of ±1e4: log-likelihoods stay finite and users go to the model that
    /// agrees with them.
    #[test]
    fn huge_reward_differences_give_finite_likelihoods_and_right_assignments() {
        let feats = features_1d();
        let mut cs = Vec::new();
        for (user, sign) in [("a", 1.0f32), ("b", -1.0)] {
            for _ in 0..5 {
                cs.push(pair(user, sign, -sign));
            }
        }
        let refs: Vec<&Comparison> = cs.iter().collect();
        let data = Encoded::new(&refs, &feats).unwrap();
        let ud = UserData::new(
            data,
            vec![0, 0, 0, 0, 0, 1, 1, 1, 1, 1],
            2,
            Some(vec![0, 1]),
        );
        let mut rng = stream(1, "t");
        let mut models = Vec::new();
        for w in [5e3f32, -5e3] {
            let mut m = RewardModel::new(&[], feats.clone(), &mut rng).unwrap();
            let mut t = HashMap::new();
            t.insert(
                "m.l0.weight".to_string(),
                Tensor::new(&[[w, 0.0, 0.0]], &CDevice::Cpu).unwrap(),
            );
            t.insert(
                "m.l0.bias".to_string(),
                Tensor::new(&[0f32], &CDevice::Cpu).unwrap(),
            );
            m.load("m", &t).unwrap();
            models.push(m);
        }
        // d = w·(x_c − x_r) = ±1e4.
        assert_eq!(models[0].diffs(&ud.data).unwrap()[0], 1e4);
        let ll = user_log_likelihood(&models, &ud).unwrap();
        assert!(ll.iter().all(|x| x.is_finite()), "{ll:?}");
        assert!(ll[0].abs() < 1e-3 && ll[1] < -4e4, "{ll:?}");
        assert_eq!((argmax(&ll[0..2]), argmax(&ll[2..4])), (0, 1));
        let h = held_out_log_likelihood(&models, &[0.5, 0.5], &ud).unwrap();
        assert!(h.is_finite() && (h - 2.0 * 0.5f64.ln()).abs() < 1e-3, "{h}");
    }
}

#[cfg(test)]
mod refit_tests {
    use super::extreme_tests::{features_1d, pair};
    use super::*;
    use crate::prefs::data::Comparison;
    use crate::prefs::reward_model::TrainOptions;

    /// Two groups with opposite preferences over a 1-D feature. EM with one-epoch M-steps
    /// leaves its models barely trained; `refit` trains each afresh on its cluster for the full
    /// epochs, so the models separate the groups far more sharply, and the assignment is kept.
    #[test]
    fn refit_trains_each_cluster_model_to_the_full_epochs() {
        let feats = features_1d();
        let (users, per_user) = (8usize, 20usize);
        let mut cs = Vec::new();
        let mut user_of = Vec::new();
        let mut rng = stream(3, "data");
        for h in 0..users {
            let sign = if h % 2 == 0 { 1.0f32 } else { -1.0 };
            for _ in 0..per_user {
                let (a, b) = (
                    rand::Rng::random::<f32>(&mut rng),
                    rand::Rng::random::<f32>(&mut rng),
                );
                let (hi, lo) = if a > b { (a, b) } else { (b, a) };
                let (c, r) = if sign > 0.0 { (hi, lo) } else { (lo, hi) };
                cs.push(pair(&format!("u{h}"), c, r));
                user_of.push(h as u32);
            }
        }
        let refs: Vec<&Comparison> = cs.iter().collect();
        let truth: Vec<usize> = (0..users).map(|h| h % 2).collect();
        let ud = UserData::new(
            Encoded::new(&refs, &feats).unwrap(),
            user_of,
            users,
            Some(truth.clone()),
        );
        let spec = RewardSpec {
            hidden: vec![],
            squares: false,
            train: TrainOptions {
                learning_rate: 0.05,
                epochs: 60,
                batch_size: 16,
            },
        };
        let fit = |refit: bool| {
            let cfg = EmConfig {
                restarts: 1,
                init: Init::Random,
                max_iterations: 3,
                m_step_epochs: 1,
                refit,
                ..EmConfig::default()
            };
            fit_mixture(&ud, 2, &spec, &feats, &cfg, 5, &mut |_| Ok(())).unwrap()
        };
        let (plain, refit) = (fit(false), fit(true));
        assert_eq!(plain.assign, refit.assign, "refit must not move users");
        assert_eq!(ari(&refit.assign, &truth), 1.0);
        // Mean log-likelihood per comparison of each user under its own cluster's model.
        let own_ll = |f: &MixtureFit| {
            let ll = user_log_likelihood(&f.models, &ud).unwrap();
            (0..users).map(|h| ll[h * 2 + f.assign[h]]).sum::<f64>() / (users * per_user) as f64
        };
        let (lp, lr) = (own_ll(&plain), own_ll(&refit));
        assert!(lr > lp + 0.1, "refit {lr} vs EM's models {lp}");
    }
}
