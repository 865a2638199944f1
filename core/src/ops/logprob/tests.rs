//! The fused op against the naive candle composition ([`super::naive`]) evaluated in f64 on
//! the same inputs: random and extreme logits, GPT-2 and Llama-2 vocabularies, row counts that
//! are not multiples of any block or chunk size; forward and autograd backward.

use super::*;
use crate::rng;
use candle_core::{Device as CDevice, Var};
use rand::Rng;
use rand_distr::{Distribution, Normal};

const TOL: f64 = 1e-5;

fn close(got: f32, want: f64) -> bool {
    (got as f64 - want).abs() <= TOL * (1.0 + want.abs())
}

fn random_logits(n: usize, v: usize, kind: &str, seed: u64) -> Vec<f32> {
    let mut r = rng::stream(seed, kind);
    match kind {
        "normal" => {
            let d = Normal::new(0.0f32, 3.0).unwrap();
            (0..n * v).map(|_| d.sample(&mut r)).collect()
        }
        // ±1e4: one token takes all the mass, exp underflows everywhere else
        "extreme" => (0..n * v).map(|_| r.random_range(-1e4f32..1e4)).collect(),
        // a few huge logits on a flat background
        "spiky" => (0..n * v)
            .map(|_| {
                if r.random_bool(0.001) {
                    1e4
                } else {
                    r.random_range(-1.0f32..1.0)
                }
            })
            .collect(),
        "constant" => vec![7.5; n * v],
        _ => unreachable!(),
    }
}

fn targets(n: usize, v: usize, seed: u64) -> Vec<u32> {
    let mut r = rng::stream(seed, "targets");
    (0..n).map(|_| r.random_range(0..v as u32)).collect()
}

/// f64 oracle columns: (logp, entropy, kl, ref_logp, lse, ref_lse).
fn oracle(z: &[f32], w: Option<&[f32]>, t: &[u32], n: usize, v: usize) -> Vec<[f64; 6]> {
    let dev = CDevice::Cpu;
    let zt = Tensor::from_slice(z, (n, v), &dev)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let tt = Tensor::from_slice(t, n, &dev).unwrap();
    let wt = w.map(|w| {
        Tensor::from_slice(w, (n, v), &dev)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
    });
    let (lp, ent, kl) = naive(&zt, &tt, wt.as_ref()).unwrap();
    let lse = |x: &Tensor| x.exp().unwrap().sum(1).unwrap().log().unwrap();
    let v1 = |x: Tensor| x.to_vec1::<f64>().unwrap();
    // lse via max-shift to stay finite at ±1e4
    let stable_lse = |x: &Tensor| {
        let m = x.max_keepdim(1).unwrap();
        (lse(&x.broadcast_sub(&m).unwrap()) + m.squeeze(1).unwrap()).unwrap()
    };
    let (lp, ent) = (v1(lp), v1(ent));
    let lse_z = v1(stable_lse(&zt));
    let (kl, rlp, lse_w) = match &wt {
        Some(wt) => {
            let (rlp, _, _) = naive(wt, &tt, None).unwrap();
            (v1(kl.unwrap()), v1(rlp), v1(stable_lse(wt)))
        }
        None => (vec![0.0; n], vec![0.0; n], vec![0.0; n]),
    };
    (0..n)
        .map(|i| [lp[i], ent[i], kl[i], rlp[i], lse_z[i], lse_w[i]])
        .collect()
}

fn check_forward(n: usize, v: usize, kind: &str, with_ref: bool, seed: u64) {
    let z = random_logits(n, v, kind, seed);
    let w = with_ref.then(|| random_logits(n, v, kind, seed + 100));
    let t = targets(n, v, seed);
    let input = LogProbInput {
        logits: Logits::F32(&z),
        reference: w.as_deref().map(Logits::F32),
        targets: &t,
        n,
        v,
    };
    let stats = forward(&Device::Cpu, &input).unwrap();
    let want = oracle(&z, w.as_deref(), &t, n, v);
    for (i, want) in want.iter().enumerate() {
        let s = Stats::from_slice(&stats[i * NSTATS..(i + 1) * NSTATS]);
        let got = [
            s.logp,
            s.entropy,
            s.kl,
            s.ref_logp,
            s.lse() as f32,
            s.ref_lse() as f32,
        ];
        for (c, name) in ["logp", "entropy", "kl", "ref_logp", "lse", "ref_lse"]
            .iter()
            .enumerate()
        {
            assert!(
                close(got[c], want[c]),
                "{kind} n={n} v={v} ref={with_ref} row {i} {name}: fused {} vs naive {}",
                got[c],
                want[c]
            );
        }
    }
}

#[test]
fn forward_matches_naive_random_logits() {
    check_forward(37, 1000, "normal", false, 1);
    check_forward(37, 1000, "normal", true, 2);
    check_forward(3, 50_257, "normal", true, 3);
    check_forward(5, 32_000, "normal", false, 4);
}

