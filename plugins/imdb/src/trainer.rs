//! Full-parameter GPT-2 training on the CPU with the forward and backward passes written out:
//! the fast path of [`crate::pretrain`] (docs/imdb.md, "Pretraining").
//!
//! Why it is fast: an autograd engine on the CPU allocates a tensor per op and walks a graph per
//! step; at widths of a few hundred, that bookkeeping and the element-wise ops (GELU, layer norm,
//! softmax) cost more than the matrix products. Here each step allocates its activation buffers
//! once (one per kept activation, no graph), every matrix product is one large `gemm` call
//! (both cores, operands transposed through strides, accumulating weight gradients in place;
//! the kernels of [`maxmin_lm::cpu`], which GPT-2's no-gradient forward shares), and the
//! element-wise loops are plain slices the compiler vectorises, with the branch-free
//! [`maxmin_core::ops::fastmath`] exponentials for GELU, attention's softmax and the
//! cross-entropy. Row-parallel loops split the batch into fixed chunks and every
//! reduction over rows runs in row order, so results do not depend on the thread count.
//!
//! The model is GPT-2 exactly as `maxmin_lm::Gpt2` computes it (pre-norm blocks, fused q|k|v,
//! `gelu_new`, learned positions, tied `lm_head`, Conv1D `[in, out]` weights); a test checks the
//! loss and every gradient against candle's autograd through that model. Optimiser: Adam with
//! bias correction and global gradient-norm clipping, as `maxmin_core::optim::Adam` (no weight
//! decay). Training windows are full (no padding), as pretraining packs sentence units.

use maxmin_core::ops::fastmath::exp_nonpos;
use maxmin_core::{Error, Result};
use maxmin_lm::cpu::{
    dot, embed, gelu, gelu_back, layer_norm, layer_norm_back_dx, linear, matmul, ROW_CHUNK,
};
use maxmin_lm::Gpt2ModelConfig;
use rayon::prelude::*;
use std::collections::HashMap;

/// Where each named parameter lives in the flat parameter buffer.
#[derive(Debug, Clone)]
struct Layout {
    /// (name, offset, shape) in [`Gpt2ModelConfig::tensor_shapes`] order.
    entries: Vec<(String, usize, Vec<usize>)>,
    index: HashMap<String, usize>,
    total: usize,
}

impl Layout {
    fn new(mc: &Gpt2ModelConfig) -> Self {
        let mut entries = Vec::new();
        let mut index = HashMap::new();
        let mut off = 0;
        for (name, shape) in mc.tensor_shapes() {
            index.insert(name.clone(), entries.len());
            let n: usize = shape.iter().product();
            entries.push((name, off, shape));
            off += n;
        }
        Layout {
            entries,
            index,
            total: off,
        }
    }

    fn range(&self, name: &str) -> std::ops::Range<usize> {
        let (_, off, shape) = &self.entries[self.index[name]];
        *off..*off + shape.iter().product::<usize>()
    }
}

/// Activations of one block, kept for the backward pass.
#[derive(Debug, Clone)]
struct BlockActs {
    x: Vec<f32>,
    ln1: Vec<f32>,
    ln1_stats: Vec<(f32, f32)>,
    qkv: Vec<f32>,
    att: Vec<f32>,
    atty: Vec<f32>,
    res2: Vec<f32>,
    ln2: Vec<f32>,
    ln2_stats: Vec<(f32, f32)>,
    fch: Vec<f32>,
    fcg: Vec<f32>,
}

/// A GPT-2 being trained: parameters, gradients, Adam moments and activation buffers.
#[derive(Debug, Clone)]
pub struct Gpt2Trainer {
    mc: Gpt2ModelConfig,
    layout: Layout,
    params: Vec<f32>,
    pub(crate) grads: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    adam_t: i32,
}

/// Shapes of one forward pass.
#[derive(Debug, Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    v: usize,
}

