//! E-step of the Bradley–Terry mixture (docs/algorithms.md, the EM algorithm over K preference groups):
//! the per-user, per-group log-likelihood
//!
//! `ll[u, k] = Σ_{i : user(i) = u} log σ(r_k(chosen_i) − r_k(rejected_i))`
//!
//! from every comparison's rewards under each of the K group reward models. The hard E-step
//! assigns user u to `argmax_k ll[u, k] (+ log prior_k)`; the soft one takes a softmax over k.
//! Comparisons may come in any order (a user index per comparison); they are grouped by user
//! with a stable counting sort, and each user's segment is summed in comparison order in f64.
//!
//! CPU ([`cpu`]) is the default and the oracle; CUDA ([`cuda`]) is unverified on GPU.

pub mod cpu;
pub mod cuda;

use crate::device::Device;
use crate::{Error, Result};

/// The E-step's inputs, row-major.
#[derive(Debug, Clone, Copy)]
pub struct Comparisons<'a> {
    /// [m, k]: group k's reward of comparison i's chosen response at `i * k + k`.
    pub r_chosen: &'a [f32],
    /// [m, k]: same for the rejected response.
    pub r_rejected: &'a [f32],
    /// [m]: the user who made comparison i, `< users`.
    pub user: &'a [u32],
    /// Number of groups K.
    pub k: usize,
    /// Number of users (rows of the output; users without comparisons get 0).
    pub users: usize,
}

impl Comparisons<'_> {
    /// Number of comparisons m.
    pub fn len(&self) -> usize {
        self.user.len()
    }

    /// Whether there are no comparisons.
    pub fn is_empty(&self) -> bool {
        self.user.is_empty()
    }

    /// Check shapes and user ids; errors name the offending array.
    pub fn validate(&self) -> Result<()> {
        if self.k == 0 {
            return Err(Error::input("bt_estep: k (number of groups) is 0", None));
        }
        let m = self.user.len();
        for (name, r) in [("r_chosen", self.r_chosen), ("r_rejected", self.r_rejected)] {
            if r.len() != m * self.k {
                return Err(Error::input(
                    format!(
                        "bt_estep: `{name}` has {} values, expected m × k = {m} × {}",
                        r.len(),
                        self.k
                    ),
                    None,
                ));
            }
        }
        if m > u32::MAX as usize {
            return Err(Error::input(
                format!("bt_estep: {m} comparisons > 2^32"),
                None,
            ));
        }
        if let Some((i, &u)) = self
            .user
            .iter()
            .enumerate()
            .find(|(_, &u)| u as usize >= self.users)
        {
            return Err(Error::input(
                format!(
                    "bt_estep: `user[{i}]` = {u} but there are only {} users",
                    self.users
                ),
                None,
            ));
        }
        Ok(())
    }
}

