//! Fused CPU ops of the LM forward with the backward passes LoRA training needs, and nothing more.
//!
//! Why they exist (docs/lm-rlhf.md, "Speed"): composed from candle's elementary ops, a LoRA
//! training step on a small GPT-2 spends about a quarter of its time in `tanh`/`powf` of the
//! tanh-GELU and its backward, and a third of its matmul time computing gradients of the frozen
//! base weights (candle's matmul backward always produces both `dL/dx` and `dL/dW`; the latter is
//! thrown away). Each op here is one candle [`CustomOp1`] whose backward returns only what is
//! trained through:
//!
//! - [`frozen_linear`]: `x W + b` with a frozen `W` and `b`; backward `dx = g Wᵀ`, no `dW`, no `db`
//!   (one matmul instead of two), and the bias added in place.
//! - [`gelu_new`]: GPT-2's tanh-GELU, `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`, computed as
//!   the identical `x σ(2u)` with a polynomial `exp` (`maxmin_core::ops::fastmath::exp_f32`, Cephes' `expf`): branch-free
//!   multiply-adds, bit operations and one division, so the loop vectorises (libm's `tanhf`,
//!   `expm1f` and `powf`, which candle's forward and backward call per element, do not), and no
//!   cancellation where `1 + tanh` goes to 0, so it is accurate to ~1e-6 relative (tests).
//! - [`layer_norm`]: layer norm over the last dim with frozen `w`, `b`; backward
//!   `dx = r (ĝ − mean ĝ − x̂ mean(ĝ x̂))`, `ĝ = g w`, `r = 1/√(var + ε)`, one pass per row.
//! - [`softmax_last_dim`]: softmax with backward `dx = y (g − Σ g y)` (candle's fused softmax has
//!   no backward, its differentiable one is five ops).
//!
//! Each function takes the fast path for contiguous-able f32 CPU tensors whose frozen operands
//! are not being trained (no `Var` behind them); otherwise it composes candle's ops as before,
//! so CUDA, f16/bf16 and training GPT-2 from scratch keep working unchanged. The tests compare
//! every op with candle's composition on random inputs, forward and backward.

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Storage, Tensor, D,
};
use maxmin_core::ops::fastmath::{self, gelu_new_grad};

type CResult<T> = candle_core::Result<T>;

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> CResult<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("{op}: expected f32, found {:?}", s.dtype())
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!("{op}: the input must be contiguous"),
    }
}

fn cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// Whether `t` is an f32 CPU tensor that no gradient flows into.
fn frozen(t: &Tensor) -> bool {
    cpu_f32(t) && !t.track_op()
}

struct GeluNew;

impl CustomOp1 for GeluNew {
    fn name(&self) -> &'static str {
        "gelu-new"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let y: Vec<f32> = x.iter().map(|&v| fastmath::gelu_new(v)).collect();
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> CResult<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&g.contiguous()?, &GeluBwd)?))
    }
}

struct GeluBwd;