impl Dims {
    fn n(&self) -> usize {
        self.b * self.t
    }
    fn hd(&self) -> usize {
        self.c / self.nh
    }
}

/// Backward of [`linear`]: `dx = dy·Wᵀ` (overwritten), `dW += xᵀ·dy`, `db += Σ_rows dy`.
#[allow(clippy::too_many_arguments)]
fn linear_back(
    dx: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    n: usize,
    cin: usize,
    cout: usize,
) {
    matmul(dx, dy, w, (n, cout, cin), false, true, false);
    matmul(dw, x, dy, (cin, n, cout), true, false, true);
    for row in dy.chunks(cout) {
        for (d, g) in db.iter_mut().zip(row) {
            *d += g;
        }
    }
}

/// Backward of [`layer_norm`]: `dx += …`, `dw += Σ dy·x̂`, `db += Σ dy`.
#[allow(clippy::too_many_arguments)]
fn layer_norm_back(
    dx: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
    dy: &[f32],
    x: &[f32],
    stats: &[(f32, f32)],
    w: &[f32],
    c: usize,
) {
    layer_norm_back_dx(dx, dy, x, stats, w, c);
    for ((dyr, xr), &(mean, rstd)) in dy.chunks(c).zip(x.chunks(c)).zip(stats) {
        for i in 0..c {
            dw[i] += dyr[i] * (xr[i] - mean) * rstd;
            db[i] += dyr[i];
        }
    }
}

/// Causal self-attention from `qkv` `[b·t × 3c]` into `y` `[b·t × c]`, keeping the softmax
/// probabilities `att` `[b × nh × t × t]` (zero above the diagonal).
fn attention(y: &mut [f32], att: &mut [f32], qkv: &[f32], d: Dims) {
    let (t, c, nh, hd) = (d.t, d.c, d.nh, d.hd());
    let scale = 1.0 / (hd as f32).sqrt();
    y.par_chunks_mut(t * c)
        .zip(att.par_chunks_mut(nh * t * t))
        .zip(qkv.par_chunks(t * 3 * c))
        .for_each(|((yb, ab), qb)| {
            for h in 0..nh {
                for i in 0..t {
                    let q = &qb[i * 3 * c + h * hd..][..hd];
                    let row = &mut ab[(h * t + i) * t..][..t];
                    let mut mx = f32::NEG_INFINITY;
                    for (j, r) in row.iter_mut().enumerate().take(i + 1) {
                        *r = dot(q, &qb[j * 3 * c + c + h * hd..][..hd]) * scale;
                        mx = mx.max(*r);
                    }
                    let mut sum = 0.0;
                    for r in row.iter_mut().take(i + 1) {
                        *r = exp_nonpos(*r - mx);
                        sum += *r;
                    }
                    let inv = 1.0 / sum;
                    for r in row.iter_mut().take(i + 1) {
                        *r *= inv;
                    }
                    row[i + 1..].fill(0.0);
                    let out = &mut yb[i * c + h * hd..][..hd];
                    out.fill(0.0);
                    for (j, &p) in row.iter().enumerate().take(i + 1) {
                        let vj = &qb[j * 3 * c + 2 * c + h * hd..][..hd];
                        for (o, &vv) in out.iter_mut().zip(vj) {
                            *o += p * vv;
                        }
                    }
                }
            }
        });
}

