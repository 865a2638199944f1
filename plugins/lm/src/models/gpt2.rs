//! GPT-2 (Radford et al. 2019) as Hugging Face transformers 4.47 `GPT2LMHeadModel` computes it:
//! learned absolute positions, pre-norm blocks, fused `c_attn` (q|k|v), `gelu_new`, tied `lm_head`.
//! Checkpoint keys are read verbatim, with or without the `transformer.` prefix; `Conv1D` weights
//! are stored `[in, out]` and used as stored (`x @ W`). Written for training: logits at every
//! position, hidden states for heads, an external KV cache, left-padded batches, LoRA.
//!
//! Three execution paths (docs/lm.md, "Speed"); tests hold them to the same function:
//!
//! - on f32 CPU weights without gradients, plain slices through [`crate::cpu`]'s kernels;
//! - on f32 CPU weights training adapters, one op with a written-out backward
//!   (`gpt2_lora_op.rs`);
//! - everywhere else (CUDA, f16/bf16, from-scratch training, LoRA dropout), candle's tensor ops.

use crate::checkpoint::{read_config, Checkpoint, LoadAccounting};
use crate::cpu;
use crate::lm::{self, AttnCtx, CausalLm, ForwardOpts, KvCache, LmInput, LmOutput};
use crate::lora::{Lora, LoraTarget};
use crate::ops;
use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use maxmin_core::{Error, Result};
use serde::Deserialize;
use std::path::Path;

#[path = "gpt2_lora_op.rs"]
mod lora_op;

/// The fields of GPT-2's `config.json` this implementation reads (others are ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Gpt2ModelConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Maximum positions.
    pub n_positions: usize,
    /// Hidden size.
    pub n_embd: usize,
    /// Layers.
    pub n_layer: usize,
    /// Attention heads.
    pub n_head: usize,
    /// MLP width (default 4 · n_embd).
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// Layer-norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// Activation; only `gelu_new` (tanh approximation, GPT-2's) is supported.
    #[serde(default = "default_act")]
    pub activation_function: String,
    /// End-of-sequence token.
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    /// Whether scores are divided by sqrt(head_dim) (true in every released GPT-2).
    #[serde(default = "yes")]
    pub scale_attn_weights: bool,
    /// Unsupported variant switch; must be false.
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Unsupported variant switch; must be false.
    #[serde(default)]
    pub reorder_and_upcast_attn: bool,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_act() -> String {
    "gelu_new".into()
}
fn yes() -> bool {
    true
}

impl Gpt2ModelConfig {
    /// The GPT-2 124M shape (`gpt2` on the hub).
    pub fn gpt2_124m() -> Self {
        Gpt2ModelConfig {
            vocab_size: 50257,
            n_positions: 1024,
            n_embd: 768,
            n_layer: 12,
            n_head: 12,
            n_inner: None,
            layer_norm_epsilon: 1e-5,
            activation_function: "gelu_new".into(),
            eos_token_id: Some(50256),
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            reorder_and_upcast_attn: false,
        }
    }

    fn check(&self, file: &Path) -> Result<()> {
        let bad = |m: String| Err(Error::data(file, None, m));
        for (k, v) in [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
        ] {
            if v == 0 {
                return bad(format!("`{k}` must be positive"));
            }
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return bad(format!(
                "n_embd {} is not divisible by n_head {}",
                self.n_embd, self.n_head
            ));
        }
        if !matches!(
            self.activation_function.as_str(),
            "gelu_new" | "gelu_pytorch_tanh"
        ) {
            return bad(format!(
                "activation_function `{}` is not supported (expected gelu_new)",
                self.activation_function
            ));
        }
        if self.scale_attn_by_inverse_layer_idx
            || self.reorder_and_upcast_attn
            || !self.scale_attn_weights
        {
            return bad("GPT-2 attention variants (scale_attn_by_inverse_layer_idx, reorder_and_upcast_attn, scale_attn_weights = false) are not supported".into());
        }
        Ok(())
    }

