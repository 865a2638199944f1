//! GPT-2's forward with LoRA adapters as one candle op whose backward is written out: the
//! training forward of LM PPO on f32 CPU weights (docs/lm-rlhf.md, "Speed").
//!
//! Why: through candle's autograd a LoRA step builds ~25 graph nodes per layer, and the backward
//! pays per node a zero-filled gradient buffer and an add, plus the element-wise and attention
//! ops at tensor-engine speed. Here the op's input is every adapter weight in one flat vector
//! and its output is the final hidden state `(b, t, c)`; the forward keeps each layer's
//! activations in plain buffers ([`crate::cpu`] kernels), and the backward walks the layers in
//! reverse computing only what reaches an adapter: `dx = dy Wᵀ` through every frozen weight (no
//! `dW`), the adapters' `dA`, `dB`, and the masked attention's backward by matrix products.
//! candle then carries the flat gradient back to each adapter `Var` (the vector is a `cat` of
//! them) and the gradient of the hidden state comes from candle's ops downstream (`lm_head`, the
//! value head, the PPO losses), so the trainer is unchanged. Tests compare every adapter's
//! gradient with the tensor path (`tests/gpt2_cpu_path.rs`).

use super::{f32_view, Gpt2};
use crate::cpu::{self, AttnShape};
use crate::lm::LmInput;
use crate::lora::Lora;
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Shape, Tensor};
use std::sync::Mutex;

type CResult<T> = candle_core::Result<T>;

/// The four linear modules of a block, in the order [`Gpt2`] applies them.
const MODULES: [&str; 4] = ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"];

/// Where one adapter's `A` `[r × in]` and `B` `[out × r]` sit in the flat parameter vector.
#[derive(Debug, Clone, Copy)]
struct Slot {
    a: usize,
    b: usize,
    r: usize,
}

/// One block's kept activations.
#[derive(Default)]
struct LayerActs {
    x: Vec<f32>,
    ln1: Vec<f32>,
    st1: Vec<(f32, f32)>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    probs: Vec<f32>,
    atty: Vec<f32>,
    res2: Vec<f32>,
    ln2: Vec<f32>,
    st2: Vec<(f32, f32)>,
    fch: Vec<f32>,
    fcg: Vec<f32>,
    /// `x Aᵀ` of each adapted module (unscaled).
    h: [Vec<f32>; 4],
}

struct Acts {
    layers: Vec<LayerActs>,
    xf: Vec<f32>,
    stf: Vec<(f32, f32)>,
}

/// The op: the model, the batch, and where each adapter lives in the flat input.
pub(super) struct LoraBody {
    model: Gpt2,
    ids: Vec<u32>,
    positions: Vec<u32>,
    mask: Vec<u8>,
    /// The unmasked positions: every position-wise layer runs on these rows only.
    rows: cpu::Rows,
    b: usize,
    t: usize,
    slots: Vec<[Option<Slot>; 4]>,
    scale: f32,
    total: usize,
    acts: Mutex<Option<Acts>>,
}

fn err(e: maxmin_core::Error) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

impl LoraBody {
    /// The op for `input` (positions and mask from the attention context) and the flat vector
    /// of `lora`'s adapters it reads, in the same order.
    pub(super) fn new(
        model: &Gpt2,
        input: &LmInput,
        positions: Vec<u32>,
        mask: Vec<u8>,
        lora: &Lora,
    ) -> maxmin_core::Result<(Self, Tensor)> {
        let mut slots = vec![[None; 4]; model.cfg.n_layer];
        let mut flat = Vec::new();
        let mut off = 0;
        for (l, layer) in slots.iter_mut().enumerate() {
            for (slot, m) in layer.iter_mut().zip(MODULES) {
                let Some((a, b)) = lora.adapter(&format!("h.{l}.{m}")) else {
                    continue;
                };
                *slot = Some(Slot {
                    a: off,
                    b: off + a.elem_count(),
                    r: a.dim(0)?,
                });
                off += a.elem_count() + b.elem_count();
                flat.push(a.flatten_all()?);
                flat.push(b.flatten_all()?);
            }
        }
        if flat.len() != 2 * lora.modules().len() {
            return Err(maxmin_core::Error::Internal(format!(
                "adapters {:?} are not all GPT-2 linear modules",
                lora.modules()
            )));
        }
        let flat = Tensor::cat(&flat, 0)?;
        Ok((
            LoraBody {
                model: model.clone(),
                rows: cpu::Rows::of_mask(&input.mask),
                ids: input.ids.clone(),
                positions,
                mask,
                b: input.batch,
                t: input.seq_len,
                slots,
                scale: lora.scale() as f32,
                total: off,
                acts: Mutex::new(None),
            },
            flat,
        ))
    }

