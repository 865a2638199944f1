//! Models on the GPU against the CPU. Every test is `#[ignore = "needs a GPU: …"]`: a plain
//! `cargo test` lists them as ignored, never as passed. `benches/gpu-check.sh` runs them with
//! `--ignored` from the CUDA build (`scripts/build-cuda.sh`); without a GPU, or in a build
//! without the `cuda` feature, they fail at the first line, so the check cannot pass by accident.
//!
//! Unverified on GPU until that script has run on one (docs/gpu.md).

use maxmin_core::ops::logprob;
use maxmin_lm::candle::{DType, Device, Tensor};
use maxmin_lm::lm::{CausalLm, LmInput};
use maxmin_lm::{Gpt2, Gpt2ModelConfig};
use std::collections::HashMap;
use std::path::Path;

/// candle's device for GPU 0 (the one the whole run shares); panics without one.
fn gpu() -> Device {
    match maxmin_core::device::candle_cuda(0) {
        Ok(d) => d,
        Err(e) => panic!("GPU test run without a usable GPU (or without the cuda build): {e}"),
    }
}

fn host_f32(t: &Tensor) -> Vec<f32> {
    t.to_device(&Device::Cpu)
        .and_then(|t| t.to_dtype(DType::F32))
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .expect("tensor to host")
}

/// Largest `|gpu − cpu| / (1 + |cpu|)`; NaN counts as infinite.
fn worst_rel(gpu: &Tensor, cpu: &Tensor) -> f32 {
    let (g, c) = (host_f32(gpu), host_f32(cpu));
    assert_eq!(g.len(), c.len(), "shapes differ");
    g.iter()
        .zip(&c)
        .map(|(&g, &c)| {
            let e = (g - c).abs() / (1.0 + c.abs());
            if e.is_nan() {
                f32::INFINITY
            } else {
                e
            }
        })
        .fold(0.0, f32::max)
}

/// Two left-padded rows of token ids below `vocab`, `len` long.
fn input(vocab: usize, len: usize) -> LmInput {
    let a: Vec<u32> = (0..len).map(|i| ((i * 7919 + 13) % vocab) as u32).collect();
    let b: Vec<u32> = (0..len / 2)
        .map(|i| ((i * 104_729 + 5) % vocab) as u32)
        .collect();
    LmInput::left_padded(&[a, b], 0).expect("input")
}

fn logits_parity(cpu: &Gpt2, gpu: &Gpt2, vocab: usize, len: usize, tol: f32, what: &str) {
    let x = input(vocab, len);
    let lc = cpu.forward(&x, None, None).expect("CPU forward").logits;
    let lg = gpu.forward(&x, None, None).expect("GPU forward").logits;
    assert!(
        lg.device().is_cuda(),
        "{what}: GPU logits are not on the GPU"
    );
    let err = worst_rel(&lg, &lc);
    eprintln!(
        "{what}: logits {:?}, worst relative error {err:.3e}",
        lc.dims()
    );
    assert!(err <= tol, "{what}: GPU vs CPU logits {err:e} > {tol:e}");
}

#[test]
#[ignore = "needs a GPU: run with --ignored on the GPU machine (benches/gpu-check.sh)"]
fn gpu_gpt2_shipped_model_logits_match_cpu() {
    let dev = gpu();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/gpt2-imdb-tiny");
    let cpu = Gpt2::load(&dir, DType::F32, &Device::Cpu).expect("load on CPU");
    let gpu = Gpt2::load(&dir, DType::F32, &dev).expect("load on GPU");
    logits_parity(&cpu, &gpu, 4096, 48, 1e-4, "gpt2-imdb-tiny f32");
    // bf16 on the GPU: loads and runs; stated, not bounded by the f32 tolerance
    let gpu16 = Gpt2::load(&dir, DType::BF16, &dev).expect("load bf16 on GPU");
    let x = input(4096, 48);
    let l16 = gpu16.forward(&x, None, None).expect("bf16 forward").logits;
    let lc = cpu.forward(&x, None, None).expect("CPU forward").logits;
    eprintln!(
        "gpt2-imdb-tiny bf16 on GPU vs f32 CPU: worst relative error {:.3e} (stated)",
        worst_rel(&l16, &lc)
    );
}

