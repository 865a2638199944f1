//! Training a byte-level BPE tokenizer (GPT-2's scheme: byte-level pre-tokenizer without a prefix
//! space, byte-level decoder) on IMDB text with the `tokenizers` crate's `BpeTrainer`, saved as
//! a Hugging Face `tokenizer.json` that `maxmin_lm::tokenizer::Tokenizer` loads.
//! The end-of-text token `<|endoftext|>` is id 0 (special tokens come first in the vocabulary).

use maxmin_core::{Error, Result};
use std::path::Path;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::AddedToken;

/// The end-of-text token (separates training sentences; the LM's EOS).
pub const EOS_TOKEN: &str = "<|endoftext|>";

/// Train a byte-level BPE with `vocab_size` entries (special token included) on `texts` and
/// write it to `out` (atomically). Deterministic for the same texts in the same order.
pub fn train_tokenizer<'a>(
    texts: impl Iterator<Item = &'a str> + Send,
    vocab_size: usize,
    out: &Path,
) -> Result<()> {
    // 256 byte symbols + the special token are the minimum.
    if vocab_size < 258 {
        return Err(Error::input(
            format!("--vocab-size {vocab_size} is too small: byte-level BPE needs at least 258"),
            None,
        ));
    }
    let fail = |e: Box<dyn std::error::Error + Send + Sync>| {
        Error::Internal(format!("tokenizer training failed: {e}"))
    };
    let byte_level = ByteLevel::default().add_prefix_space(false);
    let mut tok = tokenizers::Tokenizer::new(BPE::default());
    tok.with_pre_tokenizer(Some(byte_level));
    tok.with_decoder(Some(ByteLevel::default()));
    tok.with_post_processor(Some(ByteLevel::default().add_prefix_space(false)));
    let trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from(EOS_TOKEN, true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut trainer = TrainerWrapper::BpeTrainer(trainer);
    tok.train(&mut trainer, texts).map_err(fail)?;
    let json = tok.to_string(false).map_err(fail)?;
    maxmin_core::run::write_atomic(out, json.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use maxmin_lm::tokenizer::Tokenizer;

    #[test]
    fn trained_tokenizer_loads_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        let texts = [
            "This movie was great, the acting was great.",
            "This movie was bad. The plot was bad!",
            "I loved this film and the music.",
        ];
        let corpus: Vec<&str> = texts.iter().cycle().take(30).copied().collect();
        train_tokenizer(corpus.into_iter(), 300, &p).unwrap();
        let t = Tokenizer::from_file(&p).unwrap();
        assert_eq!(t.token_id(EOS_TOKEN), Some(0));
        assert!(
            t.vocab_size() > 258 && t.vocab_size() <= 300,
            "{}",
            t.vocab_size()
        );
        let s = "This movie was great, unseen words: zebra 123 é!";
        let ids = t.encode(s).unwrap();
        assert!(!ids.contains(&0));
        assert_eq!(t.decode(&ids).unwrap(), s);
        // Merges happened: a frequent phrase takes fewer tokens than bytes.
        assert!(t.encode("This movie was").unwrap().len() < 8);
        assert!(train_tokenizer(texts.iter().copied(), 10, &p).is_err());
    }
}