    fn dims(&self, i: usize) -> (usize, usize) {
        let (c, f) = (self.model.cfg.n_embd, self.model.cfg.inner());
        [(c, 3 * c), (c, c), (c, f), (f, c)][i]
    }

    fn weights(&self, l: usize, i: usize) -> &(Tensor, Tensor) {
        let blk = &self.model.blocks[l];
        [&blk.c_attn, &blk.attn_proj, &blk.c_fc, &blk.mlp_proj][i]
    }

    /// `y = x W + b + scale · (x Aᵀ) Bᵀ`; returns `x Aᵀ` (empty without an adapter).
    fn linear(&self, y: &mut [f32], x: &[f32], l: usize, i: usize, p: &[f32]) -> CResult<Vec<f32>> {
        let (cin, cout) = self.dims(i);
        let wb = self.weights(l, i);
        let (w, bias) = (f32_view(&wb.0).map_err(err)?, f32_view(&wb.1).map_err(err)?);
        let adapter = self.slots[l][i].map(|s| cpu::Adapter {
            a: &p[s.a..][..s.r * cin],
            b: &p[s.b..][..cout * s.r],
            scale: self.scale,
        });
        let n = x.len() / cin;
        Ok(cpu::linear_lora(y, x, &w, &bias, adapter, n, cin, cout))
    }

    /// Backward of [`LoraBody::linear`]: returns `dx`, adds `dA`, `dB` into `grad`.
    #[allow(clippy::too_many_arguments)]
    fn linear_back(
        &self,
        dy: &[f32],
        x: &[f32],
        h: &[f32],
        l: usize,
        i: usize,
        p: &[f32],
        grad: &mut [f32],
    ) -> CResult<Vec<f32>> {
        let (cin, cout) = self.dims(i);
        let n = dy.len() / cout;
        let w = f32_view(&self.weights(l, i).0).map_err(err)?;
        let mut dx = vec![0.0f32; n * cin];
        cpu::matmul(&mut dx, dy, &w, (n, cout, cin), false, true, false);
        if let Some(s) = self.slots[l][i] {
            let (a, b) = (&p[s.a..][..s.r * cin], &p[s.b..][..cout * s.r]);
            // dB = scale · dyᵀ h ; dh = scale · dy B ; dA = dhᵀ x ; dx += dh A
            let mut db = vec![0.0f32; cout * s.r];
            cpu::matmul(&mut db, dy, h, (cout, n, s.r), true, false, false);
            for (g, d) in grad[s.b..][..cout * s.r].iter_mut().zip(&db) {
                *g += d * self.scale;
            }
            let mut dh = vec![0.0f32; n * s.r];
            cpu::matmul(&mut dh, dy, b, (n, cout, s.r), false, false, false);
            dh.iter_mut().for_each(|v| *v *= self.scale);
            let mut da = vec![0.0f32; s.r * cin];
            cpu::matmul(&mut da, &dh, x, (s.r, n, cin), true, false, false);
            for (g, d) in grad[s.a..][..s.r * cin].iter_mut().zip(&da) {
                *g += d;
            }
            cpu::matmul(&mut dx, &dh, a, (n, s.r, cin), false, false, true);
        }
        Ok(dx)
    }