/// The [users, k] log-likelihood matrix (row-major) on `device`.
pub fn bt_estep(device: &Device, c: &Comparisons) -> Result<Vec<f32>> {
    c.validate()?;
    match device {
        // dense partials cost BLOCKS × users × k memory: worth it while that is small
        // next to the comparisons themselves
        Device::Cpu if c.users * 16 <= c.len().max(1) * 4 => Ok(cpu::estep_dense(
            c.r_chosen,
            c.r_rejected,
            c.user,
            c.users,
            c.k,
        )),
        Device::Cpu => Ok(cpu::estep(
            c.r_chosen,
            c.r_rejected,
            &cpu::segments(c.user, c.users),
            c.k,
        )),
        Device::Cuda(dev) => {
            let seg = cpu::segments(c.user, c.users);
            cuda::DeviceComparisons::upload(dev, c.r_chosen, c.r_rejected, &seg, c.k)?.estep(dev)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng;
    use candle_core::{Device as CDevice, Tensor};
    use rand::Rng;

    fn random(
        m: usize,
        k: usize,
        users: usize,
        scale: f32,
        seed: u64,
    ) -> (Vec<f32>, Vec<f32>, Vec<u32>) {
        let mut r = rng::stream(seed, "bt-estep-test");
        let a = (0..m * k).map(|_| r.random_range(-scale..scale)).collect();
        let b = (0..m * k).map(|_| r.random_range(-scale..scale)).collect();
        let u = (0..m).map(|_| r.random_range(0..users as u32)).collect();
        (a, b, u)
    }

    /// Naive candle composition: log σ(d) = −softplus(−d) = −log(1 + e^(−d)) in f64, and the
    /// per-user sum as a one-hot [users, m] × [m, k] matmul.
    fn naive(a: &[f32], b: &[f32], user: &[u32], k: usize, users: usize) -> Vec<f64> {
        let dev = CDevice::Cpu;
        let m = user.len();
        let ta = Tensor::from_slice(a, (m, k), &dev)
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap();
        let tb = Tensor::from_slice(b, (m, k), &dev)
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap();
        let d = (ta - tb).unwrap();
        // log σ(d) = min(d, 0) − log(1 + e^(−|d|)), the stable form, composed from candle ops
        let ls = (d.minimum(0f64).unwrap()
            - ((d.abs().unwrap().neg().unwrap().exp().unwrap() + 1f64)
                .unwrap()
                .log()
                .unwrap()))
        .unwrap();
        let mut onehot = vec![0f64; users * m];
        for (i, &u) in user.iter().enumerate() {
            onehot[u as usize * m + i] = 1.0;
        }
        let oh = Tensor::from_vec(onehot, (users, m), &dev).unwrap();
        oh.matmul(&ls)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    }

    fn check(m: usize, k: usize, users: usize, scale: f32, seed: u64) {
        let (a, b, u) = random(m, k, users, scale, seed);
        let c = Comparisons {
            r_chosen: &a,
            r_rejected: &b,
            user: &u,
            k,
            users,
        };
        let got = bt_estep(&Device::Cpu, &c).unwrap();
        let want = naive(&a, &b, &u, k, users);
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            let tol = 1e-5 * (1.0 + w.abs());
            assert!(
                (g as f64 - w).abs() <= tol,
                "m={m} k={k} entry {i}: {g} vs {w}"
            );
        }
    }

    #[test]
    fn both_cpu_schedules_agree() {
        let (a, b, u) = random(5000, 3, 900, 5.0, 9);
        let dense = cpu::estep_dense(&a, &b, &u, 900, 3);
        let seg = cpu::estep(&a, &b, &cpu::segments(&u, 900), 3);
        for (x, y) in dense.iter().zip(&seg) {
            assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    #[test]
    fn matches_naive_composition() {
        // dense schedule (few users) and segmented schedule (many users)
        check(1000, 3, 37, 5.0, 1);
        check(1000, 2, 900, 5.0, 4);
        check(257, 1, 10, 1.0, 2);
        // extreme reward gaps: log σ must neither overflow nor lose the linear tail
        check(300, 4, 7, 1e4, 3);
    }

    #[test]
    fn users_without_comparisons_get_zero_and_order_does_not_matter() {
        let a = vec![1.0, 2.0, 0.5, -1.0];
        let b = vec![0.0, 0.0, 0.0, 0.0];
        let u = vec![2u32, 0];
        let c = Comparisons {
            r_chosen: &a,
            r_rejected: &b,
            user: &u,
            k: 2,
            users: 3,
        };
        let ll = bt_estep(&Device::Cpu, &c).unwrap();
        assert_eq!(ll.len(), 6);
        assert_eq!(&ll[2..4], &[0.0, 0.0]);
        assert!((ll[4] - cpu::log_sigmoid(1.0)).abs() < 1e-7);
        assert!((ll[0] - cpu::log_sigmoid(0.5)).abs() < 1e-7);
    }

    #[test]
    fn bad_inputs_are_input_errors() {
        let a = vec![0.0; 4];
        let u = vec![0u32, 5];
        let c = Comparisons {
            r_chosen: &a,
            r_rejected: &a,
            user: &u,
            k: 2,
            users: 3,
        };
        let e = bt_estep(&Device::Cpu, &c).unwrap_err();
        assert!(e.to_string().contains("user[1]"), "{e}");
        let c = Comparisons {
            r_chosen: &a[..3],
            r_rejected: &a,
            user: &u[..1],
            k: 2,
            users: 3,
        };
        assert!(bt_estep(&Device::Cpu, &c)
            .unwrap_err()
            .to_string()
            .contains("r_chosen"));
    }
}