    /// MLP width.
    pub fn inner(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    /// Every base tensor (name without prefix, shape): what [`Gpt2::load`] reads.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (h, i) = (self.n_embd, self.inner());
        let mut v = vec![
            ("wte.weight".to_string(), vec![self.vocab_size, h]),
            ("wpe.weight".to_string(), vec![self.n_positions, h]),
        ];
        for l in 0..self.n_layer {
            let p = format!("h.{l}");
            for (n, s) in [
                ("ln_1.weight", vec![h]),
                ("ln_1.bias", vec![h]),
                ("attn.c_attn.weight", vec![h, 3 * h]),
                ("attn.c_attn.bias", vec![3 * h]),
                ("attn.c_proj.weight", vec![h, h]),
                ("attn.c_proj.bias", vec![h]),
                ("ln_2.weight", vec![h]),
                ("ln_2.bias", vec![h]),
                ("mlp.c_fc.weight", vec![h, i]),
                ("mlp.c_fc.bias", vec![i]),
                ("mlp.c_proj.weight", vec![i, h]),
                ("mlp.c_proj.bias", vec![h]),
            ] {
                v.push((format!("{p}.{n}"), s));
            }
        }
        v.push(("ln_f.weight".into(), vec![h]));
        v.push(("ln_f.bias".into(), vec![h]));
        v
    }

    /// Memory the loader accounts for this shape stored and computed in `dtype`.
    pub fn accounting(&self, stored: DType, compute: DType) -> LoadAccounting {
        let mut a = LoadAccounting::default();
        for (_, s) in self.tensor_shapes() {
            a.add(s.iter().product(), stored, compute);
        }
        a
    }
}

#[derive(Debug, Clone)]
struct Block {
    ln_1: (Tensor, Tensor),
    c_attn: (Tensor, Tensor),
    attn_proj: (Tensor, Tensor),
    ln_2: (Tensor, Tensor),
    c_fc: (Tensor, Tensor),
    mlp_proj: (Tensor, Tensor),
}

/// A loaded GPT-2; cheap to clone (tensors are reference counted), immutable (weights frozen).
#[derive(Debug, Clone)]
pub struct Gpt2 {
    cfg: Gpt2ModelConfig,
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: (Tensor, Tensor),
    lm_head: Tensor,
    device: Device,
    accounting: LoadAccounting,
    /// Take the differentiable path even without adapters (set by [`Gpt2::from_tensors`], whose
    /// tensors may be `Var`s being trained).
    differentiable: bool,
}