    fn shape(&self) -> AttnShape {
        let (c, nh) = (self.model.cfg.n_embd, self.model.cfg.n_head);
        AttnShape {
            b: self.b,
            nh,
            t: self.t,
            past: 0,
            hd: c / nh,
        }
    }

    /// [`cpu::layer_norm`] with the frozen weights `ln` (read in place).
    fn layer_norm(
        &self,
        y: &mut [f32],
        st: &mut [(f32, f32)],
        x: &[f32],
        ln: &(Tensor, Tensor),
    ) -> CResult<()> {
        let (w, b) = (f32_view(&ln.0).map_err(err)?, f32_view(&ln.1).map_err(err)?);
        let cfg = &self.model.cfg;
        let eps = cfg.layer_norm_epsilon as f32;
        cpu::layer_norm(y, st, x, &w, &b, cfg.n_embd, eps);
        Ok(())
    }

    /// [`cpu::layer_norm_back_dx`] with the frozen weights `ln`.
    fn layer_norm_back(
        &self,
        dx: &mut [f32],
        dy: &[f32],
        x: &[f32],
        st: &[(f32, f32)],
        ln: &(Tensor, Tensor),
    ) -> CResult<()> {
        let w = f32_view(&ln.0).map_err(err)?;
        cpu::layer_norm_back_dx(dx, dy, x, st, &w, self.model.cfg.n_embd);
        Ok(())
    }
}

