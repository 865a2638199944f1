//! End-to-end checks of the IMDB assets: a tiny pretraining run from a CSV built in a temporary
//! directory, and the shipped models under `models/` (scorer and GPT-2) loading and behaving.

use candle_core::{DType, Device};
use maxmin_core::run::NoProgress;
use maxmin_imdb::data::{read_reviews, Split};
use maxmin_imdb::pretrain::{pretrain, PretrainConfig};
use maxmin_imdb::sentiment::SentimentModel;
use maxmin_lm::generate::{generate, GenerateOptions, Sampling};
use maxmin_lm::lm::{CausalLm, LmInput};
use maxmin_lm::tokenizer::Tokenizer;
use maxmin_lm::Gpt2;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tiny_csv(dir: &Path) -> PathBuf {
    let mut s = String::from("text,label,source\n");
    let good = ["great", "wonderful", "fun", "moving"];
    let bad = ["boring", "awful", "dull", "silly"];
    for i in 0..200 {
        let (w, l) = if i % 2 == 0 {
            (good[i % 4], 1)
        } else {
            (bad[i % 4], 0)
        };
        s.push_str(&format!(
            "\"This movie was {w}.<br /><br />The acting was {w} too. I think it is a {w} film!\",{l},imdb\n"
        ));
    }
    s.push_str("Not an imdb row.,1,rotten_tomatoes\n");
    let p = dir.join("imdb.csv");
    std::fs::write(&p, s).unwrap();
    p
}

