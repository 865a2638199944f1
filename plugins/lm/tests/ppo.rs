//! Token-level PPO ([`maxmin_lm::ppo`]) on the tiny random GPT-2 fixture
//! (`tests/data/lm/gpt2-noprefix`: vocabulary 288, EOS = 0): learning, the KL penalty and its
//! controller, early stopping, EOS-only responses, the non-finite guard, exact resume, and one
//! timed step on a ~2M-parameter random GPT-2 (run it in release with `--nocapture` for timings).

use candle_core::{DType, Device, Tensor};
use maxmin_core::objective::KlConfig;
use maxmin_core::rng;
use maxmin_lm::generate::{GenerateOptions, Sampling};
use maxmin_lm::lm::CausalLm;
use maxmin_lm::lora::LoraConfig;
use maxmin_lm::policy::LmPolicy;
use maxmin_lm::ppo::{LmPpoConfig, LmPpoTrainer, StepStats};
use maxmin_lm::Gpt2;
use rand::Rng as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const EOS: u32 = 0;
/// The learning test rewards tokens below this id (1/9 of the vocabulary).
const TARGET_BELOW: u32 = 32;
/// Response length of the training loops (no EOS stop).
const NEW_TOKENS: usize = 4;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/lm")
}

fn base_from(dir: &Path) -> Arc<dyn CausalLm> {
    Arc::new(Gpt2::load(dir, DType::F32, &Device::Cpu).unwrap())
}

fn base() -> Arc<dyn CausalLm> {
    base_from(&data().join("gpt2-noprefix"))
}

fn lora() -> LoraConfig {
    LoraConfig {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        target_modules: vec!["c_attn".into(), "c_fc".into()],
    }
}

fn policy(base: &Arc<dyn CausalLm>, seed: u64) -> LmPolicy {
    LmPolicy::new(base.clone(), Some(&lora()), seed).unwrap()
}

/// Small fast settings: `b` responses, two mini-batches, fixed β unless changed.
fn cfg(b: usize) -> LmPpoConfig {
    LmPpoConfig {
        batch_size: b,
        mini_batch_size: if b.is_multiple_of(2) { b / 2 } else { b },
        learning_rate: 3e-3,
        kl: KlConfig {
            init: 0.05,
            target: None,
            horizon: 10_000.0,
        },
        early_stopping: false,
        ..Default::default()
    }
}

fn prompts(n: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut r = rng::stream(seed, "prompts");
    (0..n)
        .map(|_| {
            let len = r.random_range(2..=5);
            (0..len).map(|_| r.random_range(1..288u32)).collect()
        })
        .collect()
}

fn sampling(max_new_tokens: usize, stop_at_eos: bool) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        sampling: Sampling::Sample {
            temperature: 1.0,
            top_k: None,
            top_p: None,
        },
        stop_at_eos,
        use_cache: true,
        pad_id: 0,
    }
}

/// Fraction of response tokens in the rewarded set.
fn score(responses: &[Vec<u32>]) -> Vec<f32> {
    responses
        .iter()
        .map(|y| y.iter().filter(|&&t| t < TARGET_BELOW).count() as f32 / y.len() as f32)
        .collect()
}

