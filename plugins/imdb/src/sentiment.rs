//! The sentiment scorer of the small-scale LM experiment (docs/algorithms.md, experiment 1): the paper
//! scores completions with a DistilBERT classifier fine-tuned on IMDB; no such weights can be
//! downloaded here, so the project trains its own — L2-regularised logistic regression on binary
//! unigram + bigram presence features (lower-cased words, `!` and `?` kept as words) with a
//! vocabulary capped to the most frequent n-grams of the training split.
//!
//! Two readings of the same weights (the file format is unchanged):
//! - [`SentimentModel::logit`] / [`SentimentModel::prob_positive`]: the classifier's own logit,
//!   a **sum** over the text's distinct known n-grams. It classifies reviews, but as a reward it
//!   is not length-neutral: every further positive n-gram adds, so a longer, more gushing text
//!   scores higher, and "positive" partly means "long".
//! - [`SentimentModel::mean_evidence`] / [`SentimentModel::prob_positive_mean`]: the **mean**
//!   weight of the text's distinct known n-grams, σ(bias + mean). Repeating a text, or padding it
//!   with more of the same tone, leaves the score where it was; only the balance of positive and
//!   negative evidence moves it (scaled to a reference number of n-grams to give the score a
//!   classifier-like spread). This is how positive a text is, independent of its length — the
//!   ground truth of the experiment's sentiment group (docs/lm-rlhf.md, "Ground truths").

use crate::data::Review;
use maxmin_core::error::check;
use maxmin_core::{Error, Result};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// File name of the model inside its directory.
pub const MODEL_FILE: &str = "sentiment.json";
const FORMAT: &str = "maxmin-sentiment-logreg-v1";

/// Training options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SentimentConfig {
    /// Most frequent n-grams kept as features.
    pub max_features: usize,
    /// Minimum number of training documents an n-gram must occur in.
    pub min_df: usize,
    /// Use bigrams as well as unigrams.
    pub bigrams: bool,
    /// Passes over the training data.
    pub epochs: usize,
    /// AdaGrad learning rate.
    pub lr: f64,
    /// L2 penalty per example.
    pub l2: f64,
    /// Seed of the example order.
    pub seed: u64,
}

impl Default for SentimentConfig {
    fn default() -> Self {
        SentimentConfig {
            max_features: 30_000,
            min_df: 5,
            bigrams: true,
            epochs: 8,
            lr: 0.1,
            l2: 1e-5,
            seed: 1,
        }
    }
}

impl SentimentConfig {
    /// Reject zero sizes and negative rates, naming the option.
    pub fn validate(&self) -> Result<()> {
        check::positive_usize("max-features", self.max_features)?;
        check::positive_usize("min-df", self.min_df)?;
        check::positive_usize("epochs", self.epochs)?;
        check::positive_f64("lr", self.lr)?;
        check::non_negative_f64("l2", self.l2)
    }
}

/// Lower-cased words (letters, digits, inner apostrophes) plus `!` and `?` as words.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() || (c == '\'' && !cur.is_empty()) {
            cur.extend(c.to_lowercase());
        } else {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur).trim_end_matches('\'').to_string());
            }
            if c == '!' || c == '?' {
                out.push(c.to_string());
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur.trim_end_matches('\'').to_string());
    }
    out
}

/// The distinct n-grams of `text` (unigrams, and bigrams joined by a space when `bigrams`).
pub fn ngrams(text: &str, bigrams: bool) -> HashSet<String> {
    let w = crate::data::clean_text(text);
    let w = words(&w);
    let mut set: HashSet<String> = w.iter().cloned().collect();
    if bigrams {
        for p in w.windows(2) {
            set.insert(format!("{} {}", p[0], p[1]));
        }
    }
    set
}

/// A trained scorer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentimentModel {
    format: String,
    /// Whether bigram features are used.
    pub bigrams: bool,
    /// Intercept.
    pub bias: f64,
    /// Weight of each n-gram feature.
    pub weights: BTreeMap<String, f64>,
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