impl Gpt2 {
    /// Load a GPT-2 directory (`config.json` + safetensors) in compute `dtype` on `device`.
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let cfg: Gpt2ModelConfig = read_config(dir)?;
        cfg.check(&dir.join("config.json"))?;
        let mut ck = Checkpoint::open(dir, dtype, device)?;
        let prefix = if ck.contains("transformer.wte.weight") {
            "transformer."
        } else {
            ""
        };
        let shapes: std::collections::HashMap<String, Vec<usize>> =
            cfg.tensor_shapes().into_iter().collect();
        let mut get = |name: &str| -> Result<Tensor> {
            let shape = shapes
                .get(name)
                .ok_or_else(|| Error::Internal(format!("no shape for {name}")))?;
            ck.get(&format!("{prefix}{name}"), shape)
        };
        let pair =
            |get: &mut dyn FnMut(&str) -> Result<Tensor>, n: &str| -> Result<(Tensor, Tensor)> {
                Ok((get(&format!("{n}.weight"))?, get(&format!("{n}.bias"))?))
            };
        let wte = get("wte.weight")?;
        let wpe = get("wpe.weight")?;
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for l in 0..cfg.n_layer {
            let p = format!("h.{l}");
            blocks.push(Block {
                ln_1: pair(&mut get, &format!("{p}.ln_1"))?,
                c_attn: pair(&mut get, &format!("{p}.attn.c_attn"))?,
                attn_proj: pair(&mut get, &format!("{p}.attn.c_proj"))?,
                ln_2: pair(&mut get, &format!("{p}.ln_2"))?,
                c_fc: pair(&mut get, &format!("{p}.mlp.c_fc"))?,
                mlp_proj: pair(&mut get, &format!("{p}.mlp.c_proj"))?,
            });
        }
        let ln_f = pair(&mut get, "ln_f")?;
        // Released GPT-2 ties lm_head to wte and safetensors stores the shared tensor once.
        let lm_head = if ck.contains("lm_head.weight") {
            ck.get("lm_head.weight", &[cfg.vocab_size, cfg.n_embd])?
        } else {
            wte.clone()
        };
        Ok(Gpt2 {
            accounting: ck.accounting(),
            cfg,
            wte,
            wpe,
            blocks,
            ln_f,
            lm_head,
            device: device.clone(),
            differentiable: false,
        })
    }

    /// Build a GPT-2 from named tensors (names as [`Gpt2ModelConfig::tensor_shapes`] lists them,
    /// without prefix; `lm_head` tied to `wte.weight`). Meant for training from scratch: the
    /// tensors may be `Var`-backed, and the forward then always takes the differentiable path so
    /// gradients reach them.
    pub fn from_tensors(
        cfg: Gpt2ModelConfig,
        tensors: &std::collections::HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        cfg.check(Path::new("<in-memory config>"))?;
        let get = |name: &str| -> Result<Tensor> {
            tensors
                .get(name)
                .cloned()
                .ok_or_else(|| Error::input(format!("tensor `{name}` is missing"), None))
        };
        for (name, shape) in cfg.tensor_shapes() {
            let t = get(&name)?;
            if t.dims() != shape.as_slice() {
                return Err(Error::input(
                    format!(
                        "tensor `{name}` has shape {:?}, expected {shape:?}",
                        t.dims()
                    ),
                    None,
                ));
            }
        }
        let pair = |n: &str| -> Result<(Tensor, Tensor)> {
            Ok((get(&format!("{n}.weight"))?, get(&format!("{n}.bias"))?))
        };
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for l in 0..cfg.n_layer {
            let p = format!("h.{l}");
            blocks.push(Block {
                ln_1: pair(&format!("{p}.ln_1"))?,
                c_attn: pair(&format!("{p}.attn.c_attn"))?,
                attn_proj: pair(&format!("{p}.attn.c_proj"))?,
                ln_2: pair(&format!("{p}.ln_2"))?,
                c_fc: pair(&format!("{p}.mlp.c_fc"))?,
                mlp_proj: pair(&format!("{p}.mlp.c_proj"))?,
            });
        }
        let ln_f = pair("ln_f")?;
        let wte = get("wte.weight")?;
        let wpe = get("wpe.weight")?;
        Ok(Gpt2 {
            cfg,
            lm_head: wte.clone(),
            wte,
            wpe,
            blocks,
            ln_f,
            device: device.clone(),
            accounting: LoadAccounting::default(),
            differentiable: true,
        })
    }

    /// The architecture config.
    pub fn config(&self) -> &Gpt2ModelConfig {
        &self.cfg
    }

    /// What loading read (tensors, bytes stored and resident).
    pub fn load_accounting(&self) -> LoadAccounting {
        self.accounting
    }
}

/// Read access to a contiguous f32 CPU tensor's values (holds candle's storage lock `G`).
struct F32View<G> {
    guard: G,
    range: std::ops::Range<usize>,
}

impl<G: std::ops::Deref<Target = Storage>> std::ops::Deref for F32View<G> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match &*self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.range.clone()],
            // `f32_view` admits only f32 CPU storage, and a tensor's storage never changes kind.
            _ => &[],
        }
    }
}

/// A view of `t`'s values; an error unless `t` is contiguous f32 on the CPU.
fn f32_view(t: &Tensor) -> Result<F32View<impl std::ops::Deref<Target = Storage> + '_>> {
    let (guard, layout) = t.storage_and_layout();
    let range = match (&*guard, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(_)), Some((a, b))) => a..b,
        _ => {
            return Err(Error::Internal(format!(
                "GPT-2 CPU forward: a {:?} tensor of shape {:?} is not contiguous f32 on the CPU",
                t.dtype(),
                t.dims()
            )))
        }
    };
    Ok(F32View { guard, range })
}

/// The unmasked positions of the logit span `from..from + tl` of every row of `input`.
fn span_rows(input: &LmInput, from: usize, tl: usize) -> cpu::Rows {
    let t = input.seq_len;
    let mask: Vec<u8> = (0..input.batch)
        .flat_map(|r| input.mask[r * t + from..][..tl].iter().copied())
        .collect();
    cpu::Rows::of_mask(&mask)
}

