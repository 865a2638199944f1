//! Preferences from a population of users, Bradley–Terry reward models and the EM reward
//! mixture (docs/algorithms.md "Setup" and "EM for a mixture of reward models"; docs/architecture.md stages 1–3).
//!
//! - [`population`]: `[population]`, K groups with shares and ground-truth rewards, users;
//! - [`group_reward`]: the `GroupRewardConfig` plugin point (ground-truth scorers);
//! - [`simulate`]: `[preferences]`, segments from a behaviour policy labelled per user (BT);
//! - [`data`]: the JSONL preference format, streaming reader and writer;
//! - [`reward_model`]: `[reward-model]` plugins (`mlp-reward`, `linear-reward`) and BT training;
//! - [`em`]: `[em]`, the single pooled model, the EM mixture and the [`em::RewardEnsemble`] a
//!   policy trainer consumes;
//! - [`diagnostics`]: ARI, purity, cluster ↔ group matching;
//! - [`outcome`]: what the stage produces (its report's input);
//! - [`stage`]: the pipeline stage `maxmin run` executes when `[population]` is present;
//! - [`report`]: `report.md` and SVG plots of the stage.

pub mod data;
pub mod diagnostics;
pub mod em;
pub mod group_reward;
pub mod outcome;
pub mod population;
pub mod report;
pub mod reward_model;
pub mod simulate;
pub mod stage;

pub use em::{EmConfig, RewardEnsemble};
pub use group_reward::{GroupReward, GroupRewardConfig};
pub use population::PopulationConfig;
pub use reward_model::RewardModel;
pub use simulate::PreferencesConfig;
