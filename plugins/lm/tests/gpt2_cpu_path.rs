//! GPT-2's no-gradient CPU forward (`maxmin_lm::cpu`, taken for generation, scoring and the
//! reference policy) against the tensor path (candle ops, taken when gradients are wanted) on
//! the same weights: padded batches, the KV cache across both paths, LoRA adapters, logit spans.

use candle_core::{DType, Device, Tensor};
use maxmin_lm::lm::{CausalLm, ForwardOpts, LmInput};
use maxmin_lm::lora::{Lora, LoraConfig};
use maxmin_lm::Gpt2;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/lm/gpt2-noprefix")
}

/// The fixture twice: loaded (no-gradient forwards take the CPU path) and rebuilt from its
/// tensors (`from_tensors` marks it trainable, so a gradient forward takes the tensor path).
fn both() -> (Gpt2, Gpt2) {
    let fast = Gpt2::load(&dir(), DType::F32, &Device::Cpu).unwrap();
    let raw =
        candle_core::safetensors::load(dir().join("model.safetensors"), &Device::Cpu).unwrap();
    let tensors: HashMap<String, Tensor> = raw
        .into_iter()
        .map(|(k, v)| (k, v.to_dtype(DType::F32).unwrap()))
        .collect();
    let slow = Gpt2::from_tensors(fast.config().clone(), &tensors, &Device::Cpu).unwrap();
    (fast, slow)
}