impl Gpt2 {
    /// `y = x W + b` (+ the LoRA update of module `name`, without dropout) on plain slices.
    fn linear_cpu(
        y: &mut [f32],
        x: &[f32],
        wb: &(Tensor, Tensor),
        (n, cin, cout): (usize, usize, usize),
        lora: Option<&Lora>,
        name: &str,
    ) -> Result<()> {
        let (w, bias) = (f32_view(&wb.0)?, f32_view(&wb.1)?);
        let Some((l, (a, b))) = lora.and_then(|l| Some((l, l.adapter(name)?))) else {
            cpu::linear_lora(y, x, &w, &bias, None, n, cin, cout);
            return Ok(());
        };
        let (a, b) = (f32_view(&a)?, f32_view(&b)?);
        let scale = l.scale() as f32;
        let ad = cpu::Adapter {
            a: &a,
            b: &b,
            scale,
        };
        cpu::linear_lora(y, x, &w, &bias, Some(ad), n, cin, cout);
        Ok(())
    }

    /// Token plus position embeddings of `ids` at `positions`, on plain slices.
    fn embed_cpu(&self, ids: &[u32], positions: &[u32]) -> Result<Vec<f32>> {
        let (wte, wpe) = (f32_view(&self.wte)?, f32_view(&self.wpe)?);
        let pos = positions.iter().map(|&p| p as usize);
        Ok(cpu::embed(&wte, &wpe, ids, pos, self.cfg.n_embd))
    }

    /// The no-gradient forward on f32 CPU weights ([`crate::cpu`]): the same function as the
    /// tensor path (tests compare them), about twice as fast at GPT-2-124M's shapes.
    fn forward_cpu(
        &self,
        input: &LmInput,
        mut cache: Option<&mut KvCache>,
        lora: Option<&Lora>,
        ctx: AttnCtx,
        (from, tl): (usize, usize),
    ) -> Result<LmOutput> {
        let (b, t) = (input.batch, input.seq_len);
        let (c, nh, f, v) = (
            self.cfg.n_embd,
            self.cfg.n_head,
            self.cfg.inner(),
            self.cfg.vocab_size,
        );
        let (hd, past) = (c / nh, ctx.past);
        // Position-wise layers run on the unmasked positions only (`cpu::Rows`).
        let rows = cpu::Rows::of_mask(&input.mask);
        let n = rows.len();
        let eps = self.cfg.layer_norm_epsilon as f32;
        let mut x = self.embed_cpu(&rows.gather(&input.ids, 1), &rows.gather(&ctx.positions, 1))?;
        let mut a = vec![0.0f32; n * c];
        let mut stats = vec![(0.0f32, 0.0f32); n];
        let mut qkv = vec![0.0f32; n * 3 * c];
        let mut atty = vec![0.0f32; n * c];
        let mut tmp = vec![0.0f32; n * c];
        let mut fch = vec![0.0f32; n * f];
        let mut fcg = vec![0.0f32; n * f];
        let shape = cpu::AttnShape { b, nh, t, past, hd };
        let add = |x: &mut [f32], d: &[f32]| x.iter_mut().zip(d).for_each(|(x, d)| *x += d);
        for (l, blk) in self.blocks.iter().enumerate() {
            let ln = (f32_view(&blk.ln_1.0)?, f32_view(&blk.ln_1.1)?);
            cpu::layer_norm(&mut a, &mut stats, &x, &ln.0, &ln.1, c, eps);
            let name = format!("h.{l}.attn.c_attn");
            Self::linear_cpu(&mut qkv, &a, &blk.c_attn, (n, c, 3 * c), lora, &name)?;
            let [q, k, vv] = cpu::split_heads(&qkv, (b, t, nh, hd), &rows);
            let mask = &ctx.full_mask;
            match cache.as_deref_mut() {
                Some(cache) => {
                    let k = Tensor::from_vec(k, (b, nh, t, hd), &self.device)?;
                    let vv = Tensor::from_vec(vv, (b, nh, t, hd), &self.device)?;
                    let (k, vv) = cache.append(l, k, vv)?;
                    let (k, vv) = (k.contiguous()?, vv.contiguous()?);
                    let (k, vv) = (f32_view(&k)?, f32_view(&vv)?);
                    cpu::masked_attention(&mut atty, &q, &k, &vv, mask, shape, &rows);
                }
                None => cpu::masked_attention(&mut atty, &q, &k, &vv, mask, shape, &rows),
            }
            let name = format!("h.{l}.attn.c_proj");
            Self::linear_cpu(&mut tmp, &atty, &blk.attn_proj, (n, c, c), lora, &name)?;
            add(&mut x, &tmp);
            let ln = (f32_view(&blk.ln_2.0)?, f32_view(&blk.ln_2.1)?);
            cpu::layer_norm(&mut a, &mut stats, &x, &ln.0, &ln.1, c, eps);
            let name = format!("h.{l}.mlp.c_fc");
            Self::linear_cpu(&mut fch, &a, &blk.c_fc, (n, c, f), lora, &name)?;
            cpu::gelu(&mut fcg, &fch);
            let name = format!("h.{l}.mlp.c_proj");
            Self::linear_cpu(&mut tmp, &fcg, &blk.mlp_proj, (n, f, c), lora, &name)?;
            add(&mut x, &tmp);
        }
        ctx.commit(cache, b);
        let ln = (f32_view(&self.ln_f.0)?, f32_view(&self.ln_f.1)?);
        cpu::layer_norm(&mut a, &mut stats, &x, &ln.0, &ln.1, c, eps);
        // Padded positions' hidden states are zeros (their logits are never read unmasked).
        let hidden = rows.scatter(&a, c);
        // Logits at the span's unmasked positions only (padded ones are zeros): the span's kept
        // rows, in order, are rows of the compact final layer norm `a`.
        let span = span_rows(input, from, tl);
        let mut picked = Vec::with_capacity(span.len() * c);
        for p in (0..b).flat_map(|r| r * t + from..r * t + from + tl) {
            if let Some(k) = rows.slot(p) {
                picked.extend_from_slice(&a[k * c..][..c]);
            }
        }
        let mut kept = vec![0.0f32; span.len() * v];
        {
            let head = self.lm_head.contiguous()?;
            let head = f32_view(&head)?;
            let dims = (span.len(), c, v);
            cpu::matmul(&mut kept, &picked, &head, dims, false, true, false);
        }
        let logits = span.scatter(&kept, v);
        Ok(LmOutput {
            logits: Tensor::from_vec(logits, (b, tl, v), &self.device)?,
            hidden: Tensor::from_vec(hidden, (b, t, c), &self.device)?,
        })
    }
}