#[test]
#[ignore = "needs a GPU: run with --ignored on the GPU machine (benches/gpu-check.sh)"]
fn gpu_gpt2_124m_shaped_random_logits_match_cpu() {
    let dev = gpu();
    let cfg: Gpt2ModelConfig = serde_json::from_value(serde_json::json!({
        "vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12,
    }))
    .expect("config");
    let mut cpu_t = HashMap::new();
    let mut gpu_t = HashMap::new();
    for (name, shape) in cfg.tensor_shapes() {
        let t = if name.contains("ln_") && name.ends_with(".weight") {
            Tensor::ones(shape.as_slice(), DType::F32, &Device::Cpu)
        } else if name.ends_with(".bias") {
            Tensor::zeros(shape.as_slice(), DType::F32, &Device::Cpu)
        } else {
            Tensor::randn(0f32, 0.02, shape.as_slice(), &Device::Cpu)
        }
        .expect("random tensor");
        gpu_t.insert(name.clone(), t.to_device(&dev).expect("to GPU"));
        cpu_t.insert(name, t);
    }
    let cpu = Gpt2::from_tensors(cfg.clone(), &cpu_t, &Device::Cpu).expect("CPU model");
    let gpu = Gpt2::from_tensors(cfg, &gpu_t, &dev).expect("GPU model");
    logits_parity(&cpu, &gpu, 50257, 64, 1e-4, "124M-shaped random GPT-2 f32");
}

/// The fused log-prob op on the GPT-2's own GPU logits, forward and backward through candle's
/// autograd, against the same on the CPU: the path LM PPO takes on `device = "cuda"`.
#[test]
#[ignore = "needs a GPU: run with --ignored on the GPU machine (benches/gpu-check.sh)"]
fn gpu_logprob_op_on_model_logits_matches_cpu() {
    let dev = gpu();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/gpt2-imdb-tiny");
    let model = Gpt2::load(&dir, DType::F32, &Device::Cpu).expect("load");
    let x = input(4096, 32);
    let z = model
        .forward(&x, None, None)
        .expect("forward")
        .logits
        .detach();
    let (b, t, v) = z.dims3().expect("[b, t, v]");
    let ids: Vec<u32> = (0..b * t).map(|i| ((i * 31 + 7) % v) as u32).collect();
    let targets = Tensor::from_vec(ids, (b, t), &Device::Cpu).expect("targets");
    let w = (&z * 0.9).expect("reference logits");
    let run = |d: &Device| -> (Vec<Tensor>, Tensor) {
        let zv = maxmin_lm::candle::Var::from_tensor(&z.to_device(d).expect("z")).expect("var");
        let out = logprob::token_logprobs(
            &maxmin_core::device::Device::Cpu,
            zv.as_tensor(),
            &targets.to_device(d).expect("t"),
            Some(&w.to_device(d).expect("w")),
        )
        .expect("token_logprobs");
        let kl = out.kl.clone().expect("kl");
        let loss = ((out.logp.sum_all().unwrap()
            + (&out.entropy * 0.01).unwrap().sum_all().unwrap())
        .unwrap()
            - (kl * 0.1).unwrap().sum_all().unwrap())
        .expect("loss");
        let grads = loss.backward().expect("backward");
        let g = grads.get(zv.as_tensor()).expect("gradient").clone();
        (
            vec![
                out.logp,
                out.entropy,
                out.kl.unwrap(),
                out.ref_logp.unwrap(),
            ],
            g,
        )
    };
    let (sc, gc) = run(&Device::Cpu);
    let (sg, gg) = run(&dev);
    assert!(
        gg.device().is_cuda(),
        "the gradient did not stay on the GPU"
    );
    for (name, (g, c)) in ["logp", "entropy", "kl", "ref_logp"]
        .iter()
        .zip(sg.iter().zip(&sc))
    {
        let e = worst_rel(g, c);
        eprintln!("token_logprobs {name}: worst relative error {e:.3e}");
        assert!(e <= 1e-5, "{name}: {e:e}");
    }
    let e = worst_rel(&gg, &gc);
    eprintln!("token_logprobs gradient: worst relative error {e:.3e}");
    assert!(e <= 1e-5, "gradient: {e:e}");
}

