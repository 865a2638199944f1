//! Simulated preference labels for control (`[preferences]`), Christiano et al. 2017 style:
//! trajectory segments of length L from a behaviour policy, paired at random, and labelled by
//! each user with their group's Bradley–Terry model of the segment return (docs/algorithms.md "Setup":
//! P(a ≻ b) = σ((R_u(a) − R_u(b)) / temperature)), optionally followed by uniform label noise.
//! Seeded from the run's root seed and reproducible.

use super::data::{Comparison, Segment};
use super::group_reward::GroupReward;
use super::population::User;
use crate::env::{Action, Env, Space};
use crate::error::{check, Error, Result};
use crate::rng::Rng;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The policy that generates segments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Behaviour {
    /// Uniformly random actions (Box actions uniform in their bounds, ±1 where unbounded).
    #[default]
    Random,
}

/// `[preferences]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PreferencesConfig {
    /// Steps per segment (L).
    #[serde(default = "d_len")]
    pub segment_length: usize,
    /// Segments generated; each comparison pairs two distinct ones at random.
    #[serde(default = "d_segments")]
    pub segments: usize,
    /// The behaviour policy.
    #[serde(default)]
    pub behaviour: Behaviour,
    /// Bradley–Terry temperature: P(a ≻ b) = σ((R(a) − R(b)) / temperature).
    #[serde(default = "d_temp")]
    pub temperature: f64,
    /// Probability that a label is then flipped (uniform label noise).
    #[serde(default)]
    pub label_noise: f64,
    /// Read comparisons from this JSONL file instead of simulating (held-out split by user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<PathBuf>,
    /// With `data`: skip malformed lines (counted in the log and summary) instead of failing.
    #[serde(default)]
    pub skip_bad: bool,
    /// With `data`: fraction of users held out (by user, per group when groups are known).
    #[serde(default = "d_held_out_fraction")]
    pub held_out_fraction: f64,
}

fn d_len() -> usize {
    25
}
fn d_segments() -> usize {
    2000
}
fn d_temp() -> f64 {
    1.0
}
fn d_held_out_fraction() -> f64 {
    0.33
}

impl Default for PreferencesConfig {
    fn default() -> Self {
        Self {
            segment_length: d_len(),
            segments: d_segments(),
            behaviour: Behaviour::Random,
            temperature: d_temp(),
            label_noise: 0.0,
            data: None,
            skip_bad: false,
            held_out_fraction: d_held_out_fraction(),
        }
    }
}

impl PreferencesConfig {
    /// Check values; keys relative to `[preferences]`.
    pub fn validate(&self) -> Result<()> {
        check::positive_usize("segment-length", self.segment_length)?;
        if self.segments < 2 {
            return Err(Error::config(
                "segments",
                format!(
                    "expected at least 2 segments to pair, found {}",
                    self.segments
                ),
            ));
        }
        check::positive_f64("temperature", self.temperature)?;
        check::in_range("label-noise", self.label_noise, 0.0, 0.5)?;
        check::in_range("held-out-fraction", self.held_out_fraction, 0.0, 0.9)?;
        Ok(())
    }
}