fn snapshot(t: &LmPpoTrainer) -> Vec<Vec<f32>> {
    t.params()
        .values()
        .map(|v| {
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

/// Run `steps` PPO steps (prompts and sampling from seeded streams); the score is `score`
/// unless `zero_scores`. Returns each step's stats.
fn train(t: &mut LmPpoTrainer, from: usize, steps: usize, zero_scores: bool) -> Vec<StepStats> {
    let b = t.config().batch_size;
    (from..from + steps)
        .map(|k| {
            let mut r = rng::stream(11, &format!("rollout/{k}"));
            let ro = t
                .rollout(&prompts(b, k as u64), &sampling(NEW_TOKENS, false), &mut r)
                .unwrap();
            let s = if zero_scores {
                vec![0.0; b]
            } else {
                score(&ro.responses)
            };
            t.step(&ro, &s).unwrap()
        })
        .collect()
}

fn without_timings(s: &StepStats) -> Vec<(&'static str, f64)> {
    s.fields()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("perf/"))
        .collect()
}

#[test]
fn learning_raises_the_score_and_moves_only_adapters_and_value_head() {
    let base = base();
    let mut c = cfg(16);
    c.learning_rate = 1e-2;
    c.kl.init = 0.02;
    let mut t = LmPpoTrainer::new(policy(&base, 1), c, 1).unwrap();
    let ref_before = base
        .forward(
            &maxmin_lm::lm::LmInput::single(&[5, 6, 7]).unwrap(),
            None,
            None,
        )
        .unwrap()
        .logits;
    let stats = train(&mut t, 0, 30, false);
    let first: f64 = stats[..5].iter().map(|s| s.mean_scores).sum::<f64>() / 5.0;
    let last: f64 = stats[25..].iter().map(|s| s.mean_scores).sum::<f64>() / 5.0;
    eprintln!("score mean: first 5 steps {first:.3}, last 5 steps {last:.3}");
    for s in &stats {
        assert!(s.fields().iter().all(|(_, v)| v.is_finite()), "{s:?}");
    }
    assert!(
        last > first + 0.25,
        "score did not rise: first {first:.3} last {last:.3}"
    );
    // Adapters (B starts at zero) and the value head moved; the frozen base did not.
    for (name, var) in t.params() {
        if name.ends_with("lora_B.weight") {
            let m = var.as_tensor().abs().unwrap().max_all().unwrap();
            assert!(m.to_scalar::<f32>().unwrap() > 0.0, "{name} never moved");
        }
    }
    let ref_after = base
        .forward(
            &maxmin_lm::lm::LmInput::single(&[5, 6, 7]).unwrap(),
            None,
            None,
        )
        .unwrap()
        .logits;
    let d = (ref_before - ref_after)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(d, 0.0, "the reference changed");
    assert!(stats.last().unwrap().kl > 0.0);
}

#[test]
fn kl_penalty_keeps_the_policy_near_the_reference() {
    let base = base();
    let mut free = cfg(16);
    free.kl.init = 0.0;
    let mut tied = cfg(16);
    tied.kl.init = 5.0;
    let mut a = LmPpoTrainer::new(policy(&base, 2), free, 2).unwrap();
    let mut b = LmPpoTrainer::new(policy(&base, 2), tied, 2).unwrap();
    let sa = train(&mut a, 0, 15, false);
    let sb = train(&mut b, 0, 15, false);
    let kl = |s: &[StepStats]| s[10..].iter().map(|x| x.kl).sum::<f64>() / 5.0;
    let (ka, kb) = (kl(&sa), kl(&sb));
    eprintln!("mean KL over steps 10..15: β = 0 → {ka:.4}, β = 5 → {kb:.4}");
    assert!(ka > 0.05, "β = 0 should drift: KL {ka}");
    assert!(kb < 0.5 * ka, "β = 5 should stay closer: {kb} vs {ka}");
    // With zero scores and a large β there is nothing to gain: the KL stays small.
    let mut c = LmPpoTrainer::new(
        policy(&base, 3),
        {
            let mut c = cfg(16);
            c.kl.init = 5.0;
            c
        },
        3,
    )
    .unwrap();
    let sc = train(&mut c, 0, 10, true);
    let kc = sc.last().unwrap().kl.abs();
    assert!(kc < 0.5 * ka, "zero scores, β = 5: KL {kc}");
}

#[test]
fn adaptive_controller_moves_beta_toward_the_target() {
    let base = base();
    for (target, expect_up) in [(1e3, false), (1e-6, true)] {
        let mut c = cfg(8);
        c.learning_rate = 1e-2;
        c.kl = KlConfig {
            init: 0.2,
            target: Some(target),
            horizon: 100.0,
        };
        let mut t = LmPpoTrainer::new(policy(&base, 4), c, 4).unwrap();
        // The first step starts at KL = 0 exactly (LoRA B = 0); later ones have drifted.
        let stats = train(&mut t, 0, 4, false);
        let mut betas: Vec<f64> = stats.iter().map(|s| s.kl_coef).collect();
        betas.push(t.beta());
        for (k, s) in stats.iter().enumerate() {
            let err = (s.kl / target - 1.0).clamp(-0.2, 0.2);
            let want = s.kl_coef * (1.0 + err * 8.0 / 100.0);
            assert!(
                (betas[k + 1] - want).abs() < 1e-12,
                "step {k}: β {} → {}, expected {want}",
                s.kl_coef,
                betas[k + 1]
            );
        }
        let last = stats.last().unwrap();
        assert!(last.kl > 1e-6, "policy did not drift: KL {}", last.kl);
        assert_eq!(
            t.beta() > last.kl_coef,
            expect_up,
            "target {target}: {betas:?}"
        );
    }
}

#[test]
fn early_stopping_cuts_epochs_when_the_policy_kl_is_over_target() {
    let base = base();
    let mut c = cfg(8);
    c.learning_rate = 3e-2;
    c.ppo_epochs = 4;
    c.mini_batch_size = 2;
    let mut free = LmPpoTrainer::new(policy(&base, 5), c.clone(), 5).unwrap();
    let s = train(&mut free, 0, 2, false);
    assert!(s.iter().all(|s| s.epochs_run == 4), "{s:?}");
    c.early_stopping = true;
    c.target_kl = 1e-7;
    let mut stopped = LmPpoTrainer::new(policy(&base, 5), c, 5).unwrap();
    let s = train(&mut stopped, 0, 2, false);
    let runs: Vec<usize> = s.iter().map(|s| s.epochs_run).collect();
    eprintln!("epochs run with target-kl 1e-7: {runs:?}");
    assert!(runs.iter().any(|&e| e < 4), "{runs:?}");
}

#[test]
fn eos_only_responses_and_single_token_batches_work() {
    let base = base();
    let mut t = LmPpoTrainer::new(policy(&base, 6), cfg(3), 6).unwrap();
    let p = prompts(3, 6);
    let ro = t
        .score_responses(&p, &[vec![EOS], vec![17, EOS], vec![3, 4, 5, 6]])
        .unwrap();
    assert_eq!(ro.logprobs[0].len(), 1);
    assert_eq!(ro.kl_per_sample[0], 0.0, "fresh adapters: π = π_ref");
    let s = t.step(&ro, &[1.0, 0.0, -1.0]).unwrap();
    assert!(s.fields().iter().all(|(_, v)| v.is_finite()), "{s:?}");
    // A whole batch of one-token (EOS) responses, and a batch of one.
    let ro = t
        .score_responses(&p, &[vec![EOS], vec![EOS], vec![EOS]])
        .unwrap();
    let s = t.step(&ro, &[1.0, 0.5, 0.0]).unwrap();
    assert!(s.fields().iter().all(|(_, v)| v.is_finite()), "{s:?}");
    assert_eq!(s.response_len, 1.0);
    let mut one = LmPpoTrainer::new(policy(&base, 6), cfg(1), 6).unwrap();
    let ro = one.score_responses(&p[..1], &[vec![EOS]]).unwrap();
    let s = one.step(&ro, &[2.0]).unwrap();
    assert!(s.fields().iter().all(|(_, v)| v.is_finite()), "{s:?}");
    // Generation that stops at EOS gives responses ending with it.
    let mut r = rng::stream(0, "gen");
    let ro = t.rollout(&p, &sampling(40, true), &mut r).unwrap();
    for (y, stopped) in ro.responses.iter().zip(&ro.stopped_at_eos) {
        assert_eq!(*stopped, y.last() == Some(&EOS));
    }
    t.step(&ro, &[0.0, 0.0, 0.0]).unwrap();
    // Empty responses and wrong sizes are errors, not panics.
    let e = t
        .score_responses(&p, &[vec![EOS], vec![], vec![1]])
        .unwrap_err()
        .to_string();
    assert!(e.contains("response 1 has no tokens"), "{e}");
    let mut hand_made = ro.clone();
    hand_made.responses[2].clear();
    hand_made.logprobs[2].clear();
    hand_made.ref_logprobs[2].clear();
    hand_made.values[2].clear();
    let e = t.step(&hand_made, &[0.0; 3]).unwrap_err().to_string();
    assert!(e.contains("response 2 has no tokens"), "{e}");
    let e = t.step(&ro, &[0.0]).unwrap_err().to_string();
    assert!(e.contains("1 scores for 3 responses"), "{e}");
    let ro4 = t
        .score_responses(&prompts(4, 1), &vec![vec![1]; 4])
        .unwrap();
    let e = t.step(&ro4, &[0.0; 4]).unwrap_err().to_string();
    assert!(e.contains("batch-size is 3"), "{e}");
}

#[test]
fn non_finite_scores_or_losses_leave_the_weights_unchanged() {
    let base = base();
    let mut t = LmPpoTrainer::new(policy(&base, 7), cfg(4), 7).unwrap();
    train(&mut t, 0, 1, false);
    let before = snapshot(&t);
    let (beta, steps) = (t.beta(), t.steps());
    let p = prompts(4, 70);
    let ro = t
        .score_responses(&p, &[vec![1, 2], vec![3], vec![4, 5, 6], vec![EOS]])
        .unwrap();
    let e = t
        .step(&ro, &[0.0, f32::NAN, 0.0, 0.0])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("step 1") && e.contains("score[1]") && e.contains("NaN"),
        "{e}"
    );
    // A finite but huge score overflows the value loss inside the update, possibly after other
    // mini-batches were applied: everything must be rolled back.
    let e = t.step(&ro, &[0.0, 0.0, 3e38, 0.0]).unwrap_err().to_string();
    // Mini-batch 0 of this permutation was fine and applied before mini-batch 1 overflowed.
    assert!(
        e.contains("step 1") && e.contains("value loss (epoch 0 mini-batch 1) is inf"),
        "{e}"
    );
    assert_eq!(snapshot(&t), before);
    assert_eq!((t.beta(), t.steps()), (beta, steps));
    // The optimiser state was restored too: the next good step equals a fresh copy's.
    let dir = tempfile::tempdir().unwrap();
    let mut copy = LmPpoTrainer::new(policy(&base, 7), cfg(4), 7).unwrap();
    train(&mut copy, 0, 1, false);
    copy.save(dir.path()).unwrap();
    let sa = t.step(&ro, &[0.0, 1.0, 0.5, 0.0]).unwrap();
    let sb = copy.step(&ro, &[0.0, 1.0, 0.5, 0.0]).unwrap();
    assert_eq!(without_timings(&sa), without_timings(&sb));
    assert_eq!(snapshot(&t), snapshot(&copy));
}

#[test]
fn resume_after_save_matches_the_uninterrupted_run() {
    let base = base();
    let dir = tempfile::tempdir().unwrap();
    let mut a = LmPpoTrainer::new(policy(&base, 8), cfg(6), 8).unwrap();
    let mut sa = train(&mut a, 0, 2, false);
    a.save(dir.path()).unwrap();
    sa.extend(train(&mut a, 2, 2, false));
    // Different seeds: everything must come from the checkpoint.
    let mut b = LmPpoTrainer::new(policy(&base, 99), cfg(6), 99).unwrap();
    b.load(dir.path()).unwrap();
    assert_eq!(b.steps(), 2);
    let sb = train(&mut b, 2, 2, false);
    for (x, y) in sa[2..].iter().zip(&sb) {
        assert_eq!(without_timings(x), without_timings(y));
    }
    assert_eq!(snapshot(&a), snapshot(&b));
    assert_eq!(a.beta(), b.beta());
    // Same seed, same run.
    let mut c = LmPpoTrainer::new(policy(&base, 8), cfg(6), 8).unwrap();
    let sc = train(&mut c, 0, 2, false);
    assert_eq!(without_timings(&sa[1]), without_timings(&sc[1]));
    // A checkpoint of another shape is refused by name.
    let mut other = LmPpoTrainer::new(
        LmPolicy::new(base.clone(), Some(&LoraConfig { rank: 2, ..lora() }), 8).unwrap(),
        cfg(6),
        8,
    )
    .unwrap();
    let e = other.load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("lora_A.weight") && e.contains("shape"), "{e}");
}