impl SentimentModel {
    /// Train on `train` (labels as given).
    pub fn train(train: &[&Review], cfg: &SentimentConfig) -> Result<Self> {
        cfg.validate()?;
        if train.is_empty() {
            return Err(Error::input("no training reviews", None));
        }
        let docs: Vec<HashSet<String>> =
            train.iter().map(|r| ngrams(&r.text, cfg.bigrams)).collect();
        let mut df: HashMap<&str, usize> = HashMap::new();
        for d in &docs {
            for g in d {
                *df.entry(g.as_str()).or_default() += 1;
            }
        }
        let mut vocab: Vec<(&str, usize)> =
            df.into_iter().filter(|(_, c)| *c >= cfg.min_df).collect();
        // Most frequent first; ties by the n-gram itself so the cut is deterministic.
        vocab.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        vocab.truncate(cfg.max_features);
        let index: HashMap<&str, usize> = vocab
            .iter()
            .enumerate()
            .map(|(i, (g, _))| (*g, i))
            .collect();
        let xs: Vec<Vec<usize>> = docs
            .iter()
            .map(|d| {
                let mut f: Vec<usize> = d
                    .iter()
                    .filter_map(|g| index.get(g.as_str()).copied())
                    .collect();
                f.sort_unstable();
                f
            })
            .collect();
        let ys: Vec<f64> = train
            .iter()
            .map(|r| if r.positive { 1.0 } else { 0.0 })
            .collect();
        let n = vocab.len();
        let (mut w, mut g2) = (vec![0.0f64; n], vec![1e-8f64; n]);
        let (mut b, mut b2) = (0.0f64, 1e-8f64);
        let mut order: Vec<usize> = (0..xs.len()).collect();
        let mut rng = maxmin_core::rng::stream(cfg.seed, "imdb/sentiment/order");
        for epoch in 0..cfg.epochs {
            order.shuffle(&mut rng);
            let mut loss = 0.0;
            for &i in &order {
                let z = b + xs[i].iter().map(|&j| w[j]).sum::<f64>();
                let p = sigmoid(z);
                loss -= if ys[i] > 0.5 {
                    p.max(1e-12).ln()
                } else {
                    (1.0 - p).max(1e-12).ln()
                };
                let g = p - ys[i];
                for &j in &xs[i] {
                    let gj = g + cfg.l2 * w[j];
                    g2[j] += gj * gj;
                    w[j] -= cfg.lr * gj / g2[j].sqrt();
                }
                b2 += g * g;
                b -= cfg.lr * g / b2.sqrt();
            }
            tracing::info!(
                epoch = epoch + 1,
                loss = loss / xs.len() as f64,
                "sentiment training"
            );
        }
        let weights = vocab
            .iter()
            .zip(&w)
            .filter(|(_, w)| **w != 0.0)
            // Six significant decimals keep the file small; logits move by < 1e-3.
            .map(|((g, _), w)| (g.to_string(), (w * 1e6).round() / 1e6))
            .collect();
        Ok(SentimentModel {
            format: FORMAT.into(),
            bigrams: cfg.bigrams,
            bias: (b * 1e6).round() / 1e6,
            weights,
        })
    }

    /// Load from a `sentiment.json` file or a directory holding one.
    pub fn load(path: &Path) -> Result<Self> {
        let file: PathBuf = if path.is_dir() {
            path.join(MODEL_FILE)
        } else {
            path.to_path_buf()
        };
        let s = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        let m: SentimentModel = serde_json::from_str(&s).map_err(|e| {
            Error::data(&file, Some(e.line()), format!("not a sentiment model: {e}"))
        })?;
        if m.format != FORMAT {
            return Err(Error::data(
                &file,
                None,
                format!("format `{}` is not `{FORMAT}`", m.format),
            ));
        }
        Ok(m)
    }