/// Generate `cfg.segments` segments of `cfg.segment_length` steps, rows `obs ++ action`.
pub fn segments(
    env: &mut dyn Env,
    cfg: &PreferencesConfig,
    rng: &mut Rng,
) -> Result<Vec<Vec<Vec<f32>>>> {
    let spec = env.spec().clone();
    let obs_dim = spec.observation_space.dim();
    let l = cfg.segment_length;
    if let Some(max) = spec.max_episode_steps.filter(|&m| m < l) {
        return Err(Error::config(
            "preferences.segment-length",
            format!(
                "segments of {l} steps cannot fit in {}'s {max}-step episodes",
                spec.id
            ),
        ));
    }
    let mut out = Vec::with_capacity(cfg.segments);
    let mut obs = vec![0f32; obs_dim];
    let mut act = vec![0f32; spec.action_space.dim()];
    let mut short_episodes = 0usize;
    while out.len() < cfg.segments {
        env.reset(Some(rng.random()), &mut obs);
        let mut episode: Vec<Vec<f32>> = Vec::new();
        loop {
            random_action(&spec.action_space, rng, &mut act);
            let mut row = obs.clone();
            row.extend_from_slice(&act);
            episode.push(row);
            let a = match spec.action_space {
                Space::Discrete { .. } => Action::Discrete(act[0] as usize),
                Space::Box { .. } => Action::Continuous(&act),
            };
            let o = env.step(a, &mut obs);
            if o.terminated || o.truncated {
                break;
            }
        }
        if episode.len() < l {
            // Random CartPole episodes can end before L steps; too many such is a config problem.
            short_episodes += 1;
            if short_episodes > 100 * cfg.segments.max(100) {
                return Err(Error::config(
                    "preferences.segment-length",
                    format!(
                        "the behaviour policy's episodes in {} are almost never {l} steps long",
                        spec.id
                    ),
                ));
            }
            continue;
        }
        // Non-overlapping windows from a random offset, so long episodes give several segments.
        let start = rng.random_range(0..=episode.len() % l);
        for w in episode[start..].chunks_exact(l) {
            if out.len() < cfg.segments {
                out.push(w.to_vec());
            }
        }
    }
    Ok(out)
}

fn random_action(space: &Space, rng: &mut Rng, act: &mut [f32]) {
    match space {
        Space::Discrete { n } => act[0] = rng.random_range(0..*n) as f32,
        Space::Box { low, high } => {
            for (i, a) in act.iter_mut().enumerate() {
                let (lo, hi) = if low[i].is_finite() && high[i].is_finite() {
                    (low[i], high[i])
                } else {
                    (-1.0, 1.0)
                };
                *a = rng.random_range(lo..=hi);
            }
        }
    }
}

/// σ(x), stable for any finite x.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// One simulated Bradley–Terry label: whether a user prefers the first of two items whose
/// true rewards differ by `diff`, P = σ(diff / temperature), then flipped with probability
/// `label_noise` (no draw is made for the flip when it is 0).
pub fn bt_prefers_first(diff: f64, temperature: f64, label_noise: f64, rng: &mut Rng) -> bool {
    let mut first = rng.random::<f64>() < sigmoid(diff / temperature);
    if label_noise > 0.0 && rng.random::<f64>() < label_noise {
        first = !first;
    }
    first
}

/// Each user labels `per_user` random pairs of `segs` with their group's BT model.
#[allow(clippy::too_many_arguments)]
pub fn label(
    users: &[User],
    group_names: &[String],
    rewards: &[Box<dyn GroupReward>],
    segs: &[Vec<Vec<f32>>],
    obs_dim: usize,
    per_user: usize,
    cfg: &PreferencesConfig,
    context: &str,
    rng: &mut Rng,
) -> Vec<Comparison> {
    // Returns of every segment under every group, computed once.
    let returns: Vec<Vec<f64>> = rewards
        .iter()
        .map(|r| segs.iter().map(|s| r.segment_return(s, obs_dim)).collect())
        .collect();
    let mut out = Vec::with_capacity(users.len() * per_user);
    for u in users {
        for _ in 0..per_user {
            let a = rng.random_range(0..segs.len());
            let mut b = rng.random_range(0..segs.len() - 1);
            if b >= a {
                b += 1;
            }
            let a_wins = bt_prefers_first(
                returns[u.group][a] - returns[u.group][b],
                cfg.temperature,
                cfg.label_noise,
                rng,
            );
            let (w, l) = if a_wins { (a, b) } else { (b, a) };
            out.push(Comparison {
                user: u.id.clone(),
                context: serde_json::Value::from(context),
                chosen: Segment::Rows(segs[w].clone()),
                rejected: Segment::Rows(segs[l].clone()),
                group: Some(group_names[u.group].clone()),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_is_stable() {
        assert_eq!(sigmoid(1e4), 1.0);
        assert_eq!(sigmoid(-1e4), 0.0);
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-12);
    }
}
