//! Preference data on disk: JSONL, one comparison per line,
//! `{"user": "...", "context": ..., "chosen": ..., "rejected": ..., "group": "..."?}`, where a
//! segment is an array of rows (`obs ++ action`, one per step; control) or a string (text).
//! This is the (x, y_w, y_l, h) data of docs/algorithms.md's EM section with the user id h.
//!
//! Reader and writer stream. A malformed line (bad JSON, a missing or unknown field, a wrong
//! type, ragged or empty segments, a row width other than expected) is an [`Error::Data`]
//! naming the file and line; with `skip-bad = true` it is skipped instead, counted, and the
//! count is logged and reported by the caller — never silently. Blank lines are ignored.

use crate::error::{Error, Result};
use crate::run::write_atomic;
use serde_json::{Map, Value};
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

/// One side of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    /// Control: rows `obs ++ action`, one per step, all the same width.
    Rows(Vec<Vec<f32>>),
    /// Text: a completion.
    Text(String),
}

impl Segment {
    fn to_json(&self) -> Value {
        match self {
            Segment::Rows(r) => Value::from(
                r.iter()
                    .map(|row| Value::from(row.iter().map(|&x| x as f64).collect::<Vec<_>>()))
                    .collect::<Vec<_>>(),
            ),
            Segment::Text(s) => Value::from(s.as_str()),
        }
    }

    /// The rows of a control segment.
    pub fn rows(&self) -> Option<&[Vec<f32>]> {
        match self {
            Segment::Rows(r) => Some(r),
            Segment::Text(_) => None,
        }
    }
}

/// One labelled comparison: `user` preferred `chosen` over `rejected`.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The user who labelled it.
    pub user: String,
    /// The context (prompt, environment id, or null).
    pub context: Value,
    /// The preferred segment.
    pub chosen: Segment,
    /// The other one.
    pub rejected: Segment,
    /// The user's true group, when known (simulation).
    pub group: Option<String>,
}

impl Comparison {
    /// The JSON object of one line.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("user".into(), Value::from(self.user.as_str()));
        m.insert("context".into(), self.context.clone());
        m.insert("chosen".into(), self.chosen.to_json());
        m.insert("rejected".into(), self.rejected.to_json());
        if let Some(g) = &self.group {
            m.insert("group".into(), Value::from(g.as_str()));
        }
        Value::Object(m)
    }

    /// Parse one line's JSON; `width` is the row width control segments must have, if known.
    pub fn from_json(v: Value, width: Option<usize>) -> std::result::Result<Self, String> {
        let Value::Object(mut m) = v else {
            return Err("expected a JSON object".into());
        };
        for k in m.keys() {
            if !["user", "context", "chosen", "rejected", "group"].contains(&k.as_str()) {
                return Err(format!(
                    "unknown field `{k}` (expected user, context, chosen, rejected, group)"
                ));
            }
        }
        let user = match m.remove("user") {
            Some(Value::String(s)) if !s.is_empty() => s,
            Some(Value::String(_)) => return Err("field `user` is empty".into()),
            Some(other) => {
                return Err(format!(
                    "field `user`: expected a string, found {}",
                    json_kind(&other)
                ))
            }
            None => return Err("missing field `user`".into()),
        };
        let context = m.remove("context").unwrap_or(Value::Null);
        let chosen = segment(m.remove("chosen"), "chosen", width)?;
        let rejected = segment(m.remove("rejected"), "rejected", width)?;
        match (&chosen, &rejected) {
            (Segment::Rows(a), Segment::Rows(b)) if a[0].len() != b[0].len() => {
                return Err(format!(
                    "ragged segments: `chosen` rows have {} values, `rejected` rows {}",
                    a[0].len(),
                    b[0].len()
                ))
            }
            (Segment::Rows(_), Segment::Text(_)) | (Segment::Text(_), Segment::Rows(_)) => {
                return Err("`chosen` and `rejected` must both be rows or both be text".into())
            }
            _ => {}
        }
        let group = match m.remove("group") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                return Err(format!(
                    "field `group`: expected a string, found {}",
                    json_kind(&other)
                ))
            }
        };
        Ok(Self {
            user,
            context,
            chosen,
            rejected,
            group,
        })
    }
}

