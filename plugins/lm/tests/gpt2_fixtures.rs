//! GPT-2 against Hugging Face transformers on the committed fixtures (`tests/data/lm/`), plus the
//! cache / batching / LoRA / bad-input properties a policy relies on.

use candle_core::{DType, Device, Tensor};
use candle_nn::Optimizer;
use maxmin_core::rng;
use maxmin_lm::generate::{generate, GenerateOptions, Sampling};
use maxmin_lm::heads::{RewardHead, ValueHead};
use maxmin_lm::lm::{CausalLm, LmInput};
use maxmin_lm::lora::{Lora, LoraConfig};
use maxmin_lm::Gpt2;
use std::path::{Path, PathBuf};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/lm")
}

fn reference(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(data().join("reference.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["fixtures"][name].clone()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn load(name: &str) -> Gpt2 {
    Gpt2::load(&data().join(name), DType::F32, &Device::Cpu).unwrap()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn check_logits(name: &str) {
    let r = reference(name);
    let m = load(name);
    let input = LmInput::single(&ids(&r["ids"])).unwrap();
    let out = m.forward(&input, None, None).unwrap();
    let want: Vec<Vec<f32>> = r["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    let t = want.len();
    let want = Tensor::new(want.concat(), &Device::Cpu)
        .unwrap()
        .reshape((1, t, m.vocab_size()))
        .unwrap();
    let d = max_abs(&out.logits, &want);
    eprintln!("{name}: max |ours - HF| = {d}");
    assert!(d <= 1e-4, "{name}: max |ours - HF| = {d}");
    assert_eq!(out.hidden.dims(), &[1, t, m.hidden_size()]);
}

#[test]
fn logits_match_hf_with_transformer_prefix() {
    check_logits("gpt2-prefix");
}

#[test]
fn logits_match_hf_without_prefix_stored_f16() {
    check_logits("gpt2-noprefix");
}

fn greedy(m: &dyn CausalLm, prompts: &[Vec<u32>], n: usize, use_cache: bool) -> Vec<Vec<u32>> {
    let opts = GenerateOptions {
        max_new_tokens: n,
        sampling: Sampling::Greedy,
        stop_at_eos: false,
        use_cache,
        pad_id: 0,
    };
    generate(m, None, prompts, &opts, &mut rng::stream(0, "gen"))
        .unwrap()
        .tokens
}

#[test]
fn greedy_matches_hf_with_and_without_cache() {
    for name in ["gpt2-prefix", "gpt2-noprefix"] {
        let r = reference(name);
        let m = load(name);
        let prompt = ids(&r["greedy_prompt"]);
        let want = ids(&r["greedy_new_tokens"]);
        let cached = greedy(&m, std::slice::from_ref(&prompt), want.len(), true);
        let plain = greedy(&m, std::slice::from_ref(&prompt), want.len(), false);
        assert_eq!(cached[0], want, "{name} with cache");
        assert_eq!(plain[0], want, "{name} without cache");
    }
}

#[test]
fn left_padded_batch_equals_each_prompt_alone() {
    let m = load("gpt2-prefix");
    let prompts = vec![
        vec![5, 77, 140, 3, 250, 31],
        vec![9, 2],
        vec![100, 101, 102, 103],
    ];
    let batch = greedy(&m, &prompts, 8, true);
    for (p, got) in prompts.iter().zip(&batch) {
        assert_eq!(
            &greedy(&m, std::slice::from_ref(p), 8, true)[0],
            got,
            "prompt {p:?}"
        );
    }
    // Logits of the real tokens agree too, and sampling with a seed is reproducible per batch.
    let input = LmInput::left_padded(&prompts, 0).unwrap();
    let out = m.forward(&input, None, None).unwrap();
    let t = input.seq_len;
    for (r, p) in prompts.iter().enumerate() {
        let alone = m
            .forward(&LmInput::single(p).unwrap(), None, None)
            .unwrap()
            .logits;
        let row = out
            .logits
            .narrow(0, r, 1)
            .unwrap()
            .narrow(1, t - p.len(), p.len())
            .unwrap();
        assert!(max_abs(&row, &alone) < 1e-4);
    }
    let s = GenerateOptions {
        max_new_tokens: 6,
        sampling: Sampling::Sample {
            temperature: 0.9,
            top_k: Some(20),
            top_p: Some(0.95),
        },
        stop_at_eos: false,
        use_cache: true,
        pad_id: 0,
    };
    let a = generate(&m, None, &prompts, &s, &mut rng::stream(3, "gen")).unwrap();
    let b = generate(&m, None, &prompts, &s, &mut rng::stream(3, "gen")).unwrap();
    assert_eq!(a, b);
}

#[test]
fn stop_at_eos_is_an_option() {
    let m = load("gpt2-prefix");
    // Prompt ending in a token whose greedy successor we then declare... instead: find the first
    // greedy token and check the generated sequence stops right after EOS when EOS appears.
    let prompts = vec![vec![5, 77, 140, 3]];
    let all = greedy(&m, &prompts, 12, true);
    let opts = GenerateOptions {
        max_new_tokens: 12,
        stop_at_eos: true,
        ..Default::default()
    };
    let g = generate(&m, None, &prompts, &opts, &mut rng::stream(0, "g")).unwrap();
    match all[0].iter().position(|&t| t == 0) {
        Some(i) => {
            assert_eq!(g.tokens[0], all[0][..=i].to_vec());
            assert!(g.stopped_at_eos[0]);
        }
        None => {
            assert_eq!(g.tokens[0], all[0]);
            assert!(!g.stopped_at_eos[0]);
        }
    }
}

#[test]
fn lora_zero_b_is_identity_and_training_moves_only_adapters_and_heads() {
    let m = load("gpt2-prefix");
    let cfg = LoraConfig {
        rank: 4,
        alpha: 8.0,
        dropout: 0.1,
        target_modules: vec!["c_attn".into(), "c_fc".into()],
    };
    let lora = Lora::new(
        &cfg,
        &m.lora_targets(),
        m.default_lora_modules(),
        7,
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(lora.modules().len(), 4);
    let input = LmInput::left_padded(&[vec![5, 77, 140, 3, 250], vec![31, 9]], 0).unwrap();
    let base = m.forward(&input, None, None).unwrap();
    let adapted = m.forward(&input, None, Some(&lora)).unwrap();
    assert!(max_abs(&base.logits, &adapted.logits) < 1e-5);

    let value = ValueHead::new(m.hidden_size(), 7, &Device::Cpu).unwrap();
    let reward = RewardHead::new(m.hidden_size(), 7, &Device::Cpu).unwrap();
    let mut vars = lora.vars();
    vars.extend(value.vars());
    vars.extend(reward.vars());
    let before: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().copy().unwrap()).collect();
    let mut opt = candle_nn::AdamW::new(
        vars.clone(),
        candle_nn::ParamsAdamW {
            lr: 1e-2,
            ..Default::default()
        },
    )
    .unwrap();
    lora.set_training(true);
    for _ in 0..3 {
        let out = m.forward(&input, None, Some(&lora)).unwrap();
        let lp = maxmin_lm::generate::token_logprobs(&out.logits, &input).unwrap();
        let loss = (lp.sum_all().unwrap().neg().unwrap()
            + value
                .forward(&out.hidden)
                .unwrap()
                .sqr()
                .unwrap()
                .mean_all()
                .unwrap()
            + reward
                .forward(&out.hidden, &input)
                .unwrap()
                .sum_all()
                .unwrap())
        .unwrap();
        opt.backward_step(&loss).unwrap();
    }
    lora.set_training(false);
    for (v, b) in vars.iter().zip(&before) {
        assert!(
            max_abs(v.as_tensor(), b) > 0.0,
            "a trainable tensor did not move"
        );
    }
    // The base weights are not variables and did not change: the reference policy is intact.
    let after = m.forward(&input, None, None).unwrap();
    assert_eq!(max_abs(&base.logits, &after.logits), 0.0);
    let adapted = m.forward(&input, None, Some(&lora)).unwrap();
    assert!(max_abs(&base.logits, &adapted.logits) > 1e-4);
}

#[test]
fn reward_head_reads_last_real_token_for_either_padding_side() {
    let m = load("gpt2-prefix");
    let head = RewardHead::new(m.hidden_size(), 1, &Device::Cpu).unwrap();
    let seqs = vec![vec![5, 77, 140], vec![9, 2, 4, 8, 16]];
    let left = LmInput::left_padded(&seqs, 0).unwrap();
    let r_left = head
        .forward(&m.forward(&left, None, None).unwrap().hidden, &left)
        .unwrap();
    // Right padding: real tokens first, mask marks them.
    let right = LmInput::new(
        vec![5, 77, 140, 0, 0, 9, 2, 4, 8, 16],
        vec![1, 1, 1, 0, 0, 1, 1, 1, 1, 1],
        2,
        5,
    )
    .unwrap();
    let r_right = head
        .forward(&m.forward(&right, None, None).unwrap().hidden, &right)
        .unwrap();
    assert!(max_abs(&r_left, &r_right) < 1e-4);
    let alone = LmInput::single(&seqs[0]).unwrap();
    let r0 = head
        .forward(&m.forward(&alone, None, None).unwrap().hidden, &alone)
        .unwrap();
    assert!(max_abs(&r_left.narrow(0, 0, 1).unwrap(), &r0) < 1e-4);
}

#[test]
fn half_precision_compute_is_close_to_f32() {
    let r = reference("gpt2-prefix");
    let input = LmInput::single(&ids(&r["ids"])).unwrap();
    let f32_logits = load("gpt2-prefix")
        .forward(&input, None, None)
        .unwrap()
        .logits;
    for dt in [DType::BF16, DType::F16] {
        let m = Gpt2::load(&data().join("gpt2-prefix"), dt, &Device::Cpu).unwrap();
        assert_eq!(m.dtype(), dt);
        let l = m.forward(&input, None, None).unwrap().logits;
        let scale = f32_logits
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let d = max_abs(&l, &f32_logits);
        assert!(d < 0.05 * scale.max(1.0), "{dt:?}: {d} vs scale {scale}");
    }
}

#[test]
fn load_accounting_counts_every_tensor() {
    let m = load("gpt2-prefix");
    let a = m.load_accounting();
    let expect = m.config().accounting(DType::F32, DType::F32);
    assert_eq!(a, expect);
    // Stored f16, computed f32: half the bytes on disk.
    let m = load("gpt2-noprefix");
    assert_eq!(
        m.load_accounting().stored_bytes * 2,
        m.load_accounting().compute_bytes
    );
}

#[test]
fn policy_and_reference_share_one_base() {
    use maxmin_lm::policy::LmPolicy;
    use std::sync::Arc;
    let base: Arc<dyn CausalLm> = Arc::new(load("gpt2-prefix"));
    let lora = LoraConfig {
        rank: 2,
        ..Default::default()
    };
    let policy = LmPolicy::new(base.clone(), Some(&lora), 1).unwrap();
    assert_eq!(
        Arc::strong_count(&base),
        2,
        "the policy holds the same base"
    );
    // Trainable: 2 adapters (A, B) per c_attn × 2 layers + value head (w, b).
    assert_eq!(policy.trainable_vars().len(), 2 * 2 + 2);
    let input = LmInput::left_padded(&[vec![5, 77, 140], vec![9, 2, 4, 8]], 0).unwrap();
    let p = policy.forward(&input, None).unwrap();
    let r = policy.reference_forward(&input, None).unwrap();
    assert!(
        max_abs(&p.logits, &r.logits) < 1e-5,
        "fresh adapters change nothing"
    );
    assert_eq!(p.values.dims(), &[2, input.seq_len]);
    let g = policy
        .generate(
            &[vec![5, 77]],
            &GenerateOptions {
                max_new_tokens: 3,
                stop_at_eos: false,
                ..Default::default()
            },
            &mut rng::stream(0, "g"),
        )
        .unwrap();
    assert_eq!(g.tokens[0].len(), 3);
}
