//! What every stage of the language-model pipeline shares: the run's loaded context ([`Ctx`]:
//! model, tokenizer, prompts, ground-truth scorers), sampling completions from the reference or a
//! policy, scoring them against the ground truths, and one policy's evaluation ([`LmResult`])
//! with the report's table. The stages themselves are [`crate::pipeline`] (preferences,
//! policies, the driver), [`crate::reward_stage`] (reward models) and [`crate::report`]; keeping
//! these shared pieces here keeps the three files free of cycles (tests/layering.rs).

use crate::config::LmExperiment;
use crate::rewards::{Sample, TextReward};
use maxmin_core::compare::mean_ci95;
use maxmin_core::rng::Rng;
use maxmin_core::{Error, Result};
use maxmin_lm::generate::{GenerateOptions, Sampling};
use maxmin_lm::lm::CausalLm;
use maxmin_lm::policy::LmPolicy;
use maxmin_lm::tokenizer::Tokenizer;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Everything loaded once per run.
pub struct Ctx<'a> {
    /// The experiment.
    pub exp: &'a LmExperiment,
    /// The frozen base (reference policy and reward backbone).
    pub base: Arc<dyn CausalLm>,
    /// Its tokenizer.
    pub tok: Tokenizer,
    /// Pad id (EOS when the model has one, else 0).
    pub pad_id: u32,
    /// Group names.
    pub names: Vec<String>,
    /// Ground-truth scorers (simulation only).
    pub truth: Option<Vec<Box<dyn TextReward>>>,
    /// Training prompts (text, ids).
    pub train: Vec<(String, Vec<u32>)>,
    /// Evaluation prompts (text, ids).
    pub eval: Vec<(String, Vec<u32>)>,
}

/// Load model, tokenizer, prompts and scorers, checking every prompt fits the context window.
pub fn build_ctx(exp: &LmExperiment) -> Result<Ctx<'_>> {
    let dir = exp.model.model_dir().map_err(|e| e.under("model"))?;
    let dtype = exp.model.compute_dtype()?;
    let device = exp.model.device().map_err(|e| e.under("model"))?;
    let base: Arc<dyn CausalLm> = Arc::from(maxmin_lm::auto::load_causal_lm(&dir, dtype, &device)?);
    let tok = exp.model.load_tokenizer()?;
    let pad_id = base.eos_token_id().unwrap_or(0);
    if exp.generation.stop_at_eos && base.eos_token_id().is_none() {
        return Err(Error::config(
            "generation.stop-at-eos",
            format!(
                "{} has no eos_token_id in config.json, so completions cannot stop at EOS",
                dir.display()
            ),
        ));
    }
    let (train_txt, eval_txt) = exp.prompts.load_split()?;
    let max_prompt = base
        .max_positions()
        .map(|m| m.saturating_sub(exp.generation.max_new_tokens));
    let encode = |v: Vec<String>, offset: usize| -> Result<Vec<(String, Vec<u32>)>> {
        v.into_iter()
            .enumerate()
            .map(|(i, p)| {
                let ids = tok.encode(&p)?;
                if ids.is_empty() {
                    return Err(Error::data(
                        &exp.prompts.path,
                        None,
                        format!("prompt {} ({p:?}) encodes to no tokens", offset + i + 1),
                    ));
                }
                if let Some(m) = max_prompt {
                    if ids.len() > m {
                        return Err(Error::data(
                            &exp.prompts.path,
                            None,
                            format!(
                                "prompt {} has {} tokens; with max-new-tokens = {} the model's {} positions leave room for {m}",
                                offset + i + 1,
                                ids.len(),
                                exp.generation.max_new_tokens,
                                base.max_positions().unwrap_or(0)
                            ),
                        ));
                    }
                }
                Ok((p, ids))
            })
            .collect()
    };
    let n_train = train_txt.len();
    let train = encode(train_txt, 0)?;
    let eval = encode(eval_txt, n_train)?;
    let truth = match &exp.population {
        Some(p) => Some(
            p.groups
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    g.reward
                        .build()
                        .map_err(|e| e.under(&format!("population.groups.{i}.reward")))
                })
                .collect::<Result<Vec<_>>>()?,
        ),
        None => None,
    };
    Ok(Ctx {
        exp,
        names: exp.group_names(),
        base,
        tok,
        pad_id,
        truth,
        train,
        eval,
    })
}

/// A completion with its ground-truth scores.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Completion {
    /// Prompt text.
    pub prompt: String,
    /// Completion text.
    pub text: String,
    /// Completion tokens (without a final EOS).
    pub tokens: usize,
    /// Ground-truth score per group (simulation).
    pub scores: Vec<f64>,
}

