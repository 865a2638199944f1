//! Llama-2 (Touvron et al. 2023) as Hugging Face transformers 4.47 `LlamaForCausalLM` computes it
//! with eager attention: RMSNorm (in f32), rotary position embeddings in the `rotate_half` layout
//! with position ids from the attention mask, grouped-query attention (`num_key_value_heads`),
//! SwiGLU MLP, untied `lm_head` unless `tie_word_embeddings`. Keys are read verbatim
//! (`model.layers.N.self_attn.q_proj.weight`, `[out, in]`). Written for training: logits at every
//! position, hidden states for heads, an external KV cache, left-padded batches, LoRA.

use crate::checkpoint::{read_config, Checkpoint, LoadAccounting};
use crate::lm::{self, AttnCtx, CausalLm, KvCache, LmInput, LmOutput};
use crate::lora::{Lora, LoraTarget};
use candle_core::{DType, Device, Tensor, D};
use maxmin_core::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// The fields of Llama's `config.json` this implementation reads (others are ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LlamaModelConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); defaults to `num_attention_heads`.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Per-head width; defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Maximum positions.
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// Whether `lm_head` shares `embed_tokens`.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// MLP activation; only `silu`.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// End-of-sequence token.
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    /// RoPE scaling (Llama-3.1 style); must be absent or null.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// Biases on q/k/v/o; must be false.
    #[serde(default)]
    pub attention_bias: bool,
    /// Biases in the MLP; must be false.
    #[serde(default)]
    pub mlp_bias: bool,
}

fn default_theta() -> f64 {
    10000.0
}
fn default_act() -> String {
    "silu".into()
}

impl LlamaModelConfig {
    /// The Llama-2-7B / Tulu2-7B shape.
    pub fn llama2_7b() -> Self {
        LlamaModelConfig {
            vocab_size: 32000,
            hidden_size: 4096,
            intermediate_size: 11008,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: Some(32),
            head_dim: None,
            max_position_embeddings: 4096,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            tie_word_embeddings: false,
            hidden_act: "silu".into(),
            eos_token_id: Some(2),
            rope_scaling: None,
            attention_bias: false,
            mlp_bias: false,
        }
    }

    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    fn check(&self, file: &Path) -> Result<()> {
        let bad = |m: String| Err(Error::data(file, None, m));
        for (k, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return bad(format!("`{k}` must be positive"));
            }
        }
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        if !self.head_dim().is_multiple_of(2) || self.head_dim() == 0 {
            return bad(format!(
                "head_dim {} must be even for rotary embeddings",
                self.head_dim()
            ));
        }
        if self.hidden_act != "silu" {
            return bad(format!(
                "hidden_act `{}` is not supported (expected silu)",
                self.hidden_act
            ));
        }
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return bad("rope_scaling is not supported (Llama-2 / Tulu2 have none)".into());
        }
        if self.attention_bias || self.mlp_bias {
            return bad(
                "attention_bias / mlp_bias = true is not supported (Llama-2 has no biases)".into(),
            );
        }
        Ok(())
    }

    /// Every base tensor (name, shape): what [`Llama::load`] reads.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (h, i, hd) = (self.hidden_size, self.intermediate_size, self.head_dim());
        let (q, kv) = (self.num_attention_heads * hd, self.kv_heads() * hd);
        let mut v = vec![(
            "model.embed_tokens.weight".to_string(),
            vec![self.vocab_size, h],
        )];
        for l in 0..self.num_hidden_layers {
            let p = format!("model.layers.{l}");
            for (n, s) in [
                ("input_layernorm.weight", vec![h]),
                ("self_attn.q_proj.weight", vec![q, h]),
                ("self_attn.k_proj.weight", vec![kv, h]),
                ("self_attn.v_proj.weight", vec![kv, h]),
                ("self_attn.o_proj.weight", vec![h, q]),
                ("post_attention_layernorm.weight", vec![h]),
                ("mlp.gate_proj.weight", vec![i, h]),
                ("mlp.up_proj.weight", vec![i, h]),
                ("mlp.down_proj.weight", vec![h, i]),
            ] {
                v.push((format!("{p}.{n}"), s));
            }
        }
        v.push(("model.norm.weight".into(), vec![h]));
        if !self.tie_word_embeddings {
            v.push(("lm_head.weight".into(), vec![self.vocab_size, h]));
        }
        v
    }

    /// Memory the loader accounts for this shape stored and computed in the given dtypes.
    pub fn accounting(&self, stored: DType, compute: DType) -> LoadAccounting {
        let mut a = LoadAccounting::default();
        for (_, s) in self.tensor_shapes() {
            a.add(s.iter().product(), stored, compute);
        }
        a
    }
}