#[test]
fn config_validation_names_keys() {
    for (mutate, key) in [
        (
            Box::new(|c: &mut LmPpoConfig| c.batch_size = 0) as Box<dyn Fn(&mut LmPpoConfig)>,
            "batch-size",
        ),
        (Box::new(|c| c.mini_batch_size = 3), "mini-batch-size"),
        (Box::new(|c| c.ppo_epochs = 0), "ppo-epochs"),
        (Box::new(|c| c.cliprange = -1.0), "cliprange"),
        (Box::new(|c| c.lam = 1.5), "lam"),
        (Box::new(|c| c.kl.horizon = 0.0), "kl.horizon"),
        (Box::new(|c| c.max_grad_norm = Some(0.0)), "max-grad-norm"),
    ] {
        let mut c = LmPpoConfig {
            batch_size: 8,
            mini_batch_size: 4,
            ..Default::default()
        };
        mutate(&mut c);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(key), "{key}: {e}");
    }
    let c: LmPpoConfig =
        toml::from_str("batch-size = 8\nmini-batch-size = 4\n[kl]\ninit = 0.1\n").unwrap();
    assert_eq!((c.batch_size, c.ppo_epochs, c.kl.init), (8, 4, 0.1));
    let d = LmPpoConfig::default();
    assert_eq!(
        (d.kl.init, d.kl.target, d.vf_coef, d.lam),
        (0.2, Some(6.0), 0.1, 0.95)
    );
    assert!(toml::from_str::<LmPpoConfig>("batch-sise = 8").is_err());
    let no_lora = LmPolicy::new(base(), None, 0).unwrap();
    let e = LmPpoTrainer::new(no_lora, cfg(2), 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("LoRA"), "{e}");
}