    /// Write to `path` (a `.json` file) atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let s = serde_json::to_string(self).map_err(|e| Error::Internal(e.to_string()))?;
        maxmin_core::run::write_atomic(path, s.as_bytes())
    }

    /// Log-odds that `text` is positive (sum over its distinct known n-grams, plus bias).
    pub fn logit(&self, text: &str) -> f64 {
        let mut grams: Vec<String> = ngrams(text, self.bigrams).into_iter().collect();
        // Sum in a fixed order so the same text always gives bit-identical logits.
        grams.sort_unstable();
        self.bias
            + grams
                .iter()
                .filter_map(|g| self.weights.get(g))
                .sum::<f64>()
    }

    /// Probability that `text` is positive.
    pub fn prob_positive(&self, text: &str) -> f64 {
        sigmoid(self.logit(text))
    }

    /// Mean weight of the distinct known n-grams of `text` (0 when it has none): the logit's
    /// evidence per feature, independent of how many features the text has.
    pub fn mean_evidence(&self, text: &str) -> f64 {
        self.shrunk_evidence(text, 0.0)
    }

    /// The mean weight of `text`'s distinct known n-grams as if it had `prior_ngrams` more known
    /// n-grams of weight 0: Σw / (n + prior). A text with few n-grams is pulled towards neutral
    /// (a one-word completion carries one word of evidence, not a review's worth); one with many
    /// (n ≫ prior) keeps its mean. 0 when there is nothing to average.
    pub fn shrunk_evidence(&self, text: &str, prior_ngrams: f64) -> f64 {
        self.shrunk_evidence_towards(text, prior_ngrams, 0.0)
    }

    /// As [`Self::shrunk_evidence`] with the `prior_ngrams` pseudo n-grams weighing
    /// `prior_weight` each: (Σw + prior · prior_weight) / (n + prior). A negative `prior_weight`
    /// pulls texts with little evidence below neutral — a reply that says almost nothing reads as
    /// a weak review — while a long text keeps (nearly) its mean. `prior_weight = 0` gives
    /// exactly [`Self::shrunk_evidence`].
    pub fn shrunk_evidence_towards(&self, text: &str, prior_ngrams: f64, prior_weight: f64) -> f64 {
        let (sum, n) = self.known_evidence(text);
        let prior = prior_ngrams.max(0.0);
        let denom = n as f64 + prior;
        if denom == 0.0 {
            0.0
        } else if prior_weight == 0.0 {
            sum / denom
        } else {
            (sum + prior * prior_weight) / denom
        }
    }

    /// The sum of the weights of `text`'s distinct known n-grams and how many there are, summed
    /// in a fixed (sorted) order so that the result does not depend on hashing.
    pub fn known_evidence(&self, text: &str) -> (f64, usize) {
        let mut grams: Vec<String> = ngrams(text, self.bigrams).into_iter().collect();
        grams.sort_unstable();
        grams
            .iter()
            .filter_map(|g| self.weights.get(g))
            .fold((0.0f64, 0usize), |(s, n), w| (s + w, n + 1))
    }

    /// The mean weight of `text`'s distinct known n-grams, a text with fewer than `min_ngrams`
    /// of them padded up to that many with pseudo n-grams of weight `pad_weight`:
    /// (Σw + max(0, m − n) · pad_weight) / max(n, m). Unlike [`Self::shrunk_evidence_towards`],
    /// whose pseudo n-grams weigh on every text (less on longer ones), a text with at least
    /// `min_ngrams` n-grams keeps exactly its own mean: below that length a reply reads as a
    /// weak review, above it only its words count. 0 when there is nothing to average.
    pub fn padded_evidence(&self, text: &str, min_ngrams: f64, pad_weight: f64) -> f64 {
        let (sum, n) = self.known_evidence(text);
        let m = min_ngrams.max(0.0);
        let n = n as f64;
        let denom = n.max(m);
        if denom == 0.0 {
            0.0
        } else {
            (sum + (m - n).max(0.0) * pad_weight) / denom
        }
    }

    /// σ(bias + `reference_ngrams` × [`Self::padded_evidence`]).
    pub fn prob_positive_padded(
        &self,
        text: &str,
        reference_ngrams: f64,
        min_ngrams: f64,
        pad_weight: f64,
    ) -> f64 {
        sigmoid(self.bias + reference_ngrams * self.padded_evidence(text, min_ngrams, pad_weight))
    }

    /// Length-independent positivity: σ(bias + `reference_ngrams` × [`Self::mean_evidence`]),
    /// the probability the classifier gives a text of `reference_ngrams` known n-grams that
    /// carries this text's evidence per n-gram.
    pub fn prob_positive_mean(&self, text: &str, reference_ngrams: f64) -> f64 {
        self.prob_positive_shrunk(text, reference_ngrams, 0.0, 0.0)
    }

    /// As [`Self::prob_positive_mean`] with the mean shrunk by `prior_ngrams` pseudo n-grams of
    /// weight `prior_weight` ([`Self::shrunk_evidence_towards`]; 0 = neutral).
    pub fn prob_positive_shrunk(
        &self,
        text: &str,
        reference_ngrams: f64,
        prior_ngrams: f64,
        prior_weight: f64,
    ) -> f64 {
        sigmoid(
            self.bias
                + reference_ngrams * self.shrunk_evidence_towards(text, prior_ngrams, prior_weight),
        )
    }

    /// Fraction of `reviews` classified correctly at threshold 0.5.
    pub fn accuracy(&self, reviews: &[&Review]) -> f64 {
        let ok = reviews
            .iter()
            .filter(|r| (self.logit(&r.text) > 0.0) == r.positive)
            .count();
        ok as f64 / reviews.len().max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Vec<Review> {
        let pos = [
            "great fun film",
            "loved it great acting",
            "wonderful and great",
            "fun wonderful story",
        ];
        let neg = [
            "boring awful film",
            "hated it awful acting",
            "terrible and boring",
            "awful terrible story",
        ];
        let mut v = Vec::new();
        for k in 0..5 {
            for (p, n) in pos.iter().zip(&neg) {
                for (t, positive) in [(p, true), (n, false)] {
                    v.push(Review {
                        index: v.len(),
                        text: format!("{t} {k}"),
                        positive,
                    });
                }
            }
        }
        v
    }

    #[test]
    fn words_and_ngrams() {
        assert_eq!(
            words("It's GREAT!! Not bad..."),
            vec!["it's", "great", "!", "!", "not", "bad"]
        );
        let g = ngrams("not bad<br />not", true);
        assert!(g.contains("not bad") && g.contains("bad not") && g.len() == 4);
    }

    #[test]
    fn learns_toy_set_and_round_trips() {
        let data = toy();
        let refs: Vec<&Review> = data.iter().collect();
        let cfg = SentimentConfig {
            min_df: 1,
            epochs: 20,
            ..Default::default()
        };
        let m = SentimentModel::train(&refs, &cfg).unwrap();
        assert_eq!(m.accuracy(&refs), 1.0);
        assert!(m.prob_positive("a great wonderful film") > 0.7);
        assert!(m.prob_positive("an awful boring film") < 0.3);
        // The sum is not length-normalised: more positive words, higher score.
        assert!(m.logit("great wonderful fun loved") > m.logit("great"));
        // The mean is: repeating a text, or adding unknown words, leaves it unchanged.
        let once = m.prob_positive_mean("great film", 8.0);
        let twice = m.prob_positive_mean("great film. great film! xyzzy plugh", 8.0);
        assert!((once - twice).abs() < 1e-12, "{once} vs {twice}");
        assert!(m.prob_positive_mean("great film", 8.0) > m.prob_positive_mean("awful film", 8.0));
        assert_eq!(m.mean_evidence("no known words here qq"), 0.0);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(MODEL_FILE);
        m.save(&p).unwrap();
        let l = SentimentModel::load(dir.path()).unwrap();
        for t in ["great fun", "awful", "unknown words only", ""] {
            assert_eq!(l.logit(t).to_bits(), m.logit(t).to_bits(), "{t}");
        }
        std::fs::write(&p, "{\"x\": 1}").unwrap();
        let e = SentimentModel::load(&p).unwrap_err().to_string();
        assert!(e.contains("sentiment.json"), "{e}");
    }
}