#[derive(Debug, Clone)]
struct Layer {
    input_norm: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    post_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

/// A loaded Llama; cheap to clone, immutable (weights frozen).
#[derive(Debug, Clone)]
pub struct Llama {
    cfg: LlamaModelConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Tensor,
    inv_freq: Vec<f32>,
    device: Device,
    accounting: LoadAccounting,
}

impl Llama {
    /// Load a Llama directory (`config.json` + safetensors, single or sharded) in compute `dtype`.
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let cfg: LlamaModelConfig = read_config(dir)?;
        cfg.check(&dir.join("config.json"))?;
        let mut ck = Checkpoint::open(dir, dtype, device)?;
        let shapes: std::collections::HashMap<String, Vec<usize>> =
            cfg.tensor_shapes().into_iter().collect();
        let mut get = |name: &str| -> Result<Tensor> {
            let shape = shapes
                .get(name)
                .ok_or_else(|| Error::Internal(format!("no shape for {name}")))?;
            ck.get(name, shape)
        };
        let embed = get("model.embed_tokens.weight")?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let mut g = |n: &str| get(&format!("{p}.{n}.weight"));
            layers.push(Layer {
                input_norm: g("input_layernorm")?,
                q: g("self_attn.q_proj")?,
                k: g("self_attn.k_proj")?,
                v: g("self_attn.v_proj")?,
                o: g("self_attn.o_proj")?,
                post_norm: g("post_attention_layernorm")?,
                gate: g("mlp.gate_proj")?,
                up: g("mlp.up_proj")?,
                down: g("mlp.down_proj")?,
            });
        }
        let norm = get("model.norm.weight")?;
        let lm_head = if cfg.tie_word_embeddings {
            embed.clone()
        } else {
            get("lm_head.weight")?
        };
        let hd = cfg.head_dim();
        let inv_freq = (0..hd / 2)
            .map(|i| (1.0 / cfg.rope_theta.powf(2.0 * i as f64 / hd as f64)) as f32)
            .collect();
        Ok(Llama {
            accounting: ck.accounting(),
            cfg,
            embed,
            layers,
            norm,
            lm_head,
            inv_freq,
            device: device.clone(),
        })
    }

    /// The architecture config.
    pub fn config(&self) -> &LlamaModelConfig {
        &self.cfg
    }

    /// What loading read (tensors, bytes stored and resident).
    pub fn load_accounting(&self) -> LoadAccounting {
        self.accounting
    }

    /// cos and sin `(b, t, head_dim/2)` for the position ids, as HF computes them (angles in f32).
    fn rope_tables(
        &self,
        positions: &[u32],
        b: usize,
        t: usize,
        dtype: DType,
    ) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(b * t * half);
        let mut sin = Vec::with_capacity(b * t * half);
        for &p in positions {
            for &f in &self.inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        let cos = Tensor::from_vec(cos, (b, t, half), &self.device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (b, t, half), &self.device)?.to_dtype(dtype)?;
        Ok((cos, sin))
    }
}

/// RoPE in HF's `rotate_half` layout; `x` is `(b, heads, t, d)`, `cos`/`sin` `(b, t, d/2)`.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, differentiable: bool) -> Result<Tensor> {
    if !differentiable {
        return Ok(candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin)?);
    }
    let d = x.dim(D::Minus1)?;
    let cos = Tensor::cat(&[cos, cos], D::Minus1)?.unsqueeze(1)?;
    let sin = Tensor::cat(&[sin, sin], D::Minus1)?.unsqueeze(1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(&cos)? + rot.broadcast_mul(&sin)?)?)
}