/// "a string", "an array", … — what a JSON value is, for error messages.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn segment(
    v: Option<Value>,
    name: &str,
    width: Option<usize>,
) -> std::result::Result<Segment, String> {
    match v {
        None => Err(format!("missing field `{name}`")),
        Some(Value::String(s)) => Ok(Segment::Text(s)),
        Some(Value::Array(rows)) => {
            if rows.is_empty() {
                return Err(format!("field `{name}`: empty segment"));
            }
            let mut out = Vec::with_capacity(rows.len());
            for (i, r) in rows.into_iter().enumerate() {
                let Value::Array(xs) = r else {
                    return Err(format!(
                        "field `{name}` row {i}: expected an array of numbers, found {}",
                        json_kind(&r)
                    ));
                };
                let mut row = Vec::with_capacity(xs.len());
                for x in xs {
                    match x.as_f64() {
                        Some(f) => row.push(f as f32),
                        None => {
                            return Err(format!(
                                "field `{name}` row {i}: expected numbers, found {}",
                                json_kind(&x)
                            ))
                        }
                    }
                }
                let want =
                    width.unwrap_or_else(|| out.first().map_or(row.len(), |r: &Vec<f32>| r.len()));
                if row.len() != want || row.is_empty() {
                    return Err(format!(
                        "ragged segment: field `{name}` row {i} has {} values, expected {want}",
                        row.len()
                    ));
                }
                out.push(row);
            }
            Ok(Segment::Rows(out))
        }
        Some(other) => Err(format!(
            "field `{name}`: expected an array of rows or a string, found {}",
            json_kind(&other)
        )),
    }
}

/// How to read a preference file.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// Row width control segments must have (`obs_dim + act_dim`), if known.
    pub width: Option<usize>,
    /// Skip malformed lines (counted) instead of failing.
    pub skip_bad: bool,
}

/// Streaming reader: an iterator of comparisons with their 1-based line numbers.
pub struct PrefReader {
    path: PathBuf,
    lines: std::io::Lines<std::io::BufReader<std::fs::File>>,
    line: usize,
    opts: ReadOptions,
    /// Lines skipped as malformed (only with `skip_bad`).
    pub skipped: usize,
    /// The first few skipped lines with the reason.
    pub skipped_examples: Vec<String>,
}

impl PrefReader {
    /// Open `path`.
    pub fn open(path: &Path, opts: ReadOptions) -> Result<Self> {
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            lines: std::io::BufReader::new(f).lines(),
            line: 0,
            opts,
            skipped: 0,
            skipped_examples: Vec::new(),
        })
    }
}

impl Iterator for PrefReader {
    type Item = Result<(usize, Comparison)>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let text = match self.lines.next()? {
                Ok(t) => t,
                Err(e) => return Some(Err(Error::io(&self.path, e))),
            };
            self.line += 1;
            if text.trim().is_empty() {
                continue;
            }
            let parsed = serde_json::from_str::<Value>(&text)
                .map_err(|e| format!("not valid JSON: {e}"))
                .and_then(|v| Comparison::from_json(v, self.opts.width));
            match parsed {
                Ok(c) => return Some(Ok((self.line, c))),
                Err(msg) if self.opts.skip_bad => {
                    self.skipped += 1;
                    if self.skipped_examples.len() < 5 {
                        self.skipped_examples
                            .push(format!("line {}: {msg}", self.line));
                    }
                }
                Err(msg) => return Some(Err(Error::data(&self.path, Some(self.line), msg))),
            }
        }
    }
}

/// Everything a file holds, with the skipped-line count.
#[derive(Debug)]
pub struct ReadResult {
    /// The comparisons in file order.
    pub comparisons: Vec<Comparison>,
    /// Malformed lines skipped (`skip-bad = true` only).
    pub skipped: usize,
}

/// Read a whole file (streaming), logging skipped lines.
pub fn read_all(path: &Path, opts: ReadOptions) -> Result<ReadResult> {
    let mut r = PrefReader::open(path, opts)?;
    let mut comparisons = Vec::new();
    for item in r.by_ref() {
        comparisons.push(item?.1);
    }
    if r.skipped > 0 {
        tracing::warn!(
            "{}: skipped {} malformed line(s) (skip-bad = true); first: {}",
            path.display(),
            r.skipped,
            r.skipped_examples.join("; ")
        );
    }
    Ok(ReadResult {
        comparisons,
        skipped: r.skipped,
    })
}

