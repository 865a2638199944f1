//! Ground-truth group rewards for text (`[[population.groups]] reward = { type = … }`): what a
//! simulated group of users wants from a completion. docs/algorithms.md, experiment 1: the majority wants
//! positive sentiment (the paper scored it with a DistilBERT IMDB classifier; we use the
//! project's own IMDB scorer, see `maxmin-imdb` and docs/imdb.md), the minority wants concise
//! answers (1 − normalised length).
//!
//! Each ground truth means one thing: `sentiment` scores how positive a completion is
//! independent of its length (by default the scorer's mean evidence per n-gram, not its summed
//! logit, which grows with the number of positive words), and `conciseness` scores only length.
//! docs/lm-rlhf.md ("Ground truths") gives the reasoning and the measured correlation.

use maxmin_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use std::path::PathBuf;

/// One completion as the scorers see it.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    /// The prompt text.
    pub prompt: &'a str,
    /// The completion text (special tokens removed).
    pub completion: &'a str,
    /// Completion length in tokens, not counting a final EOS.
    pub tokens: usize,
    /// The generation budget (`[generation] max-new-tokens`).
    pub max_tokens: usize,
}

/// A ground-truth scorer.
pub trait TextReward: Send + Sync + Debug {
    /// The score of one completion (higher is better for the group).
    fn score(&self, s: &Sample<'_>) -> f64;
}

/// Config of a ground-truth text reward.
#[typetag::serde(tag = "type")]
pub trait TextRewardConfig: Debug + Send + Sync {
    /// Check values; keys relative to the reward's table.
    fn validate(&self) -> Result<()> {
        Ok(())
    }
    /// Load / build the scorer.
    fn build(&self) -> Result<Box<dyn TextReward>>;
}

/// `type = "conciseness"`: 1 − tokens / max-new-tokens (1 for an immediate EOS, 0 for a
/// completion cut at the budget).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ConcisenessConfig {}

maxmin_core::register_plugin!(
    TextRewardConfig,
    "conciseness",
    "text group reward: 1 − completion tokens / max-new-tokens"
);

#[derive(Debug)]
struct Conciseness;

impl TextReward for Conciseness {
    fn score(&self, s: &Sample<'_>) -> f64 {
        1.0 - (s.tokens.min(s.max_tokens) as f64 / s.max_tokens.max(1) as f64)
    }
}

#[typetag::serde(name = "conciseness")]
impl TextRewardConfig for ConcisenessConfig {
    fn build(&self) -> Result<Box<dyn TextReward>> {
        Ok(Box::new(Conciseness))
    }
}

/// How the sentiment scorer's n-gram weights become a score (`evidence = …`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Evidence {
    /// σ(bias + mean weight of the distinct known n-grams): length-independent (default).
    #[default]
    Mean,
    /// σ(bias + sum of the weights): the classifier's own probability; grows with the number of
    /// positive n-grams, so it also rewards length.
    Sum,
}

/// `type = "sentiment"`: P(positive) of the completion under the project's IMDB sentiment
/// scorer (`maxmin lm train-sentiment`), standing in for the paper's DistilBERT classifier.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SentimentConfig {
    /// The scorer's directory (holding `sentiment.json`) or the file itself.
    #[serde(default = "d_sentiment")]
    pub model: PathBuf,
    /// Score prompt + completion instead of the completion alone.
    #[serde(default)]
    pub include_prompt: bool,
    /// `"mean"` (length-independent, default) or `"sum"` (the classifier's logit).
    #[serde(default)]
    pub evidence: Evidence,
    /// With `evidence = "mean"`: the score is σ(bias + reference-ngrams × mean evidence), the
    /// classifier's probability for a text of this many known n-grams carrying this text's
    /// evidence per n-gram. It sets the score's spread (so the users' Bradley–Terry temperature
    /// means the same for both groups), never its dependence on length.
    #[serde(default = "d_reference_ngrams")]
    pub reference_ngrams: f64,
    /// With `evidence = "mean"`: average as if the text had this many more known n-grams of
    /// weight 0 (Σw / (n + prior-ngrams)), so that a completion of one or two words carries that
    /// much evidence and no more, while a long one keeps its mean. 0 (default) is the plain
    /// mean, under which a lone `!` (a positive n-gram in IMDB) scores 0.98 — the completion PPO
    /// converged to in the run recorded in docs/lm-rlhf.md, "Ground truths".
    #[serde(default)]
    pub prior_ngrams: f64,
    /// With `evidence = "mean"` and `prior-ngrams > 0`: the weight each of those pseudo n-grams
    /// carries (0, the default, is neutral). Negative: a reply that says little is a weak review,
    /// so the majority's score also asks for substance, as a classifier's confidence does (it
    /// grows with the evidence a text offers). This is a length term inside the sentiment truth,
    /// and it is what sets the two groups against each other — see docs/lm-rlhf.md, "Ground
    /// truths", for the argument and the measured correlation.
    #[serde(default)]
    pub prior_weight: f64,
    /// With `evidence = "mean"` (instead of `prior-ngrams`): a completion with fewer distinct
    /// known n-grams than this is padded up to this many with pseudo n-grams of weight
    /// `prior-weight`; a longer one keeps exactly the mean of its own n-grams. The majority's
    /// length term then asks for a minimum of substance and stops there, instead of pulling
    /// every completion towards "longer" (docs/lm-rlhf.md, "Ground truths"). 0 (default): off.
    #[serde(default)]
    pub min_ngrams: f64,
}