/// A random GPT-2 of about 2M parameters (vocabulary 2048, 4 layers of width 192).
fn medium_model(dir: &Path) {
    let cfg = serde_json::json!({
        "model_type": "gpt2", "vocab_size": 2048, "n_positions": 128, "n_embd": 192,
        "n_layer": 4, "n_head": 6, "eos_token_id": 0, "layer_norm_epsilon": 1e-5,
        "activation_function": "gelu_new"
    });
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let mc: maxmin_lm::Gpt2ModelConfig = serde_json::from_value(cfg).unwrap();
    let mut r = rng::stream(0, "medium");
    let mut map = std::collections::HashMap::new();
    for (name, shape) in mc.tensor_shapes() {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = if name.contains("ln_") && name.ends_with("weight") {
            vec![1.0; n]
        } else if name.ends_with("bias") {
            vec![0.0; n]
        } else {
            (0..n).map(|_| r.random_range(-0.05f32..0.05)).collect()
        };
        map.insert(name, Tensor::from_vec(v, shape, &Device::Cpu).unwrap());
    }
    candle_core::safetensors::save(&map, dir.join("model.safetensors")).unwrap();
}

#[test]
fn timed_step_on_a_2m_parameter_model() {
    let dir = tempfile::tempdir().unwrap();
    medium_model(dir.path());
    let base = base_from(dir.path());
    // The dev profile runs a small smoke step; release runs 3 steps of 32 × 24 tokens (the
    // later steps are the timings to quote).
    let (b, new_tokens, steps) = if cfg!(debug_assertions) {
        (8, 8, 1)
    } else {
        (32, 24, 3)
    };
    let c = LmPpoConfig {
        batch_size: b,
        mini_batch_size: b / 4,
        learning_rate: 1e-3,
        ..Default::default()
    };
    let mut t = LmPpoTrainer::new(
        LmPolicy::new(base, Some(&LoraConfig::default()), 0).unwrap(),
        c,
        0,
    )
    .unwrap();
    let mut r = rng::stream(0, "timed");
    let mut pr = rng::stream(0, "timed-prompts");
    let p: Vec<Vec<u32>> = (0..b)
        .map(|_| {
            (0..pr.random_range(4..=8))
                .map(|_| pr.random_range(1..2048u32))
                .collect()
        })
        .collect();
    for k in 0..steps {
        let ro = t.rollout(&p, &sampling(new_tokens, false), &mut r).unwrap();
        let s = t.step(&ro, &score(&ro.responses)).unwrap();
        eprintln!(
            "step {k}: {b} responses, {} response tokens, gen {:.3} s, score {:.3} s, \
             train {:.3} s ({} epochs × 4 mini-batches), {:.0} tokens/s",
            ro.response_tokens(),
            s.gen_s,
            s.score_s,
            s.train_s,
            s.epochs_run,
            s.tokens_per_s
        );
        assert!(s.fields().iter().all(|(_, v)| v.is_finite()), "{s:?}");
    }
}

