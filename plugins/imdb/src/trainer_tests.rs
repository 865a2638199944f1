//! Tests of the fast trainer (`trainer.rs`) against the candle reference path of `pretrain.rs`:
//! a file of its own so that neither of the two files depends on the other through its tests
//! (tests/layering.rs checks files for cycles).

use crate::pretrain::{batch_loss, init_named, model_of, params_of, PretrainConfig};
use crate::trainer::*;
use candle_core::Device;
use maxmin_lm::Gpt2ModelConfig;
use rand::Rng as _;
use std::collections::HashMap;

fn setup(
    layers: usize,
    hidden: usize,
    heads: usize,
    context: usize,
    vocab: usize,
    batch: usize,
) -> (Gpt2ModelConfig, HashMap<String, Vec<f32>>, Vec<Vec<u32>>) {
    let cfg = PretrainConfig {
        layers,
        hidden,
        heads,
        context,
        ..Default::default()
    };
    let mc = cfg.model_config(vocab, 0);
    let mut named = init_named(&mc, 7).unwrap();
    // Non-trivial layer norms and biases, so their gradients are exercised too.
    let mut rng = maxmin_core::rng::stream(3, "trainer-test");
    for (name, v) in named.iter_mut() {
        if name.ends_with(".bias") || name.contains("ln_") {
            for x in v.iter_mut() {
                *x += rng.random_range(-0.3f32..0.3);
            }
        }
    }
    let windows = (0..batch)
        .map(|_| {
            (0..=context)
                .map(|_| rng.random_range(0..vocab as u32))
                .collect()
        })
        .collect();
    (mc, named, windows)
}

#[test]
fn loss_and_every_gradient_match_candle_autograd() {
    let (mc, named, windows) = setup(2, 16, 2, 6, 50, 3);
    let mut tr = Gpt2Trainer::new(mc.clone(), &named).unwrap();
    let ours = tr.loss_and_grads(&windows).unwrap();
    let params = params_of(&mc, named, &Device::Cpu).unwrap();
    let model = model_of(&mc, &params, &Device::Cpu).unwrap();
    let loss = batch_loss(&model, &windows, &Device::Cpu).unwrap();
    let theirs = loss.to_scalar::<f32>().unwrap() as f64;
    assert!(
        (ours - theirs).abs() < 1e-5,
        "loss {ours} vs candle {theirs}"
    );
    assert!((tr.loss(&windows).unwrap() - ours).abs() < 1e-9);
    let grads = loss.backward().unwrap();
    for (name, var) in &params {
        let want: Vec<f32> = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let got = tr.grad(name);
        let scale = want.iter().fold(1e-3f32, |m, x| m.max(x.abs()));
        let err = got
            .iter()
            .zip(&want)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            err / scale < 1e-4,
            "{name}: max error {err} (scale {scale})"
        );
    }
}

#[test]
fn training_steps_are_bit_identical_on_one_and_two_threads() {
    let (mc, named, windows) = setup(2, 64, 4, 16, 300, 8);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut tr = Gpt2Trainer::new(mc.clone(), &named).unwrap();
            let mut losses = Vec::new();
            for _ in 0..3 {
                losses.push(tr.loss_and_grads(&windows).unwrap());
                tr.adam_step(1e-2, 1.0).unwrap();
            }
            (losses, tr.named_params())
        })
    };
    let (a, b) = (run(1), run(2));
    assert_eq!(a.0, b.0, "losses differ between 1 and 2 threads");
    for ((name, _, x), (_, _, y)) in a.1.iter().zip(&b.1) {
        assert!(
            x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{name} differs between 1 and 2 threads"
        );
    }
    assert!(a.0[2] < a.0[0], "loss did not fall: {:?}", a.0);
}

#[test]
fn a_non_finite_gradient_is_an_error_and_leaves_the_weights() {
    let (mc, named, windows) = setup(1, 16, 2, 4, 40, 2);
    let mut tr = Gpt2Trainer::new(mc, &named).unwrap();
    tr.loss_and_grads(&windows).unwrap();
    tr.grads[5] = f32::NAN;
    let before = tr.named_params();
    let e = tr.adam_step(1e-2, 1.0).unwrap_err().to_string();
    assert!(e.contains("gradient norm"), "{e}");
    assert_eq!(before, tr.named_params());
}

#[test]
fn bad_windows_are_refused() {
    let (mc, named, _) = setup(1, 16, 2, 4, 40, 2);
    let tr = Gpt2Trainer::new(mc, &named).unwrap();
    assert!(tr.loss(&[]).is_err());
    assert!(tr.loss(&[vec![1, 2, 3], vec![1, 2]]).is_err());
    let e = tr.loss(&[vec![1, 99, 3]]).unwrap_err().to_string();
    assert!(e.contains("99"), "{e}");
    let e = tr.loss(&[vec![1; 9]]).unwrap_err().to_string();
    assert!(e.contains("n_positions"), "{e}");
}