/// Streaming writer; the file appears atomically on [`PrefWriter::finish`].
pub struct PrefWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: BufWriter<std::fs::File>,
    /// Lines written.
    pub written: usize,
}

impl PrefWriter {
    /// Start writing `path`.
    pub fn create(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let tmp = path.with_extension("jsonl.partial");
        let f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            out: BufWriter::new(f),
            written: 0,
        })
    }

    /// Append one comparison.
    pub fn write(&mut self, c: &Comparison) -> Result<()> {
        serde_json::to_writer(&mut self.out, &c.to_json())
            .map_err(|e| Error::Internal(format!("cannot serialise a comparison: {e}")))?;
        self.out
            .write_all(b"\n")
            .map_err(|e| Error::io(&self.tmp, e))?;
        self.written += 1;
        Ok(())
    }

    /// Flush, sync and move into place.
    pub fn finish(mut self) -> Result<PathBuf> {
        self.out.flush().map_err(|e| Error::io(&self.tmp, e))?;
        self.out
            .get_ref()
            .sync_all()
            .map_err(|e| Error::io(&self.tmp, e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        Ok(self.path)
    }
}

/// Write comparisons to `path` in one go (atomically).
pub fn write_all(path: &Path, comparisons: &[Comparison]) -> Result<()> {
    let mut s = String::new();
    for c in comparisons {
        s.push_str(&c.to_json().to_string());
        s.push('\n');
    }
    write_atomic(path, s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp() -> Comparison {
        Comparison {
            user: "u001".into(),
            context: Value::from("CartPole-v1"),
            chosen: Segment::Rows(vec![vec![0.5, 1.0], vec![0.25, 0.0]]),
            rejected: Segment::Rows(vec![vec![-0.5, 1.0], vec![0.0, 1.0]]),
            group: Some("left".into()),
        }
    }

    #[test]
    fn round_trip_and_errors_name_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.jsonl");
        let mut w = PrefWriter::create(&p).unwrap();
        w.write(&cmp()).unwrap();
        w.write(&cmp()).unwrap();
        w.finish().unwrap();
        let r = read_all(
            &p,
            ReadOptions {
                width: Some(2),
                skip_bad: false,
            },
        )
        .unwrap();
        assert_eq!(r.comparisons, vec![cmp(), cmp()]);
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str("{\"user\": \"u2\", \"chosen\": [[1, 2]], \"rejected\": [[1, 2, 3]]}\n");
        std::fs::write(&p, &text).unwrap();
        let e = read_all(
            &p,
            ReadOptions {
                width: None,
                skip_bad: false,
            },
        )
        .unwrap_err();
        let s = e.to_string();
        assert!(s.contains("p.jsonl:3") && s.contains("ragged"), "{s}");
        let r = read_all(
            &p,
            ReadOptions {
                width: None,
                skip_bad: true,
            },
        )
        .unwrap();
        assert_eq!((r.comparisons.len(), r.skipped), (2, 1));
    }

    #[test]
    fn each_malformation_is_named() {
        let cases = [
            ("{\"user\": ", "not valid JSON"),
            (
                "{\"chosen\": \"a\", \"rejected\": \"b\"}",
                "missing field `user`",
            ),
            (
                "{\"user\": 3, \"chosen\": \"a\", \"rejected\": \"b\"}",
                "`user`: expected a string",
            ),
            (
                "{\"user\": \"u\", \"chosen\": 1, \"rejected\": \"b\"}",
                "`chosen`: expected an array",
            ),
            (
                "{\"user\": \"u\", \"chosen\": [[1,2],[1]], \"rejected\": [[1,2]]}",
                "ragged",
            ),
            (
                "{\"user\": \"u\", \"chosen\": [], \"rejected\": [[1,2]]}",
                "empty segment",
            ),
            (
                "{\"user\": \"u\", \"chosen\": \"a\", \"rejected\": \"b\", \"x\": 1}",
                "unknown field `x`",
            ),
        ];
        for (line, want) in cases {
            let v = serde_json::from_str::<Value>(line)
                .map_err(|e| format!("not valid JSON: {e}"))
                .and_then(|v| Comparison::from_json(v, None));
            let e = v.unwrap_err();
            assert!(e.contains(want), "{line}: {e}");
        }
    }
}
