//! Helpers shared by the classic-control environments: action decoding (Gymnasium asserts that
//! an action lies in the action space; so do we), the `max-episode-steps` key, and exact
//! snapshots (floats stored as their bit patterns so a checkpoint written as JSON text restores
//! bit-for-bit).

use maxmin_core::env::Action;
use maxmin_core::error::check;
use maxmin_core::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The index of a discrete action for an environment with `n` actions.
///
/// # Panics
/// If `action` is not `Discrete(i)` with `i < n`: like Gymnasium's `assert action_space.contains`,
/// an action outside the space is a bug in the caller, not a recoverable input error.
#[inline]
pub(crate) fn discrete_action(id: &str, action: Action<'_>, n: usize) -> usize {
    match action {
        Action::Discrete(i) if i < n => i,
        other => panic!("{id}: action {other:?} is outside the action space Discrete({n})"),
    }
}

/// The first component of a one-dimensional continuous action.
///
/// # Panics
/// If `action` is not `Continuous` with exactly one component (see [`discrete_action`]).
#[inline]
pub(crate) fn scalar_action(id: &str, action: Action<'_>) -> f32 {
    match action {
        Action::Continuous([u]) => *u,
        other => panic!("{id}: action {other:?} is not a point of a one-dimensional Box"),
    }
}

/// Validate the `max-episode-steps` key.
pub(crate) fn validate_max_steps(v: usize) -> Result<()> {
    check::positive_usize("max-episode-steps", v)
}

/// `truncated` for a step that brought the episode to `steps` steps: Gymnasium's `TimeLimit`
/// truncates at `steps >= max_steps`; maxmin reports `truncated` only when the episode did not
/// also terminate in that step (an episode ends for one reason, see `StepOutcome::truncated`).
#[inline]
pub(crate) fn time_limit(steps: usize, max_steps: usize, terminated: bool) -> bool {
    !terminated && steps >= max_steps
}

/// Bit patterns of an f64 slice (for exact JSON snapshots).
pub(crate) fn to_bits<const N: usize>(x: &[f64; N]) -> [u64; N] {
    x.map(f64::to_bits)
}

/// Inverse of [`to_bits`].
pub(crate) fn from_bits<const N: usize>(x: &[u64; N]) -> [f64; N] {
    x.map(f64::from_bits)
}

/// Serialise a snapshot struct.
pub(crate) fn snapshot_value<T: Serialize>(t: &T) -> serde_json::Value {
    // Plain structs of numbers and bools always serialise.
    serde_json::to_value(t).unwrap_or(serde_json::Value::Null)
}

/// Parse a snapshot struct, naming the environment on failure.
pub(crate) fn parse_snapshot<T: DeserializeOwned>(id: &str, v: &serde_json::Value) -> Result<T> {
    serde_json::from_value(v.clone()).map_err(|e| {
        Error::input(
            format!("{id}: snapshot does not match this environment: {e}"),
            Some("restore a snapshot taken from the same environment type".into()),
        )
    })
}