/// Backward of [`attention`]: `dqkv` (overwritten) from `dy`.
fn attention_back(dqkv: &mut [f32], dy: &[f32], qkv: &[f32], att: &[f32], d: Dims) {
    let (t, c, nh, hd) = (d.t, d.c, d.nh, d.hd());
    let scale = 1.0 / (hd as f32).sqrt();
    dqkv.par_chunks_mut(t * 3 * c)
        .zip(dy.par_chunks(t * c))
        .zip(qkv.par_chunks(t * 3 * c))
        .zip(att.par_chunks(nh * t * t))
        .for_each(|(((dqb, dyb), qb), ab)| {
            dqb.fill(0.0);
            let mut ds = vec![0.0f32; t];
            for h in 0..nh {
                for i in 0..t {
                    let p = &ab[(h * t + i) * t..][..t];
                    let dyi = &dyb[i * c + h * hd..][..hd];
                    // dP_ij = dy_i·v_j ; dv_j += p_ij·dy_i
                    let mut pdp = 0.0;
                    for j in 0..=i {
                        let vj = &qb[j * 3 * c + 2 * c + h * hd..][..hd];
                        ds[j] = dot(dyi, vj);
                        pdp += p[j] * ds[j];
                        let dvj = &mut dqb[j * 3 * c + 2 * c + h * hd..][..hd];
                        for (dv, &g) in dvj.iter_mut().zip(dyi) {
                            *dv += p[j] * g;
                        }
                    }
                    // dS_ij = p_ij (dP_ij − Σ_j p dP); dq_i += dS·k·s ; dk_j += dS·q_i·s
                    for j in 0..=i {
                        let dsj = p[j] * (ds[j] - pdp) * scale;
                        let (kj, qi) = (
                            &qb[j * 3 * c + c + h * hd..][..hd],
                            &qb[i * 3 * c + h * hd..][..hd],
                        );
                        let dq = &mut dqb[i * 3 * c + h * hd..][..hd];
                        for (a, &kk) in dq.iter_mut().zip(kj) {
                            *a += dsj * kk;
                        }
                        let dk = &mut dqb[j * 3 * c + c + h * hd..][..hd];
                        for (a, &qq) in dk.iter_mut().zip(qi) {
                            *a += dsj * qq;
                        }
                    }
                }
            }
        });
}

/// Mean cross-entropy of `logits` `[n × v]` against `targets`; overwrites `logits` with
/// d(mean loss)/d(logits).
fn cross_entropy(logits: &mut [f32], targets: &[u32], v: usize) -> f64 {
    let n = targets.len();
    let inv_n = 1.0 / n as f32;
    let mut losses = vec![0.0f64; n];
    logits
        .par_chunks_mut(v * ROW_CHUNK)
        .zip(losses.par_chunks_mut(ROW_CHUNK))
        .zip(targets.par_chunks(ROW_CHUNK))
        .for_each(|((lc, oc), tc)| {
            for ((row, loss), &tg) in lc.chunks_mut(v).zip(oc.iter_mut()).zip(tc) {
                let mx = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let mut sum = 0.0f32;
                for x in row.iter_mut() {
                    *x = exp_nonpos(*x - mx);
                    sum += *x;
                }
                let p_t = row[tg as usize] / sum;
                *loss = -(p_t.max(f32::MIN_POSITIVE) as f64).ln();
                let s = inv_n / sum;
                for x in row.iter_mut() {
                    *x *= s;
                }
                row[tg as usize] -= inv_n;
            }
        });
    losses.iter().sum::<f64>() / n as f64
}

impl Gpt2Trainer {
    /// A trainer over `named` parameters (every name of [`Gpt2ModelConfig::tensor_shapes`],
    /// row-major f32 data of that shape).
    pub fn new(mc: Gpt2ModelConfig, named: &HashMap<String, Vec<f32>>) -> Result<Self> {
        let layout = Layout::new(&mc);
        let mut params = vec![0.0f32; layout.total];
        for (name, off, shape) in &layout.entries {
            let data = named
                .get(name)
                .ok_or_else(|| Error::input(format!("parameter `{name}` is missing"), None))?;
            let n: usize = shape.iter().product();
            if data.len() != n {
                return Err(Error::input(
                    format!("parameter `{name}` has {} values, expected {n}", data.len()),
                    None,
                ));
            }
            params[*off..off + n].copy_from_slice(data);
        }
        let total = layout.total;
        Ok(Gpt2Trainer {
            mc,
            layout,
            params,
            grads: vec![0.0; total],
            m: vec![0.0; total],
            v: vec![0.0; total],
            adam_t: 0,
        })
    }