fn no_grad() -> ForwardOpts {
    ForwardOpts {
        grad: false,
        ..ForwardOpts::default()
    }
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn seqs() -> Vec<Vec<u32>> {
    // Lengths 11, 3 and 9: left padding, and rows both above and below the 8-query threshold
    // where attention switches from dot products to matrix products.
    vec![
        (0..11).map(|i| (i * 37 + 5) % 288).collect(),
        vec![7, 200, 31],
        (0..9).map(|i| (i * 53 + 1) % 288).collect(),
    ]
}

/// Rank-4 adapters on `modules` of `model`, every value (A and B) set to `value(var, index)`.
fn adapters(
    model: &Gpt2,
    modules: &[&str],
    seed: u64,
    value: impl Fn(usize, usize) -> f32,
) -> Lora {
    let cfg = LoraConfig {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        target_modules: modules.iter().map(|m| m.to_string()).collect(),
    };
    let targets = model.lora_targets();
    let lora = Lora::new(
        &cfg,
        &targets,
        model.default_lora_modules(),
        seed,
        &Device::Cpu,
    )
    .unwrap();
    for (i, v) in lora.vars().iter().enumerate() {
        let vals: Vec<f32> = (0..v.as_tensor().elem_count())
            .map(|j| value(i, j))
            .collect();
        v.set(&Tensor::from_vec(vals, v.as_tensor().shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
    lora
}

#[test]
fn padded_batch_matches_tensor_path() {
    let (fast, slow) = both();
    let input = LmInput::left_padded(&seqs(), 0).unwrap();
    let a = fast.forward_with(&input, None, None, no_grad()).unwrap();
    let b = slow.forward(&input, None, None).unwrap();
    let mask: Vec<f32> = input.mask.iter().map(|&m| m as f32).collect();
    let (bt, t) = (input.batch, input.seq_len);
    let mask = Tensor::from_vec(mask, (bt, t, 1), &Device::Cpu).unwrap();
    // Padding positions are never read; compare the real ones.
    let keep = |x: &Tensor| x.broadcast_mul(&mask).unwrap();
    let d = max_diff(&keep(&a.logits), &keep(&b.logits));
    assert!(d < 1e-4, "logits differ by {d}");
    let d = max_diff(&keep(&a.hidden), &keep(&b.hidden));
    assert!(d < 1e-4, "hidden states differ by {d}");
    assert!(a
        .logits
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .all(|x| x.is_finite()));
}

#[test]
fn cache_steps_match_tensor_path_and_mix_with_it() {
    let (fast, slow) = both();
    let prompt = LmInput::left_padded(&seqs(), 0).unwrap();
    let (mut cf, mut cs, mut cm) = (fast.new_cache(), slow.new_cache(), fast.new_cache());
    let a = fast
        .forward_with(&prompt, Some(&mut cf), None, no_grad())
        .unwrap();
    slow.forward(&prompt, Some(&mut cs), None).unwrap();
    // The mixed cache: prompt through the tensor path, steps through the CPU path.
    slow.forward(&prompt, Some(&mut cm), None).unwrap();
    let last = |x: &Tensor| x.narrow(1, prompt.seq_len - 1, 1).unwrap();
    let mut next: Vec<u32> = vec![3, 100, 250];
    let _ = last(&a.logits);
    for step in 0..4 {
        let input = LmInput::new(next.clone(), vec![1; 3], 3, 1).unwrap();
        let f = fast
            .forward_with(&input, Some(&mut cf), None, no_grad())
            .unwrap();
        let s = slow.forward(&input, Some(&mut cs), None).unwrap();
        let m = fast
            .forward_with(&input, Some(&mut cm), None, no_grad())
            .unwrap();
        let d = max_diff(&f.logits, &s.logits);
        assert!(d < 1e-4, "step {step}: logits differ by {d}");
        let d = max_diff(&m.logits, &s.logits);
        assert!(d < 1e-4, "step {step}, mixed cache: logits differ by {d}");
        next = next.iter().map(|x| (x * 7 + 11) % 288).collect();
    }
    assert_eq!(cf.len(), prompt.seq_len + 4);
}

#[test]
fn lora_adapters_and_logit_span_match_tensor_path() {
    let (fast, _) = both();
    // Non-zero B everywhere, so every adapter changes the output.
    let lora = adapters(&fast, &["c_attn", "c_fc", "mlp.c_proj"], 3, |i, j| {
        (((j * 31 + i * 7) % 17) as f32 - 8.0) * 0.02
    });
    let input = LmInput::left_padded(&seqs(), 0).unwrap();
    let span = ForwardOpts {
        grad: false,
        logits_from: 8,
        logits_len: Some(3),
    };
    let a = fast.forward_with(&input, None, Some(&lora), span).unwrap();
    let b = fast
        .forward_with(
            &input,
            None,
            Some(&lora),
            ForwardOpts { grad: true, ..span },
        )
        .unwrap();
    assert_eq!(a.logits.dims(), &[3, 3, 288]);
    let d = max_diff(&a.logits, &b.logits);
    assert!(d < 1e-4, "logits with adapters differ by {d}");
    // The adapters matter: without them the logits move.
    let c = fast.forward_with(&input, None, None, span).unwrap();
    assert!(max_diff(&a.logits, &c.logits) > 1e-2);
}

#[test]
fn cpu_path_does_not_depend_on_thread_count() {
    let (fast, _) = both();
    let input = LmInput::left_padded(&seqs(), 0).unwrap();
    let run = |threads: usize| -> Vec<f32> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let out = fast.forward_with(&input, None, None, no_grad()).unwrap();
            out.logits.flatten_all().unwrap().to_vec1().unwrap()
        })
    };
    let one = run(1);
    for t in [2, 3] {
        assert!(one == run(t), "logits on {t} threads differ from 1 thread");
    }
}

/// LoRA training forward: the written-out op (`Gpt2::load`ed model) against candle's autograd
/// (the same weights through `from_tensors`), same loss, every adapter's gradient.
#[test]
fn lora_training_gradients_match_tensor_path() {
    let (fast, slow) = both();
    let lora = adapters(&fast, &["c_attn", "c_proj", "c_fc"], 5, |i, j| {
        (((j * 13 + i * 5) % 19) as f32 - 9.0) * 0.03
    });
    let input = LmInput::left_padded(&seqs(), 0).unwrap();
    let opts = ForwardOpts {
        grad: true,
        logits_from: 2,
        logits_len: Some(9),
    };
    // Weights only at real tokens, as PPO's masked losses have: a padding query before a row's
    // first token attends uniformly to everything (finite, but not a function the two paths
    // need to agree on) and never reaches a loss.
    let (t, v, c) = (input.seq_len, 288, 32);
    let real = |row: usize, pos: usize| input.mask[row * t + pos] as f32;
    let loss_of = |m: &Gpt2| -> Tensor {
        let out = m.forward_with(&input, None, Some(&lora), opts).unwrap();
        let lw: Vec<f32> = (0..out.logits.elem_count())
            .map(|i| {
                let (row, pos) = (i / (9 * v), 2 + (i / v) % 9);
                real(row, pos) * (((i * 7) % 11) as f32 * 0.01 - 0.05)
            })
            .collect();
        let lw = Tensor::from_vec(lw, out.logits.shape(), &Device::Cpu).unwrap();
        let hw: Vec<f32> = (0..out.hidden.elem_count())
            .map(|i| real(i / (t * c), (i / c) % t) * (((i * 3) % 7) as f32 * 0.02 - 0.06))
            .collect();
        let hw = Tensor::from_vec(hw, out.hidden.shape(), &Device::Cpu).unwrap();
        ((out.logits * lw).unwrap().sum_all().unwrap()
            + (out.hidden * hw).unwrap().sum_all().unwrap())
        .unwrap()
    };
    let (lf, ls) = (loss_of(&fast), loss_of(&slow));
    let (vf, vs) = (
        lf.to_scalar::<f32>().unwrap(),
        ls.to_scalar::<f32>().unwrap(),
    );
    assert!(
        (vf - vs).abs() < 1e-3 * vs.abs().max(1.0),
        "loss {vf} vs {vs}"
    );
    let (gf, gs) = (lf.backward().unwrap(), ls.backward().unwrap());
    let mut checked = 0;
    for v in lora.vars() {
        let a = gf.get(v.as_tensor()).expect("op path: no gradient");
        let b = gs.get(v.as_tensor()).expect("tensor path: no gradient");
        let scale = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = scale.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let d = max_diff(a, b);
        assert!(scale > 1e-6, "a gradient is zero on the tensor path");
        assert!(
            d <= 1e-3 * scale.max(1e-2),
            "gradient {checked} differs by {d} (scale {scale})"
        );
        checked += 1;
    }
    assert_eq!(checked, 2 * 2 * 4, "2 layers × 4 modules × (A, B)");
}
