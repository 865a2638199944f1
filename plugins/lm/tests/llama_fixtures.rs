//! Llama against Hugging Face transformers on the committed fixtures (`tests/data/lm/`):
//! multi-head single-file and grouped-query sharded checkpoints; cache, batching, LoRA, bad input.

use candle_core::{DType, Device, Tensor};
use candle_nn::Optimizer;
use maxmin_core::rng;
use maxmin_lm::generate::{generate, token_logprobs, GenerateOptions, Sampling};
use maxmin_lm::heads::ValueHead;
use maxmin_lm::lm::{CausalLm, LmInput};
use maxmin_lm::lora::{Lora, LoraConfig};
use maxmin_lm::{Llama, LlamaModelConfig};
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

fn load(name: &str) -> Llama {
    Llama::load(&data().join(name), DType::F32, &Device::Cpu).unwrap()
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

fn check(name: &str) {
    let r = reference(name);
    let m = load(name);
    let input = LmInput::single(&ids(&r["ids"])).unwrap();
    let out = m.forward(&input, None, None).unwrap();
    let want: Vec<f32> = r["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect();
    let want = Tensor::new(want, &Device::Cpu)
        .unwrap()
        .reshape(out.logits.shape())
        .unwrap();
    let d = max_abs(&out.logits, &want);
    eprintln!("{name}: max |ours - HF| = {d}");
    assert!(d <= 1e-4, "{name}: max |ours - HF| = {d}");
    let prompt = ids(&r["greedy_prompt"]);
    let expect = ids(&r["greedy_new_tokens"]);
    assert_eq!(
        greedy(&m, std::slice::from_ref(&prompt), expect.len(), true)[0],
        expect,
        "{name} cached"
    );
    assert_eq!(
        greedy(&m, std::slice::from_ref(&prompt), expect.len(), false)[0],
        expect,
        "{name} uncached"
    );
}

#[test]
fn multi_head_single_file_matches_hf() {
    check("llama-mha");
}

#[test]
fn grouped_query_sharded_matches_hf() {
    let m = load("llama-gqa-sharded");
    assert_eq!(m.config().kv_heads(), 2);
    assert!(data()
        .join("llama-gqa-sharded/model.safetensors.index.json")
        .is_file());
    check("llama-gqa-sharded");
}

#[test]
fn left_padded_batch_equals_each_prompt_alone() {
    for name in ["llama-mha", "llama-gqa-sharded"] {
        let m = load(name);
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
                "{name} {p:?}"
            );
        }
        assert_eq!(
            greedy(&m, &prompts, 8, false),
            batch,
            "{name} batch without cache"
        );
    }
}

#[test]
fn lora_zero_b_is_identity_and_training_moves_only_adapters_and_head() {
    let m = load("llama-gqa-sharded");
    let cfg = LoraConfig {
        rank: 2,
        alpha: 4.0,
        dropout: 0.0,
        target_modules: vec!["q_proj".into(), "k_proj".into(), "down_proj".into()],
    };
    let lora = Lora::new(
        &cfg,
        &m.lora_targets(),
        m.default_lora_modules(),
        3,
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(lora.modules().len(), 6);
    let input = LmInput::left_padded(&[vec![5, 77, 140, 3], vec![31, 9]], 0).unwrap();
    let base = m.forward(&input, None, None).unwrap();
    // The adapted forward also takes the differentiable path (composed softmax/RMSNorm/RoPE).
    let adapted = m.forward(&input, None, Some(&lora)).unwrap();
    assert!(max_abs(&base.logits, &adapted.logits) < 1e-5);
    let value = ValueHead::new(m.hidden_size(), 3, &Device::Cpu).unwrap();
    let mut vars = lora.vars();
    vars.extend(value.vars());
    let before: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().copy().unwrap()).collect();
    let mut opt = candle_nn::AdamW::new(
        vars.clone(),
        candle_nn::ParamsAdamW {
            lr: 1e-2,
            ..Default::default()
        },
    )
    .unwrap();
    for _ in 0..3 {
        let out = m.forward(&input, None, Some(&lora)).unwrap();
        let loss = (token_logprobs(&out.logits, &input)
            .unwrap()
            .sum_all()
            .unwrap()
            .neg()
            .unwrap()
            + value
                .forward(&out.hidden)
                .unwrap()
                .sqr()
                .unwrap()
                .mean_all()
                .unwrap())
        .unwrap();
        opt.backward_step(&loss).unwrap();
    }
    for (v, b) in vars.iter().zip(&before) {
        assert!(
            max_abs(v.as_tensor(), b) > 0.0,
            "a trainable tensor did not move"
        );
    }
    assert_eq!(
        max_abs(&base.logits, &m.forward(&input, None, None).unwrap().logits),
        0.0
    );
    assert!(
        max_abs(
            &base.logits,
            &m.forward(&input, None, Some(&lora)).unwrap().logits
        ) > 1e-4
    );
}

