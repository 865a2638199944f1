//! What the reward stage (`stage.rs`) produces and the domains' reports read: the outcome of one
//! run of the stage, and the rows of the ratio sweep.

use super::em::{IterStats, RewardEnsemble};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Held-out accuracy of one kind of model on each true group.
pub type GroupAccuracy = BTreeMap<String, f64>;

/// One run of the stage at given shares.
#[derive(Debug, Serialize)]
pub struct Outcome {
    /// Group shares used.
    pub shares: Vec<f64>,
    /// K used.
    pub k: usize,
    /// ARI of the EM assignment against the true groups.
    pub ari: Option<f64>,
    /// Purity of the EM assignment.
    pub purity: Option<f64>,
    /// EM iterations of the winning restart.
    pub iterations: usize,
    /// Whether it stopped because assignments stopped changing.
    pub converged: bool,
    /// Held-out accuracy per true group: single pooled model.
    pub single: GroupAccuracy,
    /// Held-out accuracy per true group: the mixture model matched to that group.
    pub mixture: GroupAccuracy,
    /// Held-out accuracy per true group: the oracle model trained on that group's users.
    pub oracle: GroupAccuracy,
    /// Held-out accuracy per true group of the group's own ground truth on the same noisy labels
    /// (domains that know their truths' scores of the compared items; empty otherwise).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub truth: GroupAccuracy,
    /// Held-out comparisons per true group.
    #[serde(skip)]
    pub held_out_comparisons: BTreeMap<String, usize>,
    /// The mixture cluster matched to each true group (config order).
    #[serde(skip)]
    pub matching: Vec<Option<usize>>,
    /// Seconds spent on the single model, on EM, and in all.
    #[serde(skip)]
    pub seconds: [f64; 3],
    /// Everything else for `summary.json`.
    pub detail: Value,
    /// EM iterations of every restart (for the report's plot).
    #[serde(skip)]
    pub history: Vec<IterStats>,
    /// The trained models.
    #[serde(skip)]
    pub ensemble: Option<RewardEnsemble>,
}

/// One row of the ratio sweep.
#[derive(Debug, Serialize)]
pub struct SweepRow {
    /// Majority:minority ratio.
    pub ratio: f64,
    /// The stage's outcome at that ratio.
    pub outcome: Outcome,
}