impl CausalLm for Gpt2 {
    fn forward(
        &self,
        input: &LmInput,
        cache: Option<&mut KvCache>,
        lora: Option<&Lora>,
    ) -> Result<LmOutput> {
        self.forward_with(input, cache, lora, ForwardOpts::default())
    }

    fn forward_with(
        &self,
        input: &LmInput,
        mut cache: Option<&mut KvCache>,
        lora: Option<&Lora>,
        opts: ForwardOpts,
    ) -> Result<LmOutput> {
        input.check_vocab(self.cfg.vocab_size)?;
        let (from, tl) = opts.logit_span(input.seq_len)?;
        let (b, t) = (input.batch, input.seq_len);
        let grad = opts.grad && (lora.is_some() || self.differentiable);
        let ctx = AttnCtx::new(input, cache.as_deref(), &self.device)?;
        if ctx.past + t > self.cfg.n_positions {
            return Err(Error::input(
                format!(
                    "sequence of {} positions exceeds n_positions = {}",
                    ctx.past + t,
                    self.cfg.n_positions
                ),
                None,
            ));
        }
        let cpu_f32 = self.device.is_cpu() && self.wte.dtype() == DType::F32;
        if let Some(l) = lora.filter(|l| {
            grad && cpu_f32
                && !self.differentiable
                && cache.is_none()
                && !l.dropout_active()
                && !l.modules().is_empty()
        }) {
            // Training with adapters on f32 CPU weights: the written-out forward and backward.
            let (op, flat) =
                lora_op::LoraBody::new(self, input, ctx.positions.clone(), ctx.full_mask, l)?;
            let hidden = flat.apply_op1(op)?;
            // Logits at the span's unmasked positions only (padded ones are zeros).
            let span = span_rows(input, from, tl);
            let head = self.lm_head.t()?;
            let logits =
                ops::frozen_linear_rows(&hidden.narrow(1, from, tl)?, &head, None, Some(&span))?;
            return Ok(LmOutput { logits, hidden });
        }
        if !grad && cpu_f32 && lora.is_none_or(|l| !l.dropout_active()) {
            return self.forward_cpu(input, cache, lora, ctx, (from, tl));
        }
        let (h, nh) = (self.cfg.n_embd, self.cfg.n_head);
        let hd = h / nh;
        let ids = Tensor::from_vec(input.ids.clone(), b * t, &self.device)?;
        let pos = Tensor::from_vec(ctx.positions.clone(), b * t, &self.device)?;
        let mut x = (self.wte.index_select(&ids, 0)? + self.wpe.index_select(&pos, 0)?)?
            .reshape((b, t, h))?;
        let eps = self.cfg.layer_norm_epsilon;
        let linear = |x: &Tensor, wb: &(Tensor, Tensor), name: String| -> Result<Tensor> {
            lm::adapted_linear(x, &wb.0, Some(&wb.1), &name, lora, grad)
        };
        for (l, blk) in self.blocks.iter().enumerate() {
            let a = lm::layer_norm(&x, &blk.ln_1.0, &blk.ln_1.1, eps, grad)?;
            let qkv = linear(&a, &blk.c_attn, format!("h.{l}.attn.c_attn"))?;
            let heads = |i: usize| -> Result<Tensor> {
                Ok(qkv
                    .narrow(2, i * h, h)?
                    .reshape((b, t, nh, hd))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let (q, k, v) = (heads(0)?, heads(1)?, heads(2)?);
            let (k, v) = match cache.as_deref_mut() {
                Some(c) => c.append(l, k, v)?,
                None => (k, v),
            };
            let att = lm::attention(&q, &k, &v, &ctx.bias, grad)?;
            let att = linear(&att, &blk.attn_proj, format!("h.{l}.attn.c_proj"))?;
            x = (x + att)?;
            let m = lm::layer_norm(&x, &blk.ln_2.0, &blk.ln_2.1, eps, grad)?;
            let m = ops::gelu_new(&linear(&m, &blk.c_fc, format!("h.{l}.mlp.c_fc"))?)?;
            let m = linear(&m, &blk.mlp_proj, format!("h.{l}.mlp.c_proj"))?;
            x = (x + m)?;
        }
        ctx.commit(cache, b);
        let hidden = lm::layer_norm(&x, &self.ln_f.0, &self.ln_f.1, eps, grad)?;
        let logits = ops::frozen_linear(&hidden.narrow(1, from, tl)?, &self.lm_head.t()?, None)?
            .to_dtype(DType::F32)?;
        Ok(if opts.grad {
            LmOutput { logits, hidden }
        } else {
            LmOutput {
                logits: logits.detach(),
                hidden: hidden.detach(),
            }
        })
    }

    fn new_cache(&self) -> KvCache {
        KvCache::new(self.cfg.n_layer)
    }
    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }
    fn hidden_size(&self) -> usize {
        self.cfg.n_embd
    }
    fn max_positions(&self) -> Option<usize> {
        Some(self.cfg.n_positions)
    }
    fn eos_token_id(&self) -> Option<u32> {
        self.cfg.eos_token_id
    }
    fn dtype(&self) -> DType {
        self.wte.dtype()
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn lora_targets(&self) -> Vec<LoraTarget> {
        let (h, i) = (self.cfg.n_embd, self.cfg.inner());
        (0..self.cfg.n_layer)
            .flat_map(|l| {
                [
                    (format!("h.{l}.attn.c_attn"), h, 3 * h),
                    (format!("h.{l}.attn.c_proj"), h, h),
                    (format!("h.{l}.mlp.c_fc"), h, i),
                    (format!("h.{l}.mlp.c_proj"), i, h),
                ]
            })
            .map(|(name, in_dim, out_dim)| LoraTarget {
                name,
                in_dim,
                out_dim,
            })
            .collect()
    }
    fn default_lora_modules(&self) -> &'static [&'static str] {
        &["c_attn"]
    }
}