impl CustomOp2 for GeluBwd {
    fn name(&self) -> &'static str {
        "gelu-new-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        let dx: Vec<f32> = x
            .iter()
            .zip(g)
            .map(|(&v, &d)| d * gelu_new_grad(v))
            .collect();
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// GPT-2's `gelu_new` (tanh approximation), fused and with a vectorised `tanh` on f32 CPU
/// tensors; candle's `gelu` elsewhere.
pub fn gelu_new(x: &Tensor) -> CResult<Tensor> {
    if cpu_f32(x) {
        x.contiguous()?.apply_op1(GeluNew)
    } else {
        x.gelu()
    }
}

struct FrozenLinear {
    w: Tensor,
    b: Option<Tensor>,
    /// Only these rows of the input are computed (zeros elsewhere, forward and backward).
    rows: Option<crate::cpu::Rows>,
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let dims = l.dims();
        let k = dims.last().copied().unwrap_or(0);
        let n = l.shape().elem_count() / k.max(1);
        let (k2, m) = self.w.dims2()?;
        if k != k2 {
            bail!("frozen-linear: input width {k}, weight rows {k2}");
        }
        let Some((start, _)) = l.contiguous_offsets() else {
            bail!("frozen-linear: the input must be contiguous")
        };
        let compact = match &self.rows {
            Some(rows) if rows.positions() != n => {
                bail!(
                    "frozen-linear: {n} input rows, a row set over {}",
                    rows.positions()
                )
            }
            Some(rows) if rows.len() < n => {
                let x = f32_slice(s, l, self.name())?;
                Some((rows, CpuStorage::F32(rows.gather(x, k))))
            }
            _ => None,
        };
        let (src, l2, rows_n) = match &compact {
            Some((rows, c)) => (c, Layout::contiguous((rows.len(), k)), rows.len()),
            None => (s, Layout::contiguous_with_offset((n, k), start), n),
        };
        let mut y = {
            let (ws, wl) = self.w.storage_and_layout();
            let Storage::Cpu(ws) = &*ws else {
                bail!("frozen-linear: the weight is not on the CPU")
            };
            src.matmul(ws, (1, rows_n, m, k), &l2, wl)?
        };
        if let Some((rows, _)) = &compact {
            let CpuStorage::F32(v) = &y else {
                bail!("frozen-linear: expected an f32 product")
            };
            y = CpuStorage::F32(rows.scatter(v, m));
        }
        if let Some(b) = &self.b {
            let (bs, bl) = b.storage_and_layout();
            let Storage::Cpu(bs) = &*bs else {
                bail!("frozen-linear: the bias is not on the CPU")
            };
            let bias = f32_slice(bs, bl, self.name())?;
            let CpuStorage::F32(v) = &mut y else {
                bail!("frozen-linear: expected an f32 product")
            };
            for row in v.chunks_exact_mut(m) {
                row.iter_mut().zip(bias).for_each(|(a, b)| *a += b);
            }
        }
        let mut out = dims.to_vec();
        if let Some(last) = out.last_mut() {
            *last = m;
        }
        Ok((y, Shape::from(out)))
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> CResult<Option<Tensor>> {
        let m = g.dims().last().copied().unwrap_or(0);
        let g2 = g.reshape((g.elem_count() / m.max(1), m))?;
        match &self.rows {
            Some(rows) if rows.len() < rows.positions() => {
                let k = x.dims().last().copied().unwrap_or(0);
                let kept = rows.gather(&g2.flatten_all()?.to_vec1::<f32>()?, m);
                let kept = Tensor::from_vec(kept, (rows.len(), m), g.device())?;
                let dx = kept.matmul(&self.w.t()?)?.flatten_all()?.to_vec1::<f32>()?;
                Tensor::from_vec(rows.scatter(&dx, k), x.shape(), x.device()).map(Some)
            }
            _ => Ok(Some(g2.matmul(&self.w.t()?)?.reshape(x.shape())?)),
        }
    }
}

/// `x w + b` for `x` `(…, in)`, `w` `(in, out)` (any strides, e.g. a transposed `[out, in]`
/// weight), `b` `(out,)`, giving `(…, out)`. Frozen `w` and `b` on f32 CPU: one op whose backward
/// gives only `dx`, with no reshape nodes around it (each graph node costs the backward a
/// zero-filled buffer and an add of its gradient's size).
pub fn frozen_linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> CResult<Tensor> {
    frozen_linear_rows(x, w, b, None)
}

/// [`frozen_linear`] computing only the input rows (positions of the flattened `(…, in)`) that
/// `rows` keeps: the others come out as zeros and pass no gradient, on the fast path; the
/// composed path computes every row. For outputs read only at unmasked positions (the logits
/// of padded responses in LM PPO's mini-batches).
pub fn frozen_linear_rows(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    rows: Option<&crate::cpu::Rows>,
) -> CResult<Tensor> {
    if cpu_f32(x) && frozen(w) && b.is_none_or(frozen) {
        return x.contiguous()?.apply_op1(FrozenLinear {
            w: w.clone(),
            b: b.cloned(),
            rows: rows.cloned(),
        });
    }
    let y = x.broadcast_matmul(w)?;
    match b {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

struct LayerNorm {
    w: Tensor,
    b: Tensor,
    eps: f32,
}

fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

fn cpu_vec(t: &Tensor, op: &str) -> CResult<Vec<f32>> {
    let (s, l) = t.storage_and_layout();
    let Storage::Cpu(s) = &*s else {
        bail!("{op}: not a CPU tensor")
    };
    Ok(f32_slice(s, l, op)?.to_vec())
}

impl CustomOp1 for LayerNorm {
    fn name(&self) -> &'static str {
        "frozen-layer-norm"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let w = cpu_vec(&self.w, self.name())?;
        let b = cpu_vec(&self.b, self.name())?;
        let h = w.len();
        let mut y = vec![0f32; x.len()];
        for (xr, yr) in x.chunks_exact(h).zip(y.chunks_exact_mut(h)) {
            let (mean, r) = row_stats(xr, self.eps);
            for (((o, &v), &wi), &bi) in yr.iter_mut().zip(xr).zip(&w).zip(&b) {
                *o = (v - mean) * r * wi + bi;
            }
        }
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> CResult<Option<Tensor>> {
        let op = LayerNormBwd {
            w: self.w.clone(),
            eps: self.eps,
        };
        Ok(Some(x.apply_op2_no_bwd(&g.contiguous()?, &op)?))
    }
}

struct LayerNormBwd {
    w: Tensor,
    eps: f32,
}

impl CustomOp2 for LayerNormBwd {
    fn name(&self) -> &'static str {
        "frozen-layer-norm-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        let w = cpu_vec(&self.w, self.name())?;
        let h = w.len();
        let mut dx = vec![0f32; x.len()];
        let mut gw = vec![0f32; h];
        for ((xr, gr), dr) in x
            .chunks_exact(h)
            .zip(g.chunks_exact(h))
            .zip(dx.chunks_exact_mut(h))
        {
            let (mean, r) = row_stats(xr, self.eps);
            let (mut s1, mut s2) = (0f32, 0f32);
            for (((o, &gi), &wi), &xi) in gw.iter_mut().zip(gr).zip(&w).zip(xr) {
                *o = gi * wi;
                s1 += *o;
                s2 += *o * (xi - mean) * r;
            }
            let (m1, m2) = (s1 / h as f32, s2 / h as f32);
            for ((o, &gwi), &xi) in dr.iter_mut().zip(&gw).zip(xr) {
                *o = r * (gwi - m1 - (xi - mean) * r * m2);
            }
        }
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// Layer norm over the last dim. Frozen `w`, `b` and f32 CPU: one fused op whose backward gives
/// `dx` only. Otherwise `None`: the caller composes it.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> CResult<Option<Tensor>> {
    if !(cpu_f32(x) && frozen(w) && frozen(b)) {
        return Ok(None);
    }
    let op = LayerNorm {
        w: w.clone(),
        b: b.clone(),
        eps: eps as f32,
    };
    Ok(Some(x.contiguous()?.apply_op1(op)?))
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax-last-dim"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let n = l.dims().last().copied().unwrap_or(1).max(1);
        let mut y = vec![0f32; x.len()];
        for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
            let max = xr.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let mut sum = 0f32;
            for (o, &v) in yr.iter_mut().zip(xr) {
                *o = (v - max).exp();
                sum += *o;
            }
            let inv = 1.0 / sum;
            yr.iter_mut().for_each(|o| *o *= inv);
        }
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> CResult<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(&g.contiguous()?, &SoftmaxBwd)?))
    }
}