#[test]
fn a_rewarded_response_becomes_more_likely() {
    let base = base();
    let mut c = cfg(4);
    c.learning_rate = 1e-2;
    let mut t = LmPpoTrainer::new(policy(&base, 1), c, 1).unwrap();
    let p = vec![vec![1, 2, 3]; 4];
    let ys = vec![
        vec![5, 6, 7],
        vec![100, 101, 102],
        vec![200, 201, 202],
        vec![50, 51, 52],
    ];
    let total = |r: &maxmin_lm::ppo::Rollout, i: usize| r.logprobs[i].iter().sum::<f32>();
    let r0 = t.score_responses(&p, &ys).unwrap();
    for _ in 0..5 {
        let ro = t.score_responses(&p, &ys).unwrap();
        t.step(&ro, &[1.0, 0.0, 0.0, 0.0]).unwrap();
    }
    let r1 = t.score_responses(&p, &ys).unwrap();
    assert!(
        total(&r1, 0) > total(&r0, 0) + 5.0,
        "{:?} → {:?}",
        r0.logprobs[0],
        r1.logprobs[0]
    );
    for i in 1..4 {
        assert!(total(&r1, i) < total(&r0, i), "response {i}");
    }
}

#[test]
fn token_scores_at_the_last_token_match_sequence_scores() {
    let base = base();
    // None: sequence scores; Some(false): all at the last token; Some(true): spread evenly.
    let run = |spread: Option<bool>| {
        let mut t = LmPpoTrainer::new(policy(&base, 12), cfg(4), 12).unwrap();
        let mut r = rng::stream(11, "rollout/tokens");
        let ro = t
            .rollout(&prompts(4, 12), &sampling(NEW_TOKENS, false), &mut r)
            .unwrap();
        let s = score(&ro.responses);
        let stats = match spread {
            None => t.step(&ro, &s).unwrap(),
            Some(spread) => {
                let toks: Vec<Vec<f32>> = ro
                    .responses
                    .iter()
                    .zip(&s)
                    .map(|(y, &v)| {
                        let n = y.len();
                        (0..n)
                            .map(|i| match (spread, i + 1 == n) {
                                (true, _) => v / n as f32,
                                (false, true) => v,
                                (false, false) => 0.0,
                            })
                            .collect()
                    })
                    .collect();
                t.step_tokens(&ro, &toks).unwrap()
            }
        };
        (snapshot(&t), without_timings(&stats))
    };
    let seq = run(None);
    assert_eq!(seq, run(Some(false)), "all of the score at the last token");
    // The same total spread over the tokens changes the advantages, so the update.
    let spread = run(Some(true));
    assert_ne!(seq.0, spread.0);
    // Scores on tokens other than the last are used: with responses of one token the spread
    // equals the last-token placement, so every response here must be longer.
    let mut t = LmPpoTrainer::new(policy(&base, 12), cfg(4), 12).unwrap();
    let mut r = rng::stream(11, "rollout/tokens");
    let ro = t
        .rollout(&prompts(4, 12), &sampling(NEW_TOKENS, false), &mut r)
        .unwrap();
    assert!(ro.responses.iter().all(|y| y.len() > 1));
    let first_only: Vec<Vec<f32>> = ro
        .responses
        .iter()
        .map(|y| {
            (0..y.len())
                .map(|i| if i == 0 { 1.0 } else { 0.0 })
                .collect()
        })
        .collect();
    let zeros: Vec<Vec<f32>> = ro.responses.iter().map(|y| vec![0.0; y.len()]).collect();
    let mut u = LmPpoTrainer::new(policy(&base, 12), cfg(4), 12).unwrap();
    t.step_tokens(&ro, &first_only).unwrap();
    u.step_tokens(&ro, &zeros).unwrap();
    assert_ne!(
        snapshot(&t),
        snapshot(&u),
        "a score on the first token changed nothing"
    );

    // A token-score row of the wrong length is refused by response.
    let mut t = LmPpoTrainer::new(policy(&base, 12), cfg(4), 12).unwrap();
    let mut r = rng::stream(11, "rollout/tokens");
    let ro = t
        .rollout(&prompts(4, 12), &sampling(NEW_TOKENS, false), &mut r)
        .unwrap();
    let mut toks: Vec<Vec<f32>> = ro.responses.iter().map(|y| vec![0.0; y.len()]).collect();
    toks[2].push(1.0);
    let e = t.step_tokens(&ro, &toks).unwrap_err().to_string();
    assert!(
        e.contains("response 2") && e.contains("token scores"),
        "{e}"
    );
}