/// The Llama fixtures (MHA, and GQA from sharded safetensors) on the GPU: f32 logits vs CPU,
/// bf16 loads and runs, a KV-cached step equals the uncached forward, greedy generation with
/// the cache runs (tokens compared with the CPU's and reported), and a LoRA training step's
/// adapter gradients match the CPU's.
#[test]
#[ignore = "needs a GPU: run with --ignored on the GPU machine (benches/gpu-check.sh)"]
fn gpu_llama_and_gpt2_cache_generation_lora_match_cpu() {
    use maxmin_lm::generate::{generate, GenerateOptions};
    use maxmin_lm::lora::{Lora, LoraConfig};
    let dev = gpu();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in [
        root.join("tests/data/lm/llama-mha"),
        root.join("tests/data/lm/llama-gqa-sharded"),
        root.join("models/gpt2-imdb-tiny"),
    ] {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let load = |dt: DType, d: &Device| {
            maxmin_lm::auto::load_causal_lm(&dir, dt, d).unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        let (cpu, gpu) = (load(DType::F32, &Device::Cpu), load(DType::F32, &dev));
        let vocab = cpu.vocab_size();
        let x = input(vocab, 24);
        let lc = cpu.forward(&x, None, None).unwrap().logits;
        let lg = gpu.forward(&x, None, None).unwrap().logits;
        let e = worst_rel(&lg, &lc);
        eprintln!("{name} f32 logits: worst relative error {e:.3e}");
        assert!(e <= 1e-4, "{name}: logits {e:e}");
        let l16 = load(DType::BF16, &dev)
            .forward(&x, None, None)
            .unwrap()
            .logits;
        eprintln!(
            "{name} bf16 on GPU vs f32 CPU: {:.3e} (stated)",
            worst_rel(&l16, &lc)
        );

        // one cached step == the uncached forward's last position
        let prompt: Vec<u32> = (0..10).map(|i| ((i * 37 + 3) % vocab) as u32).collect();
        let next = ((prompt[9] as usize * 7 + 1) % vocab) as u32;
        let mut cache = gpu.new_cache();
        gpu.forward(&LmInput::single(&prompt).unwrap(), Some(&mut cache), None)
            .unwrap();
        let step = gpu
            .forward(&LmInput::single(&[next]).unwrap(), Some(&mut cache), None)
            .unwrap()
            .logits;
        let mut all = prompt.clone();
        all.push(next);
        let full = gpu
            .forward(&LmInput::single(&all).unwrap(), None, None)
            .unwrap()
            .logits;
        let e = worst_rel(&step, &full.narrow(1, 10, 1).unwrap());
        eprintln!("{name} KV-cached step vs full forward on GPU: {e:.3e}");
        assert!(e <= 1e-4, "{name}: cached step {e:e}");

        // greedy generation with the cache
        let opts = GenerateOptions {
            max_new_tokens: 12,
            stop_at_eos: false,
            ..Default::default()
        };
        let mut rng = maxmin_core::rng::stream(1, "gpu-test");
        let gg = generate(&*gpu, None, std::slice::from_ref(&prompt), &opts, &mut rng).unwrap();
        let gc = generate(&*cpu, None, std::slice::from_ref(&prompt), &opts, &mut rng).unwrap();
        assert_eq!(gg.tokens[0].len(), 12, "{name}: generation length");
        eprintln!(
            "{name} greedy generation GPU == CPU: {} (GPU {:?})",
            gg.tokens == gc.tokens,
            gg.tokens[0]
        );

        // a LoRA training step: adapter gradients of Σ log p(next token)
        let lora_grads = |m: &dyn CausalLm, d: &Device| -> Vec<Tensor> {
            let lora = Lora::new(
                &LoraConfig::default(),
                &m.lora_targets(),
                m.default_lora_modules(),
                7,
                d,
            )
            .unwrap();
            // B starts at zero (so would A's gradient): move B off zero first
            for v in lora.vars() {
                if v.as_tensor()
                    .sum_all()
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    == 0.0
                {
                    v.set(&(v.as_tensor().ones_like().unwrap() * 0.01).unwrap())
                        .unwrap();
                }
            }
            let logits = m.forward(&x, None, Some(&lora)).unwrap().logits;
            let (b, t, v) = logits.dims3().unwrap();
            let ids: Vec<u32> = (0..b * t).map(|i| ((i * 13 + 1) % v) as u32).collect();
            let tgt = Tensor::from_vec(ids, (b, t), d).unwrap();
            let out =
                logprob::token_logprobs(&maxmin_core::device::Device::Cpu, &logits, &tgt, None)
                    .unwrap();
            let grads = out.logp.sum_all().unwrap().backward().unwrap();
            lora.vars()
                .iter()
                .map(|v| grads.get(v.as_tensor()).expect("adapter gradient").clone())
                .collect()
        };
        let (gc, gg) = (lora_grads(&*cpu, &Device::Cpu), lora_grads(&*gpu, &dev));
        assert_eq!(gc.len(), gg.len());
        let e = gg
            .iter()
            .zip(&gc)
            .map(|(g, c)| worst_rel(g, c))
            .fold(0.0, f32::max);
        eprintln!(
            "{name} LoRA gradients ({} tensors) GPU vs CPU: {e:.3e}",
            gg.len()
        );
        assert!(e <= 1e-3, "{name}: LoRA gradients {e:e}");
    }
}
