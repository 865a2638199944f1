//! Running observation and reward normalisation, as Gymnasium's `NormalizeObservation` and
//! `NormalizeReward` wrappers (which CleanRL's `ppo_continuous_action.py` applies): a running
//! mean/variance with the parallel (Chan et al.) update, ε = 1e-8, and clipping to ±clip.

use serde::{Deserialize, Serialize};

/// Running mean and variance of vectors of a fixed dimension.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunningMeanStd {
    /// Per-dimension mean.
    pub mean: Vec<f64>,
    /// Per-dimension (population) variance.
    pub var: Vec<f64>,
    /// Number of samples seen (starts at ε like Gymnasium's, so the first update is well defined).
    pub count: f64,
}

impl RunningMeanStd {
    /// Empty statistics for `dim`-vectors.
    pub fn new(dim: usize) -> Self {
        Self {
            mean: vec![0.0; dim],
            var: vec![1.0; dim],
            count: 1e-4,
        }
    }

    /// Add a batch of `rows.len() / dim` vectors.
    pub fn update(&mut self, rows: &[f32]) {
        let dim = self.mean.len();
        let n = rows.len() / dim;
        if n == 0 {
            return;
        }
        for d in 0..dim {
            let col = (0..n).map(|i| rows[i * dim + d] as f64);
            let bmean = col.clone().sum::<f64>() / n as f64;
            let bvar = col.map(|x| (x - bmean) * (x - bmean)).sum::<f64>() / n as f64;
            let delta = bmean - self.mean[d];
            let tot = self.count + n as f64;
            let m2 = self.var[d] * self.count
                + bvar * n as f64
                + delta * delta * self.count * n as f64 / tot;
            self.mean[d] += delta * n as f64 / tot;
            self.var[d] = m2 / tot;
        }
        self.count += n as f64;
    }

    /// Normalise `rows` in place: `clip((x − mean)/√(var + 1e-8), ±clip)`.
    pub fn normalize(&self, rows: &mut [f32], clip: f64) {
        let dim = self.mean.len();
        for (i, x) in rows.iter_mut().enumerate() {
            let d = i % dim;
            let z = (*x as f64 - self.mean[d]) / (self.var[d] + 1e-8).sqrt();
            *x = z.clamp(-clip, clip) as f32;
        }
    }
}

/// Gymnasium's `NormalizeReward`: scale rewards by the running std of the discounted return.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RewardNormalizer {
    /// Statistics of the discounted returns.
    pub rms: RunningMeanStd,
    /// Per sub-environment discounted return so far.
    pub returns: Vec<f64>,
    /// Discount.
    pub gamma: f64,
}

impl RewardNormalizer {
    /// For `num_envs` sub-environments.
    pub fn new(num_envs: usize, gamma: f64) -> Self {
        Self {
            rms: RunningMeanStd::new(1),
            returns: vec![0.0; num_envs],
            gamma,
        }
    }

    /// Normalise one vector step's rewards in place; `done[i]` resets env i's return after use.
    pub fn apply(&mut self, rewards: &mut [f32], done: &[bool], clip: f64) {
        let mut rets = Vec::with_capacity(rewards.len());
        for (i, r) in rewards.iter().enumerate() {
            self.returns[i] = self.returns[i] * self.gamma + *r as f64;
            rets.push(self.returns[i] as f32);
        }
        self.rms.update(&rets);
        let std = (self.rms.var[0] + 1e-8).sqrt();
        for (i, r) in rewards.iter_mut().enumerate() {
            *r = (*r as f64 / std).clamp(-clip, clip) as f32;
            if done[i] {
                self.returns[i] = 0.0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_stats_match_batch_stats() {
        let data: Vec<f32> = (0..200).map(|i| ((i * 37) % 101) as f32 * 0.1).collect();
        let mut rms = RunningMeanStd::new(2);
        for chunk in data.chunks(20) {
            rms.update(chunk);
        }
        for d in 0..2 {
            let col: Vec<f64> = data.iter().skip(d).step_by(2).map(|x| *x as f64).collect();
            let m = col.iter().sum::<f64>() / col.len() as f64;
            let v = col.iter().map(|x| (x - m).powi(2)).sum::<f64>() / col.len() as f64;
            assert!((rms.mean[d] - m).abs() < 1e-3, "{} {m}", rms.mean[d]);
            assert!((rms.var[d] - v).abs() / v < 1e-2, "{} {v}", rms.var[d]);
        }
        let mut x = vec![1e9f32, -1e9];
        rms.normalize(&mut x, 10.0);
        assert_eq!(x, vec![10.0, -10.0]);
    }
}
