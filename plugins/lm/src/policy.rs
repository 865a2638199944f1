//! The policy an RLHF trainer wants from a language model (docs/algorithms.md's pipeline: PPO with
//! a KL penalty to a reference policy): adapters and a value head on a frozen base, whose
//! reference is the same base without adapters. The base sits behind an `Arc`, so the policy, its
//! reference and anything else built on the same checkpoint share one copy of the weights.

use crate::generate::{generate, GenerateOptions, Generation};
use crate::heads::ValueHead;
use crate::lm::{CausalLm, ForwardOpts, KvCache, LmInput, LmOutput};
use crate::lora::{Lora, LoraConfig};
use candle_core::{Tensor, Var};
use maxmin_core::{rng::Rng, Result};
use std::sync::Arc;

/// What a policy forward returns.
#[derive(Debug, Clone)]
pub struct PolicyOutput {
    /// `(batch, t, vocab)` logits, f32.
    pub logits: Tensor,
    /// `(batch, t, hidden)` final hidden states.
    pub hidden: Tensor,
    /// `(batch, t)` value estimates, f32.
    pub values: Tensor,
}

/// A trainable LM policy: frozen base + optional LoRA adapters + value head.
pub struct LmPolicy {
    base: Arc<dyn CausalLm>,
    lora: Option<Lora>,
    value: ValueHead,
}

impl std::fmt::Debug for LmPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LmPolicy")
            .field("lora", &self.lora)
            .finish()
    }
}

impl LmPolicy {
    /// A policy on `base` with adapters per `lora` (none: only the value head trains), all
    /// initialised from `seed`.
    pub fn new(base: Arc<dyn CausalLm>, lora: Option<&LoraConfig>, seed: u64) -> Result<Self> {
        let lora = match lora {
            Some(cfg) => Some(Lora::new(
                cfg,
                &base.lora_targets(),
                base.default_lora_modules(),
                seed,
                base.device(),
            )?),
            None => None,
        };
        let value = ValueHead::new(base.hidden_size(), seed, base.device())?;
        Ok(LmPolicy { base, lora, value })
    }

    /// The shared frozen base (the reference policy is this model called without adapters).
    pub fn base(&self) -> &Arc<dyn CausalLm> {
        &self.base
    }

    /// The adapters, if any.
    pub fn lora(&self) -> Option<&Lora> {
        self.lora.as_ref()
    }

    /// The value head.
    pub fn value_head(&self) -> &ValueHead {
        &self.value
    }

    /// Logits, hidden states and values of the adapted model.
    pub fn forward(&self, input: &LmInput, cache: Option<&mut KvCache>) -> Result<PolicyOutput> {
        self.forward_with(input, cache, ForwardOpts::default())
    }

    /// [`LmPolicy::forward`] with options (logits from a position on, no graph); values at every
    /// position, detached too when `opts.grad` is off.
    pub fn forward_with(
        &self,
        input: &LmInput,
        cache: Option<&mut KvCache>,
        opts: ForwardOpts,
    ) -> Result<PolicyOutput> {
        let out = self
            .base
            .forward_with(input, cache, self.lora.as_ref(), opts)?;
        let mut values = self.value.forward(&out.hidden)?;
        if !opts.grad {
            values = values.detach();
        }
        Ok(PolicyOutput {
            logits: out.logits,
            hidden: out.hidden,
            values,
        })
    }

    /// The frozen reference policy's forward: the base without adapters.
    pub fn reference_forward(
        &self,
        input: &LmInput,
        cache: Option<&mut KvCache>,
    ) -> Result<LmOutput> {
        self.base.forward(input, cache, None)
    }

    /// [`LmPolicy::reference_forward`] with options.
    pub fn reference_forward_with(
        &self,
        input: &LmInput,
        cache: Option<&mut KvCache>,
        opts: ForwardOpts,
    ) -> Result<LmOutput> {
        self.base.forward_with(input, cache, None, opts)
    }

    /// Sample continuations from the adapted model (adapter dropout off while generating).
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        opts: &GenerateOptions,
        rng: &mut Rng,
    ) -> Result<Generation> {
        let was = self.lora.as_ref().map(|l| l.is_training());
        if let Some(l) = &self.lora {
            l.set_training(false);
        }
        let out = generate(self.base.as_ref(), self.lora.as_ref(), prompts, opts, rng);
        if let (Some(l), Some(w)) = (&self.lora, was) {
            l.set_training(w);
        }
        out
    }

    /// Everything an optimiser may change: adapters, then the value head.
    pub fn trainable_vars(&self) -> Vec<Var> {
        let mut v = self.lora.as_ref().map(|l| l.vars()).unwrap_or_default();
        v.extend(self.value.vars());
        v
    }
}