    /// The parameters by name (row-major data with its shape).
    pub fn named_params(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        self.layout
            .entries
            .iter()
            .map(|(name, off, shape)| {
                let n: usize = shape.iter().product();
                (
                    name.clone(),
                    shape.clone(),
                    self.params[*off..off + n].to_vec(),
                )
            })
            .collect()
    }

    /// The gradient of one parameter after [`Gpt2Trainer::loss_and_grads`].
    pub fn grad(&self, name: &str) -> &[f32] {
        &self.grads[self.layout.range(name)]
    }

    /// Number of parameters (tied embedding counted once).
    pub fn num_params(&self) -> usize {
        self.layout.total
    }

    fn p(&self, name: &str) -> &[f32] {
        &self.params[self.layout.range(name)]
    }

    fn dims(&self, windows: &[Vec<u32>]) -> Result<Dims> {
        let b = windows.len();
        let t = windows.first().map_or(0, |w| w.len().saturating_sub(1));
        if b == 0 || t == 0 || windows.iter().any(|w| w.len() != t + 1) {
            return Err(Error::input(
                "training windows must be non-empty and of one length ≥ 2",
                None,
            ));
        }
        if t > self.mc.n_positions {
            return Err(Error::input(
                format!(
                    "window of {t} positions exceeds n_positions {}",
                    self.mc.n_positions
                ),
                None,
            ));
        }
        if let Some(bad) = windows
            .iter()
            .flatten()
            .find(|&&x| x as usize >= self.mc.vocab_size)
        {
            return Err(Error::input(
                format!("token id {bad} outside the vocabulary"),
                None,
            ));
        }
        Ok(Dims {
            b,
            t,
            c: self.mc.n_embd,
            nh: self.mc.n_head,
            v: self.mc.vocab_size,
        })
    }

    /// Mean next-token cross-entropy over `windows` (each `t + 1` tokens, all one length) without
    /// gradients.
    pub fn loss(&self, windows: &[Vec<u32>]) -> Result<f64> {
        let d = self.dims(windows)?;
        let (ids, targets) = split_windows(windows, d.t);
        let (_, _, mut logits) = self.forward(&ids, d);
        Ok(cross_entropy(&mut logits, &targets, d.v))
    }

    /// Mean next-token cross-entropy over `windows` and its gradient (stored, see
    /// [`Gpt2Trainer::grad`]).
    pub fn loss_and_grads(&mut self, windows: &[Vec<u32>]) -> Result<f64> {
        let d = self.dims(windows)?;
        let (ids, targets) = split_windows(windows, d.t);
        let (acts, lnf, mut logits) = self.forward(&ids, d);
        let loss = cross_entropy(&mut logits, &targets, d.v);
        self.grads.fill(0.0);
        self.backward(&ids, d, &acts, &lnf, &logits);
        Ok(loss)
    }

    /// Forward pass: per-block activations, the final layer norm and the logits.
    fn forward(&self, ids: &[u32], d: Dims) -> (Vec<BlockActs>, FinalNorm, Vec<f32>) {
        let (n, c) = (d.n(), d.c);
        let (wte, wpe) = (self.p("wte.weight"), self.p("wpe.weight"));
        let mut x = embed(wte, wpe, ids, (0..n).map(|r| r % d.t), c);
        let mut acts = Vec::with_capacity(self.mc.n_layer);
        for l in 0..self.mc.n_layer {
            let (a, out) = self.block_forward(l, &x, d);
            acts.push(a);
            x = out;
        }
        let mut lnf = vec![0.0f32; n * c];
        let mut stats = vec![(0.0, 0.0); n];
        layer_norm(
            &mut lnf,
            &mut stats,
            &x,
            self.p("ln_f.weight"),
            self.p("ln_f.bias"),
            c,
            self.mc.layer_norm_epsilon as f32,
        );
        let mut logits = vec![0.0f32; n * d.v];
        matmul(&mut logits, &lnf, wte, (n, c, d.v), false, true, false);
        let fin = FinalNorm {
            out: lnf,
            stats,
            input: x,
        };
        (acts, fin, logits)
    }