#[test]
fn forward_matches_naive_extreme_logits() {
    check_forward(3, 50_257, "extreme", true, 5);
    check_forward(3, 32_000, "extreme", false, 6);
    check_forward(5, 32_000, "spiky", true, 7);
    // all logits equal: entropy = ln V, KL against itself = 0
    check_forward(2, 50_257, "constant", true, 8);
    // V smaller than one chunk / lane group, and V = 1
    check_forward(9, 7, "normal", true, 9);
    check_forward(4, 1, "normal", true, 10);
}

#[test]
fn bf16_logits_match_the_f32_path_on_the_same_values() {
    let (n, v) = (3, 32_000);
    let z: Vec<bf16> = random_logits(n, v, "normal", 11)
        .into_iter()
        .map(bf16::from_f32)
        .collect();
    let w: Vec<bf16> = random_logits(n, v, "normal", 12)
        .into_iter()
        .map(bf16::from_f32)
        .collect();
    let t = targets(n, v, 11);
    let zf: Vec<f32> = z.iter().map(|x| x.to_f32()).collect();
    let wf: Vec<f32> = w.iter().map(|x| x.to_f32()).collect();
    let stats = forward(
        &Device::Cpu,
        &LogProbInput {
            logits: Logits::Bf16(&z),
            reference: Some(Logits::Bf16(&w)),
            targets: &t,
            n,
            v,
        },
    )
    .unwrap();
    let want = oracle(&zf, Some(&wf), &t, n, v);
    for i in 0..n {
        let s = Stats::from_slice(&stats[i * NSTATS..(i + 1) * NSTATS]);
        assert!(
            close(s.logp, want[i][0]) && close(s.entropy, want[i][1]) && close(s.kl, want[i][2])
        );
    }
}

#[test]
fn masked_logits_contribute_nothing() {
    // -inf logits (a masked vocabulary) must give the same stats as dropping those entries
    let (n, v) = (2, 300);
    let mut z = random_logits(n, v, "normal", 13);
    let t = vec![0u32, 1];
    for row in 0..n {
        for j in 200..v {
            z[row * v + j] = f32::NEG_INFINITY;
        }
    }
    let full = forward(
        &Device::Cpu,
        &LogProbInput {
            logits: Logits::F32(&z),
            reference: None,
            targets: &t,
            n,
            v,
        },
    )
    .unwrap();
    let cut: Vec<f32> = (0..n)
        .flat_map(|r| z[r * v..r * v + 200].to_vec())
        .collect();
    let want = forward(
        &Device::Cpu,
        &LogProbInput {
            logits: Logits::F32(&cut),
            reference: None,
            targets: &t,
            n,
            v: 200,
        },
    )
    .unwrap();
    for (a, b) in full.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
    }
}

