//! Two small CPU ops that make PPO on tiny MLPs cheaper without changing a single bit of its
//! results (docs/algorithms.md, "PPO details"; the PPO row of `benches/results/side_by_side.md`).
//!
//! Why they are fast: a profile of `configs/cartpole__ppo.toml` (64 × 64 tanh actor and critic,
//! mini-batches of 256, 7,800 gradient steps) spent about a fifth of its time in candle's
//! backward of `broadcast_add`, which sums the bias gradient over the batch with a generic
//! strided fold (two integer divisions per element), and a few per cent more in the three
//! element-wise passes (and three allocations) of the tanh derivative.
//!
//! - [`bias_add`]: `x + b` for `x: [n, d]`, `b: [d]`. Forward: the same f32 additions as
//!   `broadcast_add`. Backward: `dx = g`, `db` = column sums of `g` accumulated row by row from
//!   0 — the order candle's fold adds them in, so `db` is bit-identical, but as a contiguous
//!   row-wise loop the compiler vectorises.
//! - [`TanhGrad`]: `g · ((t · t) · (−1) + 1)` in one pass, the exact f32 operations of candle's
//!   `g.mul(t.sqr().affine(-1, 1))` in the same order (no fused multiply-add), so the result is
//!   bit-identical too.
//!
//! Both run only on CPU f32 contiguous tensors; anything else takes candle's composed path, which
//! computes the same values.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};

/// `x + b` broadcast over the rows of a rank-2 `x` (see the module doc).
pub fn bias_add(x: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let fast = x.device().is_cpu()
        && x.dtype() == DType::F32
        && b.dtype() == DType::F32
        && x.rank() == 2
        && b.rank() == 1
        && x.dim(1)? == b.dim(0)?
        && x.is_contiguous()
        && b.is_contiguous();
    if fast {
        x.apply_op2(b, BiasAdd)
    } else {
        x.broadcast_add(b)
    }
}

/// The op behind [`bias_add`].
struct BiasAdd;

/// The contiguous f32 slice a layout covers.
fn slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let v = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{op} needs contiguous f32 tensors"),
    }
}

impl CustomOp2 for BiasAdd {
    fn name(&self) -> &'static str {
        "bias-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, "bias-add")?;
        let b = slice(s2, l2, "bias-add")?;
        let d = b.len();
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks_exact(d.max(1)) {
            out.extend(row.iter().zip(b).map(|(xi, bi)| xi + bi));
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let db = grad.apply_op1_no_bwd(&ColumnSum)?;
        Ok((Some(grad), Some(db)))
    }
}

/// Column sums of a contiguous [n, d] f32 tensor, accumulated row by row from 0 (no backward:
/// it only ever computes a gradient).
struct ColumnSum;

impl CustomOp1 for ColumnSum {
    fn name(&self) -> &'static str {
        "column-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = slice(s, l, "column-sum")?;
        let (_, d) = l.shape().dims2()?;
        let mut acc = vec![0f32; d];
        for row in g.chunks_exact(d.max(1)) {
            for (a, v) in acc.iter_mut().zip(row) {
                *a += v;
            }
        }
        Ok((CpuStorage::F32(acc), Shape::from(d)))
    }
}

/// `g · (1 − t²)` from the tanh output `t` and the incoming gradient `g` (see the module doc).
pub struct TanhGrad;

impl TanhGrad {
    /// The tanh derivative times `g`; candle's composed path where the fast one does not apply.
    pub fn apply(t: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
        let fast = t.device().is_cpu()
            && t.dtype() == DType::F32
            && g.dtype() == DType::F32
            && t.shape() == g.shape()
            && t.is_contiguous()
            && g.is_contiguous();
        if fast {
            t.apply_op2_no_bwd(g, &TanhGrad)
        } else {
            g.mul(&t.sqr()?.affine(-1.0, 1.0)?)
        }
    }
}

impl CustomOp2 for TanhGrad {
    fn name(&self) -> &'static str {
        "tanh-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let t = slice(s1, l1, "tanh-grad")?;
        let g = slice(s2, l2, "tanh-grad")?;
        let (mul, add) = (-1f32, 1f32);
        let out = t
            .iter()
            .zip(g)
            .map(|(t, g)| g * ((t * t) * mul + add))
            .collect();
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Values with many significant bits, so a different summation order would show.
    fn awkward(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let k = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed);
                ((k % 100_003) as f32 / 7.0 - 7_000.0) * 1.000_123
            })
            .collect()
    }

    #[test]
    fn bias_add_and_its_backward_are_bit_identical_to_candles_broadcast_add() {
        let dev = Device::Cpu;
        let (n, d) = (256, 64);
        let x = Var::from_vec(awkward(n * d, 1), (n, d), &dev).unwrap();
        let b = Var::from_vec(awkward(d, 2), d, &dev).unwrap();
        let w = Tensor::from_vec(awkward(n * d, 3), (n, d), &dev).unwrap();
        let grads = |y: Tensor| {
            let loss = (y * &w).unwrap().sum_all().unwrap();
            let g = loss.backward().unwrap();
            (
                g.get(x.as_tensor()).unwrap().to_vec2::<f32>().unwrap(),
                g.get(b.as_tensor()).unwrap().to_vec1::<f32>().unwrap(),
            )
        };
        let ours = bias_add(x.as_tensor(), b.as_tensor()).unwrap();
        let theirs = x.as_tensor().broadcast_add(b.as_tensor()).unwrap();
        assert_eq!(
            ours.to_vec2::<f32>().unwrap(),
            theirs.to_vec2::<f32>().unwrap()
        );
        let (dx1, db1) = grads(ours);
        let (dx2, db2) = grads(theirs);
        assert_eq!(dx1, dx2);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&db1), bits(&db2));
        // The test data is awkward enough that another order of the sums would differ.
        let mut rev = vec![0f32; d];
        let gw = w.to_vec2::<f32>().unwrap();
        for row in gw.iter().rev() {
            for (a, v) in rev.iter_mut().zip(row) {
                *a += v;
            }
        }
        assert_ne!(bits(&rev), bits(&db2), "test data too easy");
    }

    #[test]
    fn tanh_grad_is_bit_identical_to_the_composed_form() {
        let dev = Device::Cpu;
        let t: Vec<f32> = awkward(4096, 4)
            .iter()
            .map(|v| (v / 7000.0).tanh())
            .collect();
        let t = Tensor::from_vec(t, (64, 64), &dev).unwrap();
        let g = Tensor::from_vec(awkward(4096, 5), (64, 64), &dev).unwrap();
        let ours = TanhGrad::apply(&t, &g).unwrap().to_vec2::<f32>().unwrap();
        let theirs = g
            .mul(&t.sqr().unwrap().affine(-1.0, 1.0).unwrap())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn other_shapes_take_the_composed_path() {
        let dev = Device::Cpu;
        let x = Tensor::from_vec(vec![1f32, 2., 3.], 3, &dev).unwrap();
        let b = Tensor::from_vec(vec![0.5f32, 0.5, 0.5], 3, &dev).unwrap();
        let y = bias_add(&x, &b).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(y, vec![1.5, 2.5, 3.5]);
    }
}