    /// One block's forward from its input `x`; returns its activations and its output.
    fn block_forward(&self, l: usize, x: &[f32], d: Dims) -> (BlockActs, Vec<f32>) {
        let (n, c) = (d.n(), d.c);
        let f = self.mc.inner();
        let p = |s: &str| self.p(&format!("h.{l}.{s}"));
        let mut a = BlockActs {
            x: x.to_vec(),
            ln1: vec![0.0; n * c],
            ln1_stats: vec![(0.0, 0.0); n],
            qkv: vec![0.0; n * 3 * c],
            att: vec![0.0; d.b * d.nh * d.t * d.t],
            atty: vec![0.0; n * c],
            res2: vec![0.0; n * c],
            ln2: vec![0.0; n * c],
            ln2_stats: vec![(0.0, 0.0); n],
            fch: vec![0.0; n * f],
            fcg: vec![0.0; n * f],
        };
        layer_norm(
            &mut a.ln1,
            &mut a.ln1_stats,
            x,
            p("ln_1.weight"),
            p("ln_1.bias"),
            c,
            self.mc.layer_norm_epsilon as f32,
        );
        let (w, b) = (p("attn.c_attn.weight"), p("attn.c_attn.bias"));
        linear(&mut a.qkv, &a.ln1, w, b, n, c, 3 * c);
        attention(&mut a.atty, &mut a.att, &a.qkv, d);
        let (w, b) = (p("attn.c_proj.weight"), p("attn.c_proj.bias"));
        linear(&mut a.res2, &a.atty, w, b, n, c, c);
        add_in_place(&mut a.res2, x);
        layer_norm(
            &mut a.ln2,
            &mut a.ln2_stats,
            &a.res2,
            p("ln_2.weight"),
            p("ln_2.bias"),
            c,
            self.mc.layer_norm_epsilon as f32,
        );
        let (w, b) = (p("mlp.c_fc.weight"), p("mlp.c_fc.bias"));
        linear(&mut a.fch, &a.ln2, w, b, n, c, f);
        gelu(&mut a.fcg, &a.fch);
        let mut out = vec![0.0f32; n * c];
        let (w, b) = (p("mlp.c_proj.weight"), p("mlp.c_proj.bias"));
        linear(&mut out, &a.fcg, w, b, n, f, c);
        add_in_place(&mut out, &a.res2);
        (a, out)
    }

    /// Backward pass from d(loss)/d(logits) into `self.grads` (which must be zeroed).
    fn backward(
        &mut self,
        ids: &[u32],
        d: Dims,
        acts: &[BlockActs],
        lnf: &FinalNorm,
        dlogits: &[f32],
    ) {
        let (n, c) = (d.n(), d.c);
        let wte_r = self.layout.range("wte.weight");
        let mut dlnf = vec![0.0f32; n * c];
        matmul(
            &mut dlnf,
            dlogits,
            &self.params[wte_r.clone()],
            (n, d.v, c),
            false,
            false,
            false,
        );
        matmul(
            &mut self.grads[wte_r],
            dlogits,
            &lnf.out,
            (d.v, n, c),
            true,
            false,
            true,
        );
        let mut dx = vec![0.0f32; n * c];
        {
            let (w, dw, db) = self.ln_parts("ln_f");
            layer_norm_back(&mut dx, dw, db, &dlnf, &lnf.input, &lnf.stats, &w, c);
        }
        let mut scratch = Scratch::new(d, self.mc.inner());
        for l in (0..self.mc.n_layer).rev() {
            self.block_backward(l, &mut dx, &acts[l], d, &mut scratch);
        }
        // Embeddings: dwte[id] += dx, dwpe[pos] += dx.
        let (wte_r, wpe_r) = (
            self.layout.range("wte.weight"),
            self.layout.range("wpe.weight"),
        );
        for (r, (row, &id)) in dx.chunks(c).zip(ids).enumerate() {
            let pos = r % d.t;
            let e = &mut self.grads[wte_r.start + id as usize * c..][..c];
            for (g, v) in e.iter_mut().zip(row) {
                *g += v;
            }
            let p = &mut self.grads[wpe_r.start + pos * c..][..c];
            for (g, v) in p.iter_mut().zip(row) {
                *g += v;
            }
        }
    }