impl CustomOp1 for LoraBody {
    fn name(&self) -> &'static str {
        "gpt2-lora-body"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let CpuStorage::F32(v) = s else {
            bail!("gpt2-lora-body: adapters must be f32")
        };
        let Some((lo, hi)) = l.contiguous_offsets() else {
            bail!("gpt2-lora-body: the adapter vector must be contiguous")
        };
        let p = &v[lo..hi];
        if p.len() != self.total {
            bail!(
                "gpt2-lora-body: {} adapter values, expected {}",
                p.len(),
                self.total
            );
        }
        let cfg = &self.model.cfg;
        let (c, f) = (cfg.n_embd, cfg.inner());
        let rows = &self.rows;
        let n = rows.len();
        let sh = self.shape();
        let (ids, pos) = (rows.gather(&self.ids, 1), rows.gather(&self.positions, 1));
        let mut x = self.model.embed_cpu(&ids, &pos).map_err(err)?;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for l in 0..cfg.n_layer {
            let blk = &self.model.blocks[l];
            let mut a = LayerActs {
                ln1: vec![0.0; n * c],
                st1: vec![(0.0, 0.0); n],
                probs: vec![0.0; sh.b * sh.nh * sh.t * sh.t],
                atty: vec![0.0; n * c],
                res2: vec![0.0; n * c],
                ln2: vec![0.0; n * c],
                st2: vec![(0.0, 0.0); n],
                fch: vec![0.0; n * f],
                fcg: vec![0.0; n * f],
                ..LayerActs::default()
            };
            self.layer_norm(&mut a.ln1, &mut a.st1, &x, &blk.ln_1)?;
            let mut qkv = vec![0.0f32; n * 3 * c];
            a.h[0] = self.linear(&mut qkv, &a.ln1, l, 0, p)?;
            let [q, k, vv] = cpu::split_heads(&qkv, (sh.b, sh.t, sh.nh, sh.hd), rows);
            let probs = &mut a.probs;
            cpu::masked_attention_keep(&mut a.atty, probs, &q, &k, &vv, &self.mask, sh, rows);
            (a.q, a.k, a.v) = (q, k, vv);
            a.h[1] = self.linear(&mut a.res2, &a.atty, l, 1, p)?;
            a.res2.iter_mut().zip(&x).for_each(|(r, x)| *r += x);
            self.layer_norm(&mut a.ln2, &mut a.st2, &a.res2, &blk.ln_2)?;
            a.h[2] = self.linear(&mut a.fch, &a.ln2, l, 2, p)?;
            cpu::gelu(&mut a.fcg, &a.fch);
            let mut out = vec![0.0f32; n * c];
            a.h[3] = self.linear(&mut out, &a.fcg, l, 3, p)?;
            out.iter_mut().zip(&a.res2).for_each(|(o, r)| *o += r);
            a.x = std::mem::replace(&mut x, out);
            layers.push(a);
        }
        let mut hidden = vec![0.0f32; n * c];
        let mut stf = vec![(0.0, 0.0); n];
        self.layer_norm(&mut hidden, &mut stf, &x, &self.model.ln_f)?;
        // Padded positions' hidden states are zeros; their gradients are ignored in `bwd`.
        let hidden = rows.scatter(&hidden, c);
        *self
            .acts
            .lock()
            .map_err(|_| candle_core::Error::Msg("lock".into()))? =
            Some(Acts { layers, xf: x, stf });
        Ok((CpuStorage::F32(hidden), Shape::from((self.b, self.t, c))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        let acts = self
            .acts
            .lock()
            .map_err(|_| candle_core::Error::Msg("lock".into()))?
            .take();
        let Some(acts) = acts else {
            bail!("gpt2-lora-body: backward without a forward (or twice)")
        };
        let p: Vec<f32> = arg.flatten_all()?.to_vec1()?;
        let cfg = &self.model.cfg;
        let c = cfg.n_embd;
        let rows = &self.rows;
        let n = rows.len();
        let dh = rows.gather(&grad.flatten_all()?.to_vec1::<f32>()?, c);
        let sh = self.shape();
        let dims4 = (sh.b, sh.t, sh.nh, sh.hd);
        let mut g = vec![0.0f32; self.total];
        let mut dx = vec![0.0f32; n * c];
        self.layer_norm_back(&mut dx, &dh, &acts.xf, &acts.stf, &self.model.ln_f)?;
        for l in (0..cfg.n_layer).rev() {
            let a = &acts.layers[l];
            let blk = &self.model.blocks[l];
            // MLP: out = res2 + proj(gelu(fc(ln2(res2))))
            let dfcg = self.linear_back(&dx, &a.fcg, &a.h[3], l, 3, &p, &mut g)?;
            let mut dfch = vec![0.0f32; dfcg.len()];
            cpu::gelu_back(&mut dfch, &dfcg, &a.fch);
            let dln2 = self.linear_back(&dfch, &a.ln2, &a.h[2], l, 2, &p, &mut g)?;
            let mut dres2 = dx;
            self.layer_norm_back(&mut dres2, &dln2, &a.res2, &a.st2, &blk.ln_2)?;
            // Attention: res2 = x + proj(attn(qkv(ln1(x))))
            let datty = self.linear_back(&dres2, &a.atty, &a.h[1], l, 1, &p, &mut g)?;
            let dy = cpu::to_heads(&datty, c, 0, dims4, rows);
            let (mut dq, mut dk, mut dv) = (
                vec![0.0; dy.len()],
                vec![0.0; dy.len()],
                vec![0.0; dy.len()],
            );
            cpu::masked_attention_back(
                &mut dq,
                &mut dk,
                &mut dv,
                &dy,
                &a.probs,
                (&a.q, &a.k, &a.v),
                &self.mask,
                sh,
            );
            let mut dqkv = vec![0.0f32; n * 3 * c];
            for (part, d) in [&dq, &dk, &dv].into_iter().enumerate() {
                cpu::from_heads(&mut dqkv, 3 * c, part * c, d, dims4, rows);
            }
            let dln1 = self.linear_back(&dqkv, &a.ln1, &a.h[0], l, 0, &p, &mut g)?;
            dx = dres2;
            self.layer_norm_back(&mut dx, &dln1, &a.x, &a.st1, &blk.ln_1)?;
        }
        Ok(Some(Tensor::from_vec(g, self.total, arg.device())?))
    }
}