#[test]
fn tiny_pretrain_lowers_loss_and_writes_a_loadable_gpt2() {
    let dir = tempfile::tempdir().unwrap();
    let reviews = read_reviews(&tiny_csv(dir.path())).unwrap();
    assert_eq!(reviews.len(), 200);
    let (train, held) = (Split::Train.of(&reviews), Split::HeldOut.of(&reviews));
    assert!(!held.is_empty() && train.len() + held.len() == 200);
    let out = dir.path().join("model");
    let tok_path = out.join("tokenizer.json");
    maxmin_imdb::bpe::train_tokenizer(train.iter().map(|r| r.text.as_str()), 300, &tok_path)
        .unwrap();
    let cfg = PretrainConfig {
        layers: 1,
        hidden: 16,
        heads: 2,
        context: 16,
        steps: 40,
        batch: 8,
        lr: 1e-2,
        warmup: 5,
        min_sentence_tokens: 2,
        eval_windows: 4,
        ..Default::default()
    };
    let report = pretrain(&train, &held, &tok_path, &cfg, &out, &mut NoProgress).unwrap();
    assert!(
        report.last_loss < report.first_loss - 1.0,
        "loss {} -> {}",
        report.first_loss,
        report.last_loss
    );
    assert!(report.heldout_perplexity < 300.0, "{report:?}");
    let model = Gpt2::load(&out, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(model.config().n_layer, 1);
    assert_eq!(model.eos_token_id(), Some(0));
    let tok = Tokenizer::from_dir(&out).unwrap();
    assert_eq!(tok.vocab_size(), model.vocab_size());
    // The saved weights are the trained ones: the loaded model reproduces the held-out NLL.
    let held_units = maxmin_imdb::pretrain::sentence_units(
        &held,
        &tokenizers::Tokenizer::from_file(&tok_path).unwrap(),
        0,
        &cfg,
    )
    .unwrap();
    let (nll, _) =
        maxmin_imdb::pretrain::heldout_nll(&model, &held_units, 16, 4, &Device::Cpu).unwrap();
    assert!(
        (nll - report.heldout_nll).abs() < 1e-4,
        "{nll} vs {}",
        report.heldout_nll
    );
    let stats = maxmin_imdb::card::sample_saved(&out, &["This movie"], 3, 12, 1).unwrap();
    assert_eq!(stats.samples.len(), 3);
    assert!(stats.samples.iter().all(|s| s.starts_with("This movie")));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert!(m["report"]["heldout_perplexity"].as_f64().unwrap() > 1.0);
}

#[test]
fn shipped_sentiment_model_separates_obvious_texts() {
    let m = SentimentModel::load(&repo().join("models/sentiment-imdb")).unwrap();
    assert!(m.prob_positive("a wonderful, brilliant film") > 0.5);
    assert!(m.prob_positive("an awful, boring waste of time") < 0.5);
    assert!(m.weights.len() > 1000);
}

#[test]
fn shipped_gpt2_loads_and_ends_sentences() {
    let dir = repo().join("models/gpt2-imdb-tiny");
    let model = Gpt2::load(&dir, DType::F32, &Device::Cpu).unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let eos = model.eos_token_id().unwrap();
    assert_eq!(tok.token_id("<|endoftext|>"), Some(eos));
    let ids = tok.encode("This movie").unwrap();
    let out = model
        .forward(&LmInput::single(&ids).unwrap(), None, None)
        .unwrap();
    assert_eq!(out.logits.dims(), &[1, ids.len(), model.vocab_size()]);
    let opts = GenerateOptions {
        max_new_tokens: 48,
        sampling: Sampling::Sample {
            temperature: 1.0,
            top_k: None,
            top_p: None,
        },
        stop_at_eos: true,
        use_cache: true,
        pad_id: eos,
    };
    let mut rng = maxmin_core::rng::stream(3, "test");
    let g = generate(&model, None, &vec![ids; 16], &opts, &mut rng).unwrap();
    let stopped = g.stopped_at_eos.iter().filter(|s| **s).count();
    // The experiment needs completions that end by themselves most of the time.
    assert!(stopped >= 10, "only {stopped}/16 samples ended with EOS");
}

#[test]
fn from_tensors_rejects_missing_and_misshapen_tensors() {
    let cfg = PretrainConfig {
        layers: 1,
        hidden: 8,
        heads: 2,
        context: 4,
        ..Default::default()
    };
    let mc = cfg.model_config(300, 0);
    let params = maxmin_imdb::pretrain::init_params(&mc, 1, &Device::Cpu).unwrap();
    let mut map: std::collections::HashMap<String, candle_core::Tensor> = params
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    assert!(Gpt2::from_tensors(mc.clone(), &map, &Device::Cpu).is_ok());
    map.insert(
        "h.0.ln_1.weight".into(),
        candle_core::Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    let e = Gpt2::from_tensors(mc.clone(), &map, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("h.0.ln_1.weight") && e.contains("shape"), "{e}");
    map.remove("h.0.ln_1.weight");
    let e = Gpt2::from_tensors(mc, &map, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("h.0.ln_1.weight") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn tokenizer_and_pretraining_are_deterministic_from_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let reviews = read_reviews(&tiny_csv(dir.path())).unwrap();
    let (train, held) = (Split::Train.of(&reviews), Split::HeldOut.of(&reviews));
    let cfg = PretrainConfig {
        layers: 1,
        hidden: 16,
        heads: 2,
        context: 16,
        steps: 5,
        batch: 4,
        warmup: 2,
        min_sentence_tokens: 2,
        eval_windows: 2,
        ..Default::default()
    };
    let run = |name: &str, seed: u64| {
        let out = dir.path().join(name);
        let tok = out.join("tokenizer.json");
        maxmin_imdb::bpe::train_tokenizer(train.iter().map(|r| r.text.as_str()), 300, &tok)
            .unwrap();
        pretrain(
            &train,
            &held,
            &tok,
            &PretrainConfig {
                seed,
                ..cfg.clone()
            },
            &out,
            &mut NoProgress,
        )
        .unwrap();
        let read = |f: &str| std::fs::read(out.join(f)).unwrap();
        (read("tokenizer.json"), read("model.safetensors"))
    };
    let (a, b, c) = (run("a", 1), run("b", 1), run("c", 2));
    assert_eq!(a.0, b.0, "tokenizer.json differs between identical runs");
    assert_eq!(a.1, b.1, "weights differ between identical runs");
    assert_ne!(a.1, c.1, "the seed does not reach the weights");
}
