//! `tokenizer.json` (the Hugging Face `tokenizers` format) through the `tokenizers` crate, built
//! with the pure-Rust `fancy-regex` engine (GPT-2's byte-level pre-tokenizer pattern needs
//! look-ahead, which the plain `regex` crate lacks).

use maxmin_core::{Error, Result};
use std::path::{Path, PathBuf};

/// A loaded tokenizer.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .finish()
    }
}

impl Tokenizer {
    /// Load a `tokenizer.json` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "tokenizer.json not found"),
            ));
        }
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::data(path, None, format!("cannot read tokenizer: {e}")))?;
        Ok(Tokenizer {
            inner,
            path: path.to_path_buf(),
        })
    }

    /// Load `dir/tokenizer.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::from_file(&dir.join("tokenizer.json"))
    }

    /// Token ids of `text` (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::data(&self.path, None, format!("cannot encode text: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids` (special tokens skipped).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| Error::data(&self.path, None, format!("cannot decode ids: {e}")))
    }

    /// Id of a token string, if in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_tokenizer_round_trips() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/lm/tokenizer.json");
        let t = Tokenizer::from_file(&p).unwrap();
        let text = "the movie was great, the story was fun!";
        let ids = t.encode(text).unwrap();
        assert!(!ids.is_empty() && ids.len() < text.len(), "{ids:?}");
        assert_eq!(t.decode(&ids).unwrap(), text);
        assert_eq!(t.token_id("<|endoftext|>"), Some(0));
        assert!(Tokenizer::from_file(Path::new("/nonexistent/tokenizer.json")).is_err());
    }
}