fn d_reference_ngrams() -> f64 {
    16.0
}

fn d_sentiment() -> PathBuf {
    PathBuf::from("models/sentiment-imdb")
}

maxmin_core::register_plugin!(
    TextRewardConfig,
    "sentiment",
    "text group reward: P(positive) under the project's IMDB sentiment scorer, per n-gram (length-independent) by default"
);

#[derive(Debug)]
struct Sentiment {
    model: maxmin_imdb::sentiment::SentimentModel,
    include_prompt: bool,
    evidence: Evidence,
    reference_ngrams: f64,
    prior_ngrams: f64,
    prior_weight: f64,
    min_ngrams: f64,
}

impl Sentiment {
    fn text_score(&self, text: &str) -> f64 {
        match self.evidence {
            Evidence::Mean if self.min_ngrams > 0.0 => self.model.prob_positive_padded(
                text,
                self.reference_ngrams,
                self.min_ngrams,
                self.prior_weight,
            ),
            Evidence::Mean => self.model.prob_positive_shrunk(
                text,
                self.reference_ngrams,
                self.prior_ngrams,
                self.prior_weight,
            ),
            Evidence::Sum => self.model.prob_positive(text),
        }
    }
}

impl TextReward for Sentiment {
    fn score(&self, s: &Sample<'_>) -> f64 {
        if self.include_prompt {
            self.text_score(&format!("{}{}", s.prompt, s.completion))
        } else {
            self.text_score(s.completion)
        }
    }
}

#[typetag::serde(name = "sentiment")]
impl TextRewardConfig for SentimentConfig {
    fn validate(&self) -> Result<()> {
        if self.model.as_os_str().is_empty() {
            return Err(Error::config("model", "expected the scorer's directory"));
        }
        if !(self.reference_ngrams.is_finite() && self.reference_ngrams > 0.0) {
            return Err(Error::config(
                "reference-ngrams",
                format!("expected a number > 0, found {}", self.reference_ngrams),
            ));
        }
        if !(self.prior_ngrams.is_finite() && self.prior_ngrams >= 0.0) {
            return Err(Error::config(
                "prior-ngrams",
                format!("expected a number ≥ 0, found {}", self.prior_ngrams),
            ));
        }
        if !(self.prior_weight.is_finite() && self.prior_weight.abs() <= 1.0) {
            return Err(Error::config(
                "prior-weight",
                format!(
                    "expected a weight per pseudo n-gram in [-1, 1] (the scorer's n-gram weights are of that size), found {}",
                    self.prior_weight
                ),
            ));
        }
        if !(self.min_ngrams.is_finite() && self.min_ngrams >= 0.0) {
            return Err(Error::config(
                "min-ngrams",
                format!("expected a number ≥ 0, found {}", self.min_ngrams),
            ));
        }
        if self.min_ngrams > 0.0 && (self.evidence != Evidence::Mean || self.prior_ngrams > 0.0) {
            return Err(Error::config(
                "min-ngrams",
                "expected evidence = \"mean\" and no prior-ngrams (both add pseudo n-grams; pick one)",
            ));
        }
        if self.prior_weight != 0.0
            && (self.evidence != Evidence::Mean
                || (self.prior_ngrams == 0.0 && self.min_ngrams == 0.0))
        {
            return Err(Error::config(
                "prior-weight",
                "only means something with evidence = \"mean\" and prior-ngrams > 0 or min-ngrams > 0",
            ));
        }
        Ok(())
    }

