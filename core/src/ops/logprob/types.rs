//! The log-prob op's types: the statistics layout ([`NSTATS`], [`Stats`]), the inputs
//! ([`Logits`], [`LogProbInput`] and its checks) and the gradient selector ([`Grad`]). Kept
//! apart from `mod.rs` so that the CPU and CUDA implementations, which read them, do not depend
//! on the file that dispatches to them (tests/layering.rs).

use crate::{Error, Result};
use half::bf16;

/// Number of statistics per row, the column count of the stats matrix.
pub const NSTATS: usize = 8;

/// Per-row statistics; also the column order of the `[N, NSTATS]` stats matrix (and of its
/// gradient). Only `logp`, `entropy` and `kl` carry gradient into the policy logits; the other
/// columns are constants saved for the backward (the reference is frozen, and `max` /
/// `log_sum` are kept apart because an f32 `lse` at |z| ~ 1e4 loses the digits the backward
/// needs). The reference columns are 0 when no reference logits are given.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    /// log p(target).
    pub logp: f32,
    /// Entropy of p in nats.
    pub entropy: f32,
    /// KL(p ‖ q) over the whole vocabulary.
    pub kl: f32,
    /// log q(target) under the reference.
    pub ref_logp: f32,
    /// max_j z_j.
    pub max: f32,
    /// log Σ_j e^(z_j − max).
    pub log_sum: f32,
    /// max_j w_j.
    pub ref_max: f32,
    /// log Σ_j e^(w_j − ref_max).
    pub ref_log_sum: f32,
}

impl Stats {
    /// Column order of the stats matrix.
    pub fn to_array(self) -> [f32; NSTATS] {
        [
            self.logp,
            self.entropy,
            self.kl,
            self.ref_logp,
            self.max,
            self.log_sum,
            self.ref_max,
            self.ref_log_sum,
        ]
    }

    /// Read one row of the stats matrix (`row.len() == NSTATS`).
    pub fn from_slice(row: &[f32]) -> Stats {
        Stats {
            logp: row[0],
            entropy: row[1],
            kl: row[2],
            ref_logp: row[3],
            max: row[4],
            log_sum: row[5],
            ref_max: row[6],
            ref_log_sum: row[7],
        }
    }

    /// log Σ_j e^(z_j) (in f64, so its low digits survive).
    pub fn lse(&self) -> f64 {
        self.max as f64 + self.log_sum as f64
    }

    /// log Σ_j e^(w_j).
    pub fn ref_lse(&self) -> f64 {
        self.ref_max as f64 + self.ref_log_sum as f64
    }
}

/// Borrowed host logits, row-major [N, V].
#[derive(Debug, Clone, Copy)]
pub enum Logits<'a> {
    /// f32 logits.
    F32(&'a [f32]),
    /// bf16 logits.
    Bf16(&'a [bf16]),
}

impl Logits<'_> {
    fn len(&self) -> usize {
        match self {
            Logits::F32(x) => x.len(),
            Logits::Bf16(x) => x.len(),
        }
    }
    fn dtype_name(&self) -> &'static str {
        match self {
            Logits::F32(_) => "f32",
            Logits::Bf16(_) => "bf16",
        }
    }
}

/// Owned gradient with respect to the logits, in the logits' dtype.
#[derive(Debug, Clone, PartialEq)]
pub enum Grad {
    /// f32 gradient.
    F32(Vec<f32>),
    /// bf16 gradient.
    Bf16(Vec<bf16>),
}

/// One call's inputs: logits [n, v], targets [n] (each `< v`), optional reference logits of the
/// same shape and dtype.
#[derive(Debug, Clone, Copy)]
pub struct LogProbInput<'a> {
    /// Policy logits.
    pub logits: Logits<'a>,
    /// Reference-policy logits (enables the KL columns).
    pub reference: Option<Logits<'a>>,
    /// Target token ids.
    pub targets: &'a [u32],
    /// Rows.
    pub n: usize,
    /// Vocabulary size.
    pub v: usize,
}

impl LogProbInput<'_> {
    /// Check shapes, dtypes and target ids; errors name the offending tensor.
    pub fn validate(&self) -> Result<()> {
        if self.v == 0 {
            return Err(Error::input("logprob: vocabulary size is 0", None));
        }
        if self.logits.len() != self.n * self.v {
            return Err(Error::input(
                format!(
                    "logprob: `logits` has {} elements, expected n × v = {} × {}",
                    self.logits.len(),
                    self.n,
                    self.v
                ),
                None,
            ));
        }
        if let Some(r) = self.reference {
            if r.len() != self.logits.len() || r.dtype_name() != self.logits.dtype_name() {
                return Err(Error::input(
                    format!(
                        "logprob: `reference` logits must match `logits` ({} {}), found {} {}",
                        self.logits.len(),
                        self.logits.dtype_name(),
                        r.len(),
                        r.dtype_name()
                    ),
                    None,
                ));
            }
        }
        if self.targets.len() != self.n {
            return Err(Error::input(
                format!(
                    "logprob: `targets` has {} ids, expected n = {}",
                    self.targets.len(),
                    self.n
                ),
                None,
            ));
        }
        if let Some((i, &t)) = self
            .targets
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= self.v)
        {
            return Err(Error::input(
                format!(
                    "logprob: `targets[{i}]` = {t} is outside the vocabulary (size {})",
                    self.v
                ),
                None,
            ));
        }
        Ok(())
    }
}