/// Autograd through the custom op against autograd through the naive composition (f64).
fn check_grad(n: usize, v: usize, kind: &str, seed: u64) {
    let dev = CDevice::Cpu;
    let z = random_logits(n, v, kind, seed);
    let w = random_logits(n, v, kind, seed + 1);
    let t = targets(n, v, seed);
    let mut r = rng::stream(seed, "coef");
    let coef: Vec<[f32; 3]> = (0..n)
        .map(|_| {
            [
                r.random_range(-1.0..1.0),
                r.random_range(-1.0..1.0),
                r.random_range(-1.0..1.0),
            ]
        })
        .collect();
    let cvec = |c: usize| -> Vec<f32> { coef.iter().map(|x| x[c]).collect() };
    let loss_of = |lp: &Tensor, ent: &Tensor, kl: &Tensor, dt: DType| -> Tensor {
        let c = |i: usize| {
            Tensor::from_vec(cvec(i), n, &dev)
                .unwrap()
                .to_dtype(dt)
                .unwrap()
        };
        ((lp * c(0)).unwrap() + (ent * c(1)).unwrap() + (kl * c(2)).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
    };
    // fused, f32
    let zv = Var::from_vec(z.clone(), (n, v), &dev).unwrap();
    let wt = Tensor::from_vec(w.clone(), (n, v), &dev).unwrap();
    let tt = Tensor::from_vec(t.clone(), n, &dev).unwrap();
    let out = token_logprobs(&Device::Cpu, zv.as_tensor(), &tt, Some(&wt)).unwrap();
    let loss = loss_of(
        &out.logp,
        &out.entropy,
        out.kl.as_ref().unwrap(),
        DType::F32,
    );
    let g = loss.backward().unwrap();
    let got = g
        .get(zv.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    // naive, f64
    let zv64 = Var::from_tensor(&zv.as_tensor().to_dtype(DType::F64).unwrap()).unwrap();
    let (lp, ent, kl) = naive(
        zv64.as_tensor(),
        &tt,
        Some(&wt.to_dtype(DType::F64).unwrap()),
    )
    .unwrap();
    let loss = loss_of(&lp, &ent, &kl.unwrap(), DType::F64);
    let g = loss.backward().unwrap();
    let want = g
        .get(zv64.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    // ∂KL/∂z_j = p_j (log p_j − log q_j − KL) is a difference of terms as large as |KL| and
    // |log q_j| (~1e4 for extreme logits); any f32 implementation stores those to ε·|term|, so
    // the tolerance includes that conditioning term (it is negligible for ordinary logits).
    let ora = oracle(&z, Some(&w), &t, n, v);
    let wmax: Vec<f64> = w
        .chunks(v)
        .map(|r| r.iter().fold(0f32, |m, x| m.max(x.abs())) as f64)
        .collect();
    for (j, (&a, &b)) in got.iter().zip(&want).enumerate() {
        let row = j / v;
        let terms = coef[row][2].abs() as f64 * (ora[row][2].abs() + wmax[row] + ora[row][5].abs());
        let tol = TOL * (1.0 + b.abs()) + 4.0 * f32::EPSILON as f64 * terms;
        assert!(
            (a as f64 - b).abs() <= tol,
            "{kind} v={v} grad[{j}] fused {a} vs naive {b}"
        );
    }
}

#[test]
fn backward_matches_autograd_of_the_naive_composition() {
    check_grad(5, 1000, "normal", 20);
    check_grad(2, 50_257, "normal", 21);
    check_grad(3, 32_000, "extreme", 22);
    check_grad(3, 32_000, "spiky", 23);
}

#[test]
fn op_keeps_leading_shape_and_grads_flow_without_reference() {
    let dev = CDevice::Cpu;
    let z = Var::from_vec(random_logits(6, 50, "normal", 30), (2, 3, 50), &dev).unwrap();
    let t = Tensor::from_vec(
        targets(6, 50, 30)
            .iter()
            .map(|&x| x as i64)
            .collect::<Vec<_>>(),
        (2, 3),
        &dev,
    )
    .unwrap();
    let out = token_logprobs(&Device::Cpu, z.as_tensor(), &t, None).unwrap();
    assert_eq!(out.logp.dims(), &[2, 3]);
    assert!(out.kl.is_none());
    let g = out.logp.sum_all().unwrap().backward().unwrap();
    let gz = g.get(z.as_tensor()).unwrap();
    // Σ_j ∂ log p(t)/∂z_j = 1 − Σ p = 0 for every row
    let rows = gz
        .sum(2)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(rows.iter().all(|s| s.abs() < 1e-5), "{rows:?}");
}

#[test]
fn bf16_backward_matches_f32_backward() {
    let dev = CDevice::Cpu;
    let (n, v) = (3, 500);
    let zf: Vec<f32> = random_logits(n, v, "normal", 40)
        .into_iter()
        .map(|x| bf16::from_f32(x).to_f32())
        .collect();
    let t = Tensor::from_vec(targets(n, v, 40), n, &dev).unwrap();
    let grad = |dt: DType| -> Vec<f32> {
        let z = Var::from_tensor(
            &Tensor::from_vec(zf.clone(), (n, v), &dev)
                .unwrap()
                .to_dtype(dt)
                .unwrap(),
        )
        .unwrap();
        let out = token_logprobs(&Device::Cpu, z.as_tensor(), &t, None).unwrap();
        let loss = (out.logp.sum_all().unwrap() + out.entropy.sum_all().unwrap()).unwrap();
        let g = loss.backward().unwrap();
        g.get(z.as_tensor())
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let (a, b) = (grad(DType::BF16), grad(DType::F32));
    for (x, y) in a.iter().zip(&b) {
        // bf16 keeps 8 bits of mantissa
        assert!((x - y).abs() <= 1e-2 * (1e-3 + y.abs()), "{x} vs {y}");
    }
}

#[test]
fn bad_inputs_are_input_errors() {
    let z = vec![0f32; 10];
    let bad = LogProbInput {
        logits: Logits::F32(&z),
        reference: None,
        targets: &[1, 5],
        n: 2,
        v: 5,
    };
    let e = forward(&Device::Cpu, &bad).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("targets[1]"), "{e}");
    let short = LogProbInput {
        logits: Logits::F32(&z[..9]),
        reference: None,
        targets: &[1, 2],
        n: 2,
        v: 5,
    };
    assert!(forward(&Device::Cpu, &short)
        .unwrap_err()
        .to_string()
        .contains("`logits`"));
    let dev = CDevice::Cpu;
    let zt = Tensor::zeros((2, 5), DType::F32, &dev).unwrap();
    let tt = Tensor::zeros(3, DType::U32, &dev).unwrap();
    assert!(token_logprobs(&Device::Cpu, &zt, &tt, None)
        .unwrap_err()
        .to_string()
        .contains("leading shape"));
}
