//! The GAE op's inputs and their checks (what each array means: the module doc of
//! [`super`]). Kept apart from `mod.rs` so that the CPU and CUDA implementations, which read
//! them, do not depend on the file that dispatches to them (tests/layering.rs).

use crate::{Error, Result};

/// A rollout, all arrays [T, N] row-major (see the module doc for what each entry means).
#[derive(Debug, Clone, Copy)]
pub struct GaeInput<'a> {
    /// r_t.
    pub rewards: &'a [f32],
    /// V(s_t).
    pub values: &'a [f32],
    /// V of the observation after step t (the final observation's value at a truncation).
    pub next_values: &'a [f32],
    /// Step t ended the episode by termination (no bootstrap).
    pub terminated: &'a [bool],
    /// Step t ended the episode by truncation (bootstrap from `next_values`).
    pub truncated: &'a [bool],
    /// Steps T.
    pub t: usize,
    /// Environments N.
    pub n: usize,
}

impl GaeInput<'_> {
    /// Check that every array is [T, N]; errors name the array.
    pub fn validate(&self) -> Result<()> {
        let want = self.t * self.n;
        let lens = [
            ("rewards", self.rewards.len()),
            ("values", self.values.len()),
            ("next_values", self.next_values.len()),
            ("terminated", self.terminated.len()),
            ("truncated", self.truncated.len()),
        ];
        for (name, len) in lens {
            if len != want {
                return Err(Error::input(
                    format!(
                        "gae: `{name}` has {len} entries, expected T × N = {} × {}",
                        self.t, self.n
                    ),
                    None,
                ));
            }
        }
        Ok(())
    }
}

/// A batch of variable-length episodes, [B, W] row-major (see the module doc): row i holds
/// `lens[i]` steps, then padding (ignored).
#[derive(Debug, Clone, Copy)]
pub struct GaeRows<'a> {
    /// r_t, [B, W].
    pub rewards: &'a [f32],
    /// V(s_t), [B, W].
    pub values: &'a [f32],
    /// Steps in each row (B entries, each ≤ W).
    pub lens: &'a [usize],
    /// Row width W.
    pub width: usize,
}

impl GaeRows<'_> {
    /// Check that both arrays are [B, W] and every length fits in a row.
    pub fn validate(&self) -> Result<()> {
        let want = self.lens.len() * self.width;
        for (name, len) in [
            ("rewards", self.rewards.len()),
            ("values", self.values.len()),
        ] {
            if len != want {
                return Err(Error::input(
                    format!(
                        "gae: `{name}` has {len} entries, expected B × W = {} × {}",
                        self.lens.len(),
                        self.width
                    ),
                    None,
                ));
            }
        }
        if let Some((i, l)) = self.lens.iter().enumerate().find(|(_, &l)| l > self.width) {
            return Err(Error::input(
                format!("gae: row {i} has {l} steps, wider than W = {}", self.width),
                None,
            ));
        }
        Ok(())
    }
}

pub(super) fn check_params(gamma: f32, lambda: f32) -> Result<()> {
    for (name, v) in [("gamma", gamma), ("lambda", lambda)] {
        if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
            return Err(Error::input(
                format!("gae: `{name}` must be in [0, 1], found {v}"),
                None,
            ));
        }
    }
    Ok(())
}