    fn build(&self) -> Result<Box<dyn TextReward>> {
        let path = if self.model.is_dir() {
            self.model.join("sentiment.json")
        } else {
            self.model.clone()
        };
        if !path.exists() {
            return Err(Error::input(
                format!("sentiment scorer {} not found", path.display()),
                Some("train it with `maxmin lm train-sentiment` (docs/imdb.md)".into()),
            ));
        }
        Ok(Box::new(Sentiment {
            model: maxmin_imdb::sentiment::SentimentModel::load(&path)?,
            include_prompt: self.include_prompt,
            evidence: self.evidence,
            reference_ngrams: self.reference_ngrams,
            prior_ngrams: self.prior_ngrams,
            prior_weight: self.prior_weight,
            min_ngrams: self.min_ngrams,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped scorer's config with the given evidence and shrinkage.
    fn shipped(evidence: Evidence, prior_ngrams: f64, prior_weight: f64) -> SentimentConfig {
        SentimentConfig {
            model: std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../models/sentiment-imdb"),
            include_prompt: false,
            evidence,
            reference_ngrams: 16.0,
            prior_ngrams,
            prior_weight,
            min_ngrams: 0.0,
        }
    }

    /// A completion with no prompt.
    fn text(completion: &str) -> Sample<'_> {
        Sample {
            prompt: "",
            completion,
            tokens: 1,
            max_tokens: 32,
        }
    }

    #[test]
    fn conciseness_is_one_minus_normalised_length() {
        let r = ConcisenessConfig {}.build().unwrap();
        let s = |tokens| Sample {
            prompt: "p",
            completion: "c",
            tokens,
            max_tokens: 32,
        };
        assert_eq!(r.score(&s(0)), 1.0);
        assert_eq!(r.score(&s(8)), 0.75);
        assert_eq!(r.score(&s(32)), 0.0);
        assert_eq!(r.score(&s(40)), 0.0);
    }

    #[test]
    fn missing_scorer_is_a_clear_error() {
        let c = SentimentConfig {
            model: "no/such/dir".into(),
            include_prompt: false,
            evidence: Evidence::Mean,
            reference_ngrams: 16.0,
            prior_ngrams: 0.0,
            prior_weight: 0.0,
            min_ngrams: 0.0,
        };
        let msg = c.build().unwrap_err().to_string();
        assert!(
            msg.contains("no/such/dir") && msg.contains("train-sentiment"),
            "{msg}"
        );
    }

    /// The shipped scorer still loads; the default (mean) score does not grow when a text is
    /// repeated, while the classifier's sum does.
    #[test]
    fn shipped_scorer_mean_evidence_is_length_independent() {
        let mk = |evidence| shipped(evidence, 0.0, 0.0).build().unwrap();
        let (mean, sum) = (mk(Evidence::Mean), mk(Evidence::Sum));
        let s = text;
        let one = "a wonderful film, beautifully acted";
        let three = "a wonderful film, beautifully acted. a wonderful film, beautifully acted. \
                     a wonderful film, beautifully acted";
        assert!(mean.score(&s(one)) > 0.5);
        assert!((mean.score(&s(one)) - mean.score(&s(three))).abs() < 1e-3);
        // The sum grows with every further distinct positive n-gram; repetition and unknown
        // words move neither.
        let more = "a wonderful film, beautifully acted, brilliant, moving and superb";
        assert!(sum.score(&s(more)) > sum.score(&s(one)) + 0.01);
        let padded = "a wonderful film, beautifully acted qqzx vvwk";
        assert!((mean.score(&s(one)) - mean.score(&s(padded))).abs() < 1e-9);
        assert!(mean.score(&s(one)) > mean.score(&s("a dull film, badly acted")));
        let parsed: SentimentConfig = toml::from_str("evidence = \"sum\"").unwrap();
        assert_eq!(parsed.evidence, Evidence::Sum);
        assert!(toml::from_str::<SentimentConfig>("evidence = \"max\"").is_err());
        let bad: SentimentConfig = toml::from_str("reference-ngrams = 0").unwrap();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("reference-ngrams"));
    }

    /// `prior-ngrams`: a lone positive token no longer scores like a review (it did: `!` → 0.98),
    /// a long text keeps about its mean, and a negative token stays below neutral.
    #[test]
    fn prior_ngrams_shrink_short_texts_towards_neutral() {
        let mk = |prior_ngrams| shipped(Evidence::Mean, prior_ngrams, 0.0).build().unwrap();
        let (plain, shrunk) = (mk(0.0), mk(16.0));
        let s = text;
        let bang = s("!");
        assert!(plain.score(&bang) > 0.9, "{}", plain.score(&bang));
        assert!(shrunk.score(&bang) < 0.75, "{}", shrunk.score(&bang));
        let long = s(
            "a wonderful film, beautifully acted, with a moving story and a superb cast; \
                      the best performance of the year and a joy to watch from start to end",
        );
        assert!(shrunk.score(&long) > shrunk.score(&bang));
        assert!(shrunk.score(&long) > 0.8, "{}", shrunk.score(&long));
        assert!(shrunk.score(&s("awful")) < 0.5);
        let bad: Result<SentimentConfig> =
            maxmin_core::config::from_str_at("prior-ngrams = -1", std::path::Path::new("x.toml"));
        assert!(bad
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string()
            .contains("prior-ngrams"));
    }

    /// `prior-weight`: a negative weight pulls texts with little evidence below neutral (the
    /// short end loses more than the long end), and values the
    /// option cannot mean are refused by key.
    #[test]
    fn prior_weight_asks_for_substance() {
        let mk = |prior_weight| shipped(Evidence::Mean, 16.0, prior_weight);
        let (neutral, weak) = (mk(0.0).build().unwrap(), mk(-0.05).build().unwrap());
        let s = text;
        let short = s(" great!");
        let long = s(" is a great movie, the acting is wonderful and the story is beautiful.");
        let drop = |t: &Sample<'_>| neutral.score(t) - weak.score(t);
        assert!(drop(&short) > 0.05, "{}", drop(&short));
        assert!(
            drop(&short) > drop(&long) + 0.02,
            "{} vs {}",
            drop(&short),
            drop(&long)
        );
        assert!(weak.score(&long) > weak.score(&short));
        assert!(weak.score(&s("")) < 0.5);
        for (bad, want) in [(mk(2.0), "[-1, 1]"), (mk(f64::NAN), "[-1, 1]")] {
            let e = bad.validate().unwrap_err().to_string();
            assert!(e.contains("prior-weight") && e.contains(want), "{e}");
        }
        let no_prior = SentimentConfig {
            prior_ngrams: 0.0,
            ..mk(-0.05)
        };
        assert!(no_prior
            .validate()
            .unwrap_err()
            .to_string()
            .contains("prior-weight"));
    }

    /// `min-ngrams`: below m known n-grams the pad weight pulls the score down, at or above m
    /// the score is the plain mean of the text's own n-grams (length-independent), and the
    /// option refuses to be combined with `prior-ngrams`.
    #[test]
    fn padded_evidence_asks_for_substance_and_then_only_words() {
        let plain = shipped(Evidence::Mean, 0.0, 0.0).build().unwrap();
        let padded_cfg = SentimentConfig {
            min_ngrams: 12.0,
            ..shipped(Evidence::Mean, 0.0, -0.1)
        };
        padded_cfg.validate().unwrap();
        let padded = padded_cfg.build().unwrap();
        let s = |t| text(t);
        // Long enough: identical to the plain mean, at any length above the floor.
        let long = "this movie was a wonderful surprise with great acting and a lovely story that i enjoyed";
        let twice = format!("{long} and {long}");
        assert_eq!(padded.score(&s(long)), plain.score(&s(long)));
        assert_eq!(padded.score(&s(&twice)), plain.score(&s(&twice)));
        // Short: below the plain mean, and below neutral for a lone positive word.
        assert!(padded.score(&s("great")) < plain.score(&s("great")));
        assert!(padded.score(&s("!")) < 0.5, "{}", padded.score(&s("!")));
        assert!(padded.score(&s("")) < 0.5);
        // Monotone in the pad weight for short texts only.
        let harsher = SentimentConfig {
            min_ngrams: 12.0,
            ..shipped(Evidence::Mean, 0.0, -0.3)
        }
        .build()
        .unwrap();
        assert!(harsher.score(&s("great")) < padded.score(&s("great")));
        assert_eq!(harsher.score(&s(long)), padded.score(&s(long)));
        for (bad, want) in [
            (
                SentimentConfig {
                    min_ngrams: 12.0,
                    ..shipped(Evidence::Mean, 16.0, -0.1)
                },
                "pick one",
            ),
            (
                SentimentConfig {
                    min_ngrams: -1.0,
                    ..shipped(Evidence::Mean, 0.0, 0.0)
                },
                "≥ 0",
            ),
            (
                SentimentConfig {
                    min_ngrams: 12.0,
                    ..shipped(Evidence::Sum, 0.0, 0.0)
                },
                "evidence",
            ),
        ] {
            let e = bad.validate().unwrap_err().to_string();
            assert!(e.contains("min-ngrams") && e.contains(want), "{e}");
        }
    }
}