impl CausalLm for Llama {
    fn forward(
        &self,
        input: &LmInput,
        mut cache: Option<&mut KvCache>,
        lora: Option<&Lora>,
    ) -> Result<LmOutput> {
        input.check_vocab(self.cfg.vocab_size)?;
        let (b, t) = (input.batch, input.seq_len);
        let grad = lora.is_some();
        let ctx = AttnCtx::new(input, cache.as_deref(), &self.device)?;
        let (h, nh, nkv, hd) = (
            self.cfg.hidden_size,
            self.cfg.num_attention_heads,
            self.cfg.kv_heads(),
            self.cfg.head_dim(),
        );
        let dtype = self.embed.dtype();
        let (cos, sin) = self.rope_tables(&ctx.positions, b, t, dtype)?;
        let ids = Tensor::from_vec(input.ids.clone(), b * t, &self.device)?;
        let mut x = self.embed.index_select(&ids, 0)?.reshape((b, t, h))?;
        let eps = self.cfg.rms_norm_eps;
        for (l, ly) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{l}");
            let a = lm::rms_norm(&x, &ly.input_norm, eps, grad)?;
            let split = |w: &Tensor, n: &str, heads: usize| -> Result<Tensor> {
                Ok(
                    lm::linear_out_in(&a, w, &format!("{p}.self_attn.{n}"), lora)?
                        .reshape((b, t, heads, hd))?
                        .transpose(1, 2)?
                        .contiguous()?,
                )
            };
            let q = rope(&split(&ly.q, "q_proj", nh)?, &cos, &sin, grad)?;
            let k = rope(&split(&ly.k, "k_proj", nkv)?, &cos, &sin, grad)?;
            let v = split(&ly.v, "v_proj", nkv)?;
            let (k, v) = match cache.as_deref_mut() {
                Some(c) => c.append(l, k, v)?,
                None => (k, v),
            };
            let att = lm::attention(&q, &k, &v, &ctx.bias, grad)?;
            x = (x + lm::linear_out_in(&att, &ly.o, &format!("{p}.self_attn.o_proj"), lora)?)?;
            let m = lm::rms_norm(&x, &ly.post_norm, eps, grad)?;
            let gate = lm::linear_out_in(&m, &ly.gate, &format!("{p}.mlp.gate_proj"), lora)?;
            let up = lm::linear_out_in(&m, &ly.up, &format!("{p}.mlp.up_proj"), lora)?;
            let act = (candle_nn::ops::silu(&gate)? * up)?;
            x = (x + lm::linear_out_in(&act, &ly.down, &format!("{p}.mlp.down_proj"), lora)?)?;
        }
        ctx.commit(cache, b);
        let hidden = lm::rms_norm(&x, &self.norm, eps, grad)?;
        let logits = hidden
            .reshape((b * t, h))?
            .matmul(&self.lm_head.t()?)?
            .to_dtype(DType::F32)?
            .reshape((b, t, self.cfg.vocab_size))?;
        Ok(LmOutput { logits, hidden })
    }

    fn new_cache(&self) -> KvCache {
        KvCache::new(self.cfg.num_hidden_layers)
    }
    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }
    fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
    }
    fn max_positions(&self) -> Option<usize> {
        // RoPE has no hard limit; HF treats max_position_embeddings as the trained context only.
        None
    }
    fn eos_token_id(&self) -> Option<u32> {
        self.cfg.eos_token_id
    }
    fn dtype(&self) -> DType {
        self.embed.dtype()
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn lora_targets(&self) -> Vec<LoraTarget> {
        let (h, i, hd) = (
            self.cfg.hidden_size,
            self.cfg.intermediate_size,
            self.cfg.head_dim(),
        );
        let (q, kv) = (self.cfg.num_attention_heads * hd, self.cfg.kv_heads() * hd);
        (0..self.cfg.num_hidden_layers)
            .flat_map(|l| {
                let p = format!("model.layers.{l}");
                [
                    (format!("{p}.self_attn.q_proj"), h, q),
                    (format!("{p}.self_attn.k_proj"), h, kv),
                    (format!("{p}.self_attn.v_proj"), h, kv),
                    (format!("{p}.self_attn.o_proj"), q, h),
                    (format!("{p}.mlp.gate_proj"), h, i),
                    (format!("{p}.mlp.up_proj"), h, i),
                    (format!("{p}.mlp.down_proj"), i, h),
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
        &["q_proj", "v_proj"]
    }
}