/// Generation options of one sampling call: `[generation]`, with the token budget drawn from
/// `[min-new-tokens, max-new-tokens]` when a minimum is set.
pub fn gen_options(ctx: &Ctx, rng: &mut Rng) -> GenerateOptions {
    let g = &ctx.exp.generation;
    let max_new_tokens = match g.min_new_tokens {
        Some(lo) => rng.random_range(lo..=g.max_new_tokens),
        None => g.max_new_tokens,
    };
    GenerateOptions {
        max_new_tokens,
        sampling: Sampling::Sample {
            temperature: g.temperature,
            top_k: (g.top_k > 0).then_some(g.top_k),
            top_p: (g.top_p < 1.0).then_some(g.top_p),
        },
        stop_at_eos: g.stop_at_eos,
        use_cache: true,
        pad_id: ctx.pad_id,
    }
}

/// Tokens of a response without its final EOS.
pub fn content_len(ctx: &Ctx, resp: &[u32]) -> usize {
    match (resp.last(), ctx.base.eos_token_id()) {
        (Some(&l), Some(e)) if l == e => resp.len() - 1,
        _ => resp.len(),
    }
}

/// Decode a response and score it with every ground truth (none without simulated groups).
pub fn score_truth(ctx: &Ctx, prompt: &str, resp: &[u32]) -> Result<Completion> {
    let text = ctx.tok.decode(resp)?;
    let tokens = content_len(ctx, resp);
    let scores = match &ctx.truth {
        Some(t) => t
            .iter()
            .map(|r| {
                r.score(&Sample {
                    prompt,
                    completion: &text,
                    tokens,
                    max_tokens: ctx.exp.generation.max_new_tokens,
                })
            })
            .collect(),
        None => vec![],
    };
    Ok(Completion {
        prompt: prompt.to_string(),
        text,
        tokens,
        scores,
    })
}

/// Sample completions of `prompts` from the base model (no adapters) or a policy.
pub fn complete(
    ctx: &Ctx,
    policy: Option<&LmPolicy>,
    prompts: &[Vec<u32>],
    rng: &mut Rng,
) -> Result<Vec<Vec<u32>>> {
    let bs = ctx.exp.ppo.batch_size.max(1);
    let mut out = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(bs) {
        let opts = gen_options(ctx, rng);
        let g = match policy {
            Some(p) => p.generate(chunk, &opts, rng)?,
            None => maxmin_lm::generate::generate(ctx.base.as_ref(), None, chunk, &opts, rng)?,
        };
        out.extend(g.tokens);
    }
    Ok(out)
}

/// One policy's evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LmResult {
    /// Objective label (`reference` for the untuned model).
    pub objective: String,
    /// Policy seed.
    pub seed: u64,
    /// Mean ground-truth score per group on the evaluation prompts.
    pub groups: BTreeMap<String, f64>,
    /// The lowest-scoring group.
    pub worst_group: String,
    /// Its score.
    pub worst_utility: f64,
    /// Best − worst.
    pub gap: f64,
    /// Mean completion length in tokens.
    pub mean_tokens: f64,
    /// Mean learned reward per group (uncalibrated models).
    pub learned: BTreeMap<String, f64>,
    /// Wall seconds of training.
    pub train_seconds: f64,
}

/// Per objective (in first-seen order): column → (mean, 95 % half-width).
pub type Table = Vec<(String, BTreeMap<String, (f64, f64)>)>;

/// Mean ± 95 % interval per objective of each group's score (for the report).
pub fn table(results: &[LmResult]) -> Table {
    let mut order: Vec<String> = Vec::new();
    for r in results {
        if !order.contains(&r.objective) {
            order.push(r.objective.clone());
        }
    }
    order
        .into_iter()
        .map(|o| {
            let rs: Vec<&LmResult> = results.iter().filter(|r| r.objective == o).collect();
            let mut m = BTreeMap::new();
            if let Some(first) = rs.first() {
                for g in first.groups.keys() {
                    m.insert(
                        g.clone(),
                        mean_ci95(&rs.iter().map(|r| r.groups[g]).collect::<Vec<_>>()),
                    );
                }
            }
            m.insert(
                "worst group".into(),
                mean_ci95(&rs.iter().map(|r| r.worst_utility).collect::<Vec<_>>()),
            );
            m.insert(
                "tokens".into(),
                mean_ci95(&rs.iter().map(|r| r.mean_tokens).collect::<Vec<_>>()),
            );
            (o, m)
        })
        .collect()
}
