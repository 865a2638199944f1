//! Broken checkpoints and configs are clear errors (naming the file, tensor, shapes or field),
//! never panics.

use candle_core::{DType, Device, Tensor};
use maxmin_lm::Gpt2;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/lm/gpt2-prefix")
}

/// A temp copy of the GPT-2 fixture with its tensors passed through `edit`.
fn broken(edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let mut t =
        candle_core::safetensors::load(fixture().join("model.safetensors"), &Device::Cpu).unwrap();
    edit(&mut t);
    candle_core::safetensors::save(&t, dir.path().join("model.safetensors")).unwrap();
    dir
}

fn load_err(dir: &Path) -> maxmin_core::Error {
    Gpt2::load(dir, DType::F32, &Device::Cpu).expect_err("loading a broken checkpoint must fail")
}

#[test]
fn missing_tensor_is_named() {
    let d = broken(|t| {
        t.remove("transformer.h.1.mlp.c_fc.bias");
    });
    let e = load_err(d.path());
    assert_eq!(e.exit_code(), 2);
    assert!(
        e.to_string()
            .contains("missing tensor `transformer.h.1.mlp.c_fc.bias`"),
        "{e}"
    );
}

#[test]
fn wrong_shape_names_tensor_expected_and_found() {
    let d = broken(|t| {
        t.insert(
            "transformer.h.0.attn.c_attn.weight".into(),
            Tensor::zeros((96, 32), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let e = load_err(d.path()).to_string();
    assert!(
        e.contains("transformer.h.0.attn.c_attn.weight")
            && e.contains("expected [32, 96]")
            && e.contains("found [96, 32]"),
        "{e}"
    );
}

#[test]
fn non_finite_weights_are_refused_with_the_tensor_name() {
    for (dtype, bad) in [
        (DType::F32, f32::NAN),
        (DType::F16, f32::INFINITY),
        (DType::BF16, f32::NEG_INFINITY),
    ] {
        let d = broken(|t| {
            let name = "transformer.h.1.attn.c_proj.weight";
            let mut v: Vec<f32> = t[name].flatten_all().unwrap().to_vec1().unwrap();
            v[37] = bad;
            let w = Tensor::from_vec(v, (32, 32), &Device::Cpu).unwrap();
            t.insert(name.into(), w.to_dtype(dtype).unwrap());
        });
        let e = load_err(d.path());
        assert_eq!(e.exit_code(), 2);
        let e = e.to_string();
        assert!(
            e.contains("transformer.h.1.attn.c_proj.weight")
                && e.contains("non-finite")
                && e.contains("index 37"),
            "{dtype:?}: {e}"
        );
    }
    // A finite checkpoint in each dtype still loads.
    for dtype in [DType::F16, DType::BF16] {
        let d = broken(|t| {
            for v in t.values_mut() {
                *v = v.to_dtype(dtype).unwrap();
            }
        });
        Gpt2::load(d.path(), DType::F32, &Device::Cpu).unwrap();
    }
}

#[test]
fn unsupported_dtype_is_named() {
    let d = broken(|t| {
        t.insert(
            "transformer.ln_f.bias".into(),
            Tensor::zeros(32, DType::I64, &Device::Cpu).unwrap(),
        );
    });
    let e = load_err(d.path()).to_string();
    assert!(
        e.contains("transformer.ln_f.bias") && e.contains("unsupported dtype") && e.contains("I64"),
        "{e}"
    );
}

#[test]
fn truncated_and_corrupt_files_are_data_errors() {
    let bytes = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("header cut", bytes[..20].to_vec()),
        ("empty", Vec::new()),
        ("garbage header", {
            let mut b = bytes.clone();
            for x in b[8..40].iter_mut() {
                *x = b'#';
            }
            b
        }),
        ("huge header length", {
            let mut b = bytes.clone();
            b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
            b
        }),
    ];
    for (what, content) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            fixture().join("config.json"),
            dir.path().join("config.json"),
        )
        .unwrap();
        std::fs::write(dir.path().join("model.safetensors"), content).unwrap();
        let e = load_err(dir.path());
        assert_eq!(e.exit_code(), 2, "{what}: {e}");
        let s = e.to_string();
        assert!(
            s.contains("model.safetensors") && s.contains("not a valid safetensors"),
            "{what}: {s}"
        );
    }
}

#[test]
fn config_missing_field_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture().join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("config.json")).unwrap())
            .unwrap();
    cfg.as_object_mut().unwrap().remove("n_embd");
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let e = load_err(dir.path());
    let s = e.to_string();
    assert!(
        s.contains("config.json") && s.contains("missing field `n_embd`"),
        "{s}"
    );
    assert_eq!(e.exit_code(), 2);
}

#[test]
fn no_weights_and_out_of_range_ids_are_input_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let e = load_err(dir.path()).to_string();
    assert!(e.contains("no model.safetensors"), "{e}");
    use maxmin_lm::lm::{CausalLm, LmInput};
    let m = Gpt2::load(&fixture(), DType::F32, &Device::Cpu).unwrap();
    let e = m
        .forward(&LmInput::single(&[1, 100_000]).unwrap(), None, None)
        .unwrap_err();
    assert!(
        e.to_string().contains("100000") && e.exit_code() == 2,
        "{e}"
    );
}