#[test]
fn bf16_compute_is_close_to_f32() {
    let input = LmInput::single(&[5, 77, 140, 3, 250, 31, 9]).unwrap();
    let f = load("llama-mha")
        .forward(&input, None, None)
        .unwrap()
        .logits;
    let m = Llama::load(&data().join("llama-mha"), DType::BF16, &Device::Cpu).unwrap();
    let l = m.forward(&input, None, None).unwrap().logits;
    let scale = f
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .max(1.0);
    assert!(max_abs(&l, &f) < 0.05 * scale);
}

#[test]
fn seven_b_memory_estimate_from_loader_accounting() {
    let c = LlamaModelConfig::llama2_7b();
    let a = c.accounting(DType::BF16, DType::BF16);
    assert_eq!(a.params, 6_738_415_616, "Llama-2-7B parameter count");
    assert_eq!(a.compute_bytes, 2 * 6_738_415_616);
    let f = c.accounting(DType::BF16, DType::F32);
    assert_eq!(f.compute_bytes, 4 * 6_738_415_616);
    assert!(a.peak_bytes() > a.compute_bytes && a.peak_bytes() < a.compute_bytes + (1 << 30));
}

#[test]
fn bad_checkpoints_are_clear_errors() {
    let src = data().join("llama-gqa-sharded");
    // A shard named by the index is missing.
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "config.json",
        "model.safetensors.index.json",
        "model-00001-of-00003.safetensors",
        "model-00002-of-00003.safetensors",
    ] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let e = Llama::load(dir.path(), DType::F32, &Device::Cpu).unwrap_err();
    assert!(
        e.to_string().contains("model-00003-of-00003.safetensors"),
        "{e}"
    );
    assert_eq!(e.exit_code(), 2);
    // A corrupt shard.
    std::fs::write(
        dir.path().join("model-00003-of-00003.safetensors"),
        b"\x10\0\0\0\0\0\0\0{not json}",
    )
    .unwrap();
    let e = Llama::load(dir.path(), DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model-00003-of-00003.safetensors") && e.contains("not a valid safetensors"),
        "{e}"
    );
    // config.json missing a field.
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("rms_norm_eps");
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let e = Llama::load(dir.path(), DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing field `rms_norm_eps`") && e.contains("config.json"),
        "{e}"
    );
}

#[test]
fn lm_config_loads_through_auto() {
    let c: maxmin_lm::LmConfig =
        toml::from_str("model = \"allenai/tulu-2-7b\"\ndtype = \"bf16\"\n[lora]\nrank = 16\n")
            .unwrap();
    c.validate().unwrap();
    assert_eq!(c.lora.as_ref().unwrap().rank, 16);
    let e = c.model_dir().unwrap_err();
    assert!(e.to_string().contains("hint:"), "{e}");
    let c: maxmin_lm::LmConfig = toml::from_str(&format!(
        "model = \"{}\"\n",
        data().join("llama-mha").display()
    ))
    .unwrap();
    let m = maxmin_lm::load_causal_lm(
        &c.model_dir().unwrap(),
        c.compute_dtype().unwrap(),
        &c.device().unwrap(),
    )
    .unwrap();
    assert_eq!(m.vocab_size(), 288);
}