struct SoftmaxBwd;

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "softmax-last-dim-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let y = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        let n = l1.dims().last().copied().unwrap_or(1).max(1);
        let mut dx = vec![0f32; y.len()];
        for ((yr, gr), dr) in y
            .chunks_exact(n)
            .zip(g.chunks_exact(n))
            .zip(dx.chunks_exact_mut(n))
        {
            let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
            for ((o, &yi), &gi) in dr.iter_mut().zip(yr).zip(gr) {
                *o = yi * (gi - dot);
            }
        }
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// Softmax over the last dim with a backward pass: one fused op on f32 CPU tensors, candle's
/// differentiable composition elsewhere.
pub fn softmax_last_dim(x: &Tensor) -> CResult<Tensor> {
    if cpu_f32(x) {
        x.contiguous()?.apply_op1(Softmax)
    } else {
        candle_nn::ops::softmax(x, D::Minus1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use maxmin_core::rng;
    use rand::Rng as _;

    fn rand_t(shape: &[usize], scale: f32, seed: u64) -> Tensor {
        let mut r = rng::stream(seed, "ops-test");
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| r.random_range(-1.0f32..1.0) * scale)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Value and gradient of Σ c·f(x) for a random weighting `c`, as (f(x), dL/dx).
    fn value_and_grad(
        x: &Tensor,
        c: &Tensor,
        f: &dyn Fn(&Tensor) -> CResult<Tensor>,
    ) -> (Tensor, Tensor) {
        let v = Var::from_tensor(x).unwrap();
        let y = f(v.as_tensor()).unwrap();
        let g = (&y * c).unwrap().sum_all().unwrap().backward().unwrap();
        let dx = g.get(v.as_tensor()).unwrap().clone();
        (y.detach(), dx)
    }

    /// GELU, its derivative and the derivative's scale (the sum of its terms' magnitudes: they
    /// cancel near x ≈ −0.75, where only an absolute bound makes sense), in f64 through the
    /// sigmoid form (the tanh form cancels to 0 for x ≲ −6 even in f64).
    fn gelu_exact(x: f64) -> (f64, f64, f64) {
        let k = (2.0 / std::f64::consts::PI).sqrt();
        let z = 2.0 * k * (x + 0.044715 * x.powi(3));
        let e = (-z).exp();
        let s = 1.0 / (1.0 + e);
        let dz = 2.0 * k * (1.0 + 3.0 * 0.044715 * x * x);
        let t2 = x * s * (e * s) * dz;
        (x * s, s + t2, s + t2.abs())
    }

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0f64;
        for i in -870_000..=880_000 {
            let x = i as f32 * 1e-4;
            let e = ((fastmath::exp_f32(x) as f64) / (x as f64).exp() - 1.0).abs();
            worst = worst.max(e);
        }
        assert!(worst < 3e-7, "max relative error {worst}");
        assert!(fastmath::exp_f32(f32::NAN).is_nan());
        assert!(fastmath::exp_f32(1e4).is_finite() && fastmath::exp_f32(-1e4) > 0.0);
    }

    #[test]
    fn gelu_is_accurate_to_1e6_relative() {
        // f32 rounding of the argument z = 1.6 x (1 + 0.044715 x²) (a few ulps) moves e^{-z} by
        // ~|z| · 3e-7 relative: the bound grows with |z| in the negative tail, where values are
        // tiny anyway (candle's f32 form loses every digit there: 1 + tanh u cancels).
        let (mut wy, mut wd) = (0f64, 0f64);
        for i in -80_000..=80_000 {
            let x = i as f32 * 1e-4;
            let (y, d, scale) = gelu_exact(x as f64);
            let z = 1.6 * (x as f64).abs() * (1.0 + 0.044715 * (x as f64).powi(2));
            let tol = 1e-6 + 4e-7 * z;
            let ey = (fastmath::gelu_new(x) as f64 - y).abs() / y.abs().max(1e-30);
            let ed = (gelu_new_grad(x) as f64 - d).abs() / scale;
            if x != 0.0 {
                assert!(ey < tol, "gelu({x}): relative error {ey}");
            }
            assert!(ed < tol, "gelu'({x}): relative error {ed}");
            wy = wy.max(ey / tol);
            wd = wd.max(ed / tol);
        }
        assert!(wy < 1.0 && wd < 1.0);
    }

    #[test]
    fn gelu_matches_candle_forward_and_backward() {
        let x = rand_t(&[7, 96], 6.0, 1);
        let c = rand_t(&[7, 96], 1.0, 2);
        let (y0, d0) = value_and_grad(&x, &c, &|t| t.gelu());
        let (y1, d1) = value_and_grad(&x, &c, &|t| gelu_new(t));
        let (dy, dd) = (max_diff(&y0, &y1), max_diff(&d0, &d1));
        assert!(dy < 2e-6, "forward max abs diff {dy}");
        // candle's backward rounds its constants to 6 digits (0.797885, 0.0356774 …).
        assert!(dd < 2e-5, "backward max abs diff {dd}");
        // And against the exact derivative in f64.
        let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let cs: Vec<f32> = c.flatten_all().unwrap().to_vec1().unwrap();
        let ds: Vec<f32> = d1.flatten_all().unwrap().to_vec1().unwrap();
        for ((&xv, &cv), &dv) in xs.iter().zip(&cs).zip(&ds) {
            let (_, d, scale) = gelu_exact(xv as f64);
            let want = cv as f64 * d;
            let z = 1.6 * (xv as f64).abs() * (1.0 + 0.044715 * (xv as f64).powi(2));
            assert!(
                (dv as f64 - want).abs() <= (1e-6 + 4e-7 * z) * (cv as f64).abs() * scale,
                "x {xv}: {dv} vs {want}"
            );
        }
    }

    #[test]
    fn frozen_linear_rows_computes_kept_rows_only() {
        // (2, 3, 16) input, rows 0, 4 and 5 of the six dropped; lm_head's transposed layout.
        let x = rand_t(&[2, 3, 16], 1.0, 21);
        let wt = rand_t(&[24, 16], 0.5, 22);
        let c = rand_t(&[2, 3, 24], 1.0, 23);
        let rows = crate::cpu::Rows::of_mask(&[0, 1, 1, 1, 0, 0]);
        let (y0, d0) = value_and_grad(&x, &c, &|t| frozen_linear(t, &wt.t()?, None));
        let (y1, d1) = value_and_grad(&x, &c, &|t| {
            frozen_linear_rows(t, &wt.t()?, None, Some(&rows))
        });
        assert_eq!(y1.dims(), &[2, 3, 24]);
        let flat = |t: &Tensor, w: usize| -> Vec<Vec<f32>> {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v.chunks(w).map(|r| r.to_vec()).collect()
        };
        let (a, b) = (flat(&y0, 24), flat(&y1, 24));
        let (ga, gb) = (flat(&d0, 16), flat(&d1, 16));
        for p in 0..6 {
            if rows.slot(p).is_some() {
                assert_eq!(a[p], b[p], "row {p}: same product as every row computed");
                let d = ga[p]
                    .iter()
                    .zip(&gb[p])
                    .map(|(u, v)| (u - v).abs())
                    .fold(0.0, f32::max);
                assert!(d < 1e-5, "row {p}: gradient differs by {d}");
            } else {
                assert!(b[p].iter().all(|&v| v == 0.0), "row {p} must be zeros");
                assert!(
                    gb[p].iter().all(|&v| v == 0.0),
                    "row {p} must pass no gradient"
                );
                assert!(a[p].iter().any(|&v| v != 0.0));
            }
        }
        // A row set over the wrong number of rows is refused.
        let bad = crate::cpu::Rows::of_mask(&[1, 1]);
        assert!(frozen_linear_rows(&x, &wt.t().unwrap(), None, Some(&bad)).is_err());
    }

    #[test]
    fn frozen_linear_matches_matmul_and_skips_weight_grads() {
        let x = rand_t(&[9, 16], 1.0, 3);
        let w = rand_t(&[16, 24], 0.5, 4);
        let b = rand_t(&[24], 0.5, 5);
        let c = rand_t(&[9, 24], 1.0, 6);
        let (y0, d0) = value_and_grad(&x, &c, &|t| t.matmul(&w)?.broadcast_add(&b));
        let (y1, d1) = value_and_grad(&x, &c, &|t| frozen_linear(t, &w, Some(&b)));
        assert!(max_diff(&y0, &y1) < 1e-5 && max_diff(&d0, &d1) < 1e-5);
        // A 3-d input, no reshape around the op.
        let x3 = rand_t(&[3, 3, 16], 1.0, 14);
        let c3 = rand_t(&[3, 3, 24], 1.0, 15);
        let (y0, d0) = value_and_grad(&x3, &c3, &|t| t.broadcast_matmul(&w)?.broadcast_add(&b));
        let (y1, d1) = value_and_grad(&x3, &c3, &|t| frozen_linear(t, &w, Some(&b)));
        assert_eq!(y1.dims(), &[3, 3, 24]);
        assert!(max_diff(&y0, &y1) < 1e-5 && max_diff(&d0, &d1) < 1e-5);
        // A transposed [out, in] weight (lm_head, Llama's nn.Linear layout).
        let wt = rand_t(&[24, 16], 0.5, 7);
        let (y0, d0) = value_and_grad(&x, &c, &|t| t.matmul(&wt.t()?));
        let (y1, d1) = value_and_grad(&x, &c, &|t| frozen_linear(t, &wt.t()?, None));
        assert!(max_diff(&y0, &y1) < 1e-5 && max_diff(&d0, &d1) < 1e-5);
        // A trained weight takes the composed path, so its gradient still arrives.
        let wv = Var::from_tensor(&w).unwrap();
        let y = frozen_linear(&x, wv.as_tensor(), None).unwrap();
        let g = (y * &c).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(g.get(wv.as_tensor()).is_some());
    }

    #[test]
    fn layer_norm_matches_composition() {
        let x = (rand_t(&[2, 5, 32], 3.0, 8) + 1.5).unwrap();
        let w = rand_t(&[32], 1.0, 9);
        let b = rand_t(&[32], 1.0, 10);
        let c = rand_t(&[2, 5, 32], 1.0, 11);
        let composed = |t: &Tensor| -> CResult<Tensor> {
            let mean = t.mean_keepdim(D::Minus1)?;
            let xc = t.broadcast_sub(&mean)?;
            let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
            xc.broadcast_div(&(var + 1e-5)?.sqrt()?)?
                .broadcast_mul(&w)?
                .broadcast_add(&b)
        };
        let (y0, d0) = value_and_grad(&x, &c, &composed);
        let (y1, d1) = value_and_grad(&x, &c, &|t| Ok(layer_norm(t, &w, &b, 1e-5)?.unwrap()));
        let (dy, dd) = (max_diff(&y0, &y1), max_diff(&d0, &d1));
        assert!(dy < 1e-5 && dd < 1e-5, "forward {dy}, backward {dd}");
        let fused = candle_nn::ops::layer_norm(&x, &w, &b, 1e-5).unwrap();
        assert!(max_diff(&fused, &y1) < 1e-5);
        // Trained weights: not this op.
        let wv = Var::from_tensor(&w).unwrap();
        assert!(layer_norm(&x, wv.as_tensor(), &b, 1e-5).unwrap().is_none());
    }

    #[test]
    fn softmax_matches_composition() {
        let x = rand_t(&[3, 2, 4, 11], 5.0, 12);
        let c = rand_t(&[3, 2, 4, 11], 1.0, 13);
        let (y0, d0) = value_and_grad(&x, &c, &|t| candle_nn::ops::softmax(t, D::Minus1));
        let (y1, d1) = value_and_grad(&x, &c, &|t| softmax_last_dim(t));
        let (dy, dd) = (max_diff(&y0, &y1), max_diff(&d0, &d1));
        assert!(dy < 1e-6 && dd < 1e-6, "forward {dy}, backward {dd}");
        // A masked (-1e9) entry gets probability 0 and gradient 0, as in candle.
        let m = Tensor::new(&[[0.5f32, -1e9, 1.0]], &Device::Cpu).unwrap();
        let p: Vec<Vec<f32>> = softmax_last_dim(&m).unwrap().to_vec2().unwrap();
        assert_eq!(p[0][1], 0.0);
    }
}