    /// The weight of layer norm `prefix` and mutable views of its weight and bias gradients.
    fn ln_parts(&mut self, prefix: &str) -> (Vec<f32>, &mut [f32], &mut [f32]) {
        let w = self.p(&format!("{prefix}.weight")).to_vec();
        let (rw, rb) = (
            self.layout.range(&format!("{prefix}.weight")),
            self.layout.range(&format!("{prefix}.bias")),
        );
        let (dw, db) = two_mut(&mut self.grads, rw, rb);
        (w, dw, db)
    }

    /// Mutable views of a linear layer's weight and bias gradients, and its weight.
    fn lin_parts(&mut self, prefix: &str) -> (&[f32], &mut [f32], &mut [f32]) {
        let (rw, rb) = (
            self.layout.range(&format!("{prefix}.weight")),
            self.layout.range(&format!("{prefix}.bias")),
        );
        let (dw, db) = two_mut(&mut self.grads, rw.clone(), rb);
        (&self.params[rw], dw, db)
    }

    /// One block's backward: `dx` holds d(loss)/d(block output) on entry and d(loss)/d(block
    /// input) on exit (the residual path passes it through; the branches add to it).
    fn block_backward(
        &mut self,
        l: usize,
        dx: &mut [f32],
        a: &BlockActs,
        d: Dims,
        s: &mut Scratch,
    ) {
        let (n, c, f) = (d.n(), d.c, self.mc.inner());
        let pre = format!("h.{l}");
        // MLP: out = res2 + fcg·W2 + b2.
        {
            let (w, dw, db) = self.lin_parts(&format!("{pre}.mlp.c_proj"));
            linear_back(&mut s.dfcg, dw, db, dx, &a.fcg, w, n, f, c);
        }
        gelu_back(&mut s.dfch, &s.dfcg, &a.fch);
        {
            let (w, dw, db) = self.lin_parts(&format!("{pre}.mlp.c_fc"));
            linear_back(&mut s.dln, dw, db, &s.dfch, &a.ln2, w, n, c, f);
        }
        // dres2 = dx + LN2'(dln)
        {
            let (w, dw, db) = self.ln_parts(&format!("{pre}.ln_2"));
            layer_norm_back(dx, dw, db, &s.dln, &a.res2, &a.ln2_stats, &w, c);
        }
        // Attention: res2 = x + atty·Wp + bp.
        {
            let (w, dw, db) = self.lin_parts(&format!("{pre}.attn.c_proj"));
            linear_back(&mut s.datty, dw, db, dx, &a.atty, w, n, c, c);
        }
        attention_back(&mut s.dqkv, &s.datty, &a.qkv, &a.att, d);
        {
            let (w, dw, db) = self.lin_parts(&format!("{pre}.attn.c_attn"));
            linear_back(&mut s.dln, dw, db, &s.dqkv, &a.ln1, w, n, c, 3 * c);
        }
        let (w, dw, db) = self.ln_parts(&format!("{pre}.ln_1"));
        layer_norm_back(dx, dw, db, &s.dln, &a.x, &a.ln1_stats, &w, c);
    }

