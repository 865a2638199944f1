//! Prompts of the small-scale LM experiment (docs/algorithms.md, experiment 1: "the first 2–8 tokens of
//! IMDB reviews"): from held-out reviews, the first n tokens (n uniform in `[min, max]`) under
//! the experiment's tokenizer, decoded back to text.

use crate::data::Review;
use maxmin_core::{Error, Result};
use maxmin_lm::tokenizer::Tokenizer;
use rand::seq::SliceRandom;
use rand::Rng as _;

/// `n` prompts from `reviews` (chosen by a seeded shuffle, each review used once).
pub fn extract_prompts(
    reviews: &[&Review],
    tok: &Tokenizer,
    n: usize,
    min_tokens: usize,
    max_tokens: usize,
    seed: u64,
) -> Result<Vec<String>> {
    if min_tokens == 0 || min_tokens > max_tokens {
        return Err(Error::input(
            format!("need 1 ≤ --min-tokens ≤ --max-tokens, got {min_tokens} and {max_tokens}"),
            None,
        ));
    }
    if n > reviews.len() {
        return Err(Error::input(
            format!(
                "asked for {n} prompts but only {} reviews are available",
                reviews.len()
            ),
            Some("pass a smaller --n".into()),
        ));
    }
    let mut rng = maxmin_core::rng::stream(seed, "imdb/prompts");
    let mut order: Vec<usize> = (0..reviews.len()).collect();
    order.shuffle(&mut rng);
    let mut out = Vec::with_capacity(n);
    for &i in &order {
        if out.len() == n {
            break;
        }
        let k = rng.random_range(min_tokens..=max_tokens);
        // The opening is enough; encoding a whole review is wasted work.
        let head: String = reviews[i].text.chars().take(40 * max_tokens).collect();
        let ids = tok.encode(&head)?;
        if ids.len() < k {
            continue;
        }
        let text = tok.decode(&ids[..k])?;
        // A cut inside a multi-byte character decodes to U+FFFD: skip such openings.
        if text.contains('\u{fffd}') || text.trim().is_empty() {
            continue;
        }
        out.push(text);
    }
    if out.len() < n {
        return Err(Error::input(
            format!("only {} of {n} reviews gave a usable prompt", out.len()),
            None,
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_respect_token_counts() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        let texts: Vec<String> = (0..40)
            .map(|i| format!("This movie number {i} was a great film with a fine cast and a plot."))
            .collect();
        crate::bpe::train_tokenizer(texts.iter().map(|s| s.as_str()), 300, &p).unwrap();
        let tok = Tokenizer::from_file(&p).unwrap();
        let reviews: Vec<Review> = texts
            .iter()
            .enumerate()
            .map(|(index, t)| Review {
                index,
                text: t.clone(),
                positive: true,
            })
            .collect();
        let refs: Vec<&Review> = reviews.iter().collect();
        let ps = extract_prompts(&refs, &tok, 30, 2, 5, 1).unwrap();
        assert_eq!(ps.len(), 30);
        let mut lens = std::collections::BTreeSet::new();
        for p in &ps {
            let n = tok.encode(p).unwrap().len();
            assert!((2..=5).contains(&n), "{p:?} has {n} tokens");
            assert!(texts.iter().any(|t| t.starts_with(p.as_str())), "{p:?}");
            lens.insert(n);
        }
        assert!(lens.len() >= 3, "{lens:?}");
        assert_eq!(ps, extract_prompts(&refs, &tok, 30, 2, 5, 1).unwrap());
        assert!(extract_prompts(&refs, &tok, 41, 2, 5, 1).is_err());
        assert!(extract_prompts(&refs, &tok, 3, 5, 2, 1).is_err());
    }
}