    /// One Adam step with learning rate `lr` after gradient-norm clipping at `max_norm`; returns
    /// the gradient norm before clipping. Errors (and leaves the parameters alone) when the
    /// gradient is not finite.
    pub fn adam_step(&mut self, lr: f64, max_norm: f64) -> Result<f64> {
        let norm = self
            .grads
            .iter()
            .map(|&g| (g as f64) * (g as f64))
            .sum::<f64>()
            .sqrt();
        if !norm.is_finite() {
            return Err(Error::Internal(format!("gradient norm is {norm}")));
        }
        let scale = if norm > max_norm {
            (max_norm / (norm + 1e-6)) as f32
        } else {
            1.0
        };
        self.adam_t += 1;
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f32);
        let bc1 = 1.0 - b1.powi(self.adam_t);
        let bc2_sqrt = (1.0 - b2.powi(self.adam_t)).sqrt() as f32;
        let step = (lr / bc1) as f32;
        let (b1, b2) = (b1 as f32, b2 as f32);
        self.params
            .par_chunks_mut(1 << 16)
            .zip(self.grads.par_chunks(1 << 16))
            .zip(self.m.par_chunks_mut(1 << 16))
            .zip(self.v.par_chunks_mut(1 << 16))
            .for_each(|(((p, g), m), v)| {
                for i in 0..p.len() {
                    let gi = g[i] * scale;
                    m[i] = b1 * m[i] + (1.0 - b1) * gi;
                    v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                    p[i] -= step * m[i] / (v[i].sqrt() / bc2_sqrt + eps);
                }
            });
        Ok(norm)
    }
}

/// The final layer norm's output, per-row statistics and input, kept for the backward pass.
#[derive(Debug)]
struct FinalNorm {
    out: Vec<f32>,
    stats: Vec<(f32, f32)>,
    input: Vec<f32>,
}

/// Backward scratch buffers, allocated once per step.
struct Scratch {
    dfcg: Vec<f32>,
    dfch: Vec<f32>,
    dln: Vec<f32>,
    datty: Vec<f32>,
    dqkv: Vec<f32>,
}

impl Scratch {
    fn new(d: Dims, f: usize) -> Self {
        let (n, c) = (d.n(), d.c);
        Scratch {
            dfcg: vec![0.0; n * f],
            dfch: vec![0.0; n * f],
            dln: vec![0.0; n * c],
            datty: vec![0.0; n * c],
            dqkv: vec![0.0; n * 3 * c],
        }
    }
}

fn add_in_place(y: &mut [f32], x: &[f32]) {
    for (a, b) in y.iter_mut().zip(x) {
        *a += b;
    }
}

/// Two disjoint mutable ranges of one buffer.
fn two_mut(
    buf: &mut [f32],
    a: std::ops::Range<usize>,
    b: std::ops::Range<usize>,
) -> (&mut [f32], &mut [f32]) {
    assert!(a.end <= b.start || b.end <= a.start, "overlapping ranges");
    if a.start < b.start {
        let (lo, hi) = buf.split_at_mut(b.start);
        (&mut lo[a], &mut hi[..b.end - b.start])
    } else {
        let (lo, hi) = buf.split_at_mut(a.start);
        let blen = b.end - b.start;
        (&mut hi[..a.end - a.start], &mut lo[b.start..b.start + blen])
    }
}

/// Inputs (first `t` tokens) and targets (last `t`) of each window, flattened.
fn split_windows(windows: &[Vec<u32>], t: usize) -> (Vec<u32>, Vec<u32>) {
    let mut ids = Vec::with_capacity(windows.len() * t);
    let mut targets = Vec::with_capacity(windows.len() * t);
    for w in windows {
        ids.extend_from_slice(&w[..t]);
        targets.extend_from_slice(&w[1..]);
    }
    (ids, targets)
}
