//! The text environment's contexts: prompts read from a file. One episode of the text environment
//! is one completion of one prompt (docs/algorithms.md, "Experiments to reproduce" item 1: prompts are the
//! first 2–8 tokens of IMDB reviews).
//!
//! Formats, by extension: `.jsonl` (one object per line, the prompt under `field`, default
//! `prompt`; a bare JSON string per line is accepted too), `.csv` (a header row naming `field`),
//! anything else is plain text with one prompt per line. Blank lines are skipped; a malformed line
//! is an error naming the file and line; a file without any prompt is an error.

use maxmin_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `[prompts]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PromptsConfig {
    /// The prompt file (relative paths are relative to the working directory).
    pub path: PathBuf,
    /// JSONL key / CSV column holding the prompt.
    #[serde(default = "d_field")]
    pub field: String,
    /// Use at most this many prompts (from the top of the file); absent = all.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Prompts held out from training (taken from the end of the used prompts) on which every
    /// policy is evaluated.
    #[serde(default = "d_eval")]
    pub eval: usize,
}

fn d_field() -> String {
    "prompt".into()
}
fn d_eval() -> usize {
    100
}

impl PromptsConfig {
    /// Check values; keys relative to `[prompts]`.
    pub fn validate(&self) -> Result<()> {
        if self.path.as_os_str().is_empty() {
            return Err(Error::config("path", "expected a prompt file, found \"\""));
        }
        if self.field.is_empty() {
            return Err(Error::config("field", "expected a non-empty field name"));
        }
        if self.limit == Some(0) {
            return Err(Error::config("limit", "expected ≥ 1 prompts"));
        }
        if self.eval == 0 {
            return Err(Error::config("eval", "expected ≥ 1 evaluation prompts"));
        }
        Ok(())
    }

    /// Read the prompts, then split them into (training, evaluation).
    pub fn load_split(&self) -> Result<(Vec<String>, Vec<String>)> {
        let mut all = load(&self.path, &self.field)?;
        if let Some(l) = self.limit {
            all.truncate(l);
        }
        if all.len() <= self.eval {
            return Err(Error::data(
                &self.path,
                None,
                format!(
                    "{} prompts cannot leave {} evaluation prompts and any to train on",
                    all.len(),
                    self.eval
                ),
            ));
        }
        let eval = all.split_off(all.len() - self.eval);
        Ok((all, eval))
    }
}

/// Read every prompt of `path` (format by extension, see the module doc).
pub fn load(path: &Path, field: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let prompts = match ext.as_str() {
        "jsonl" | "ndjson" => jsonl(path, &text, field)?,
        "csv" => csv(path, &text, field)?,
        _ => text
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.trim().is_empty())
            .map(String::from)
            .collect(),
    };
    if prompts.is_empty() {
        return Err(Error::data(
            path,
            None,
            "no prompts: the file is empty or has only blank lines",
        ));
    }
    Ok(prompts)
}

fn jsonl(path: &Path, text: &str, field: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::data(path, Some(i + 1), format!("not JSON: {e}")))?;
        let p = match &v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Object(m) => match m.get(field) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(other) => {
                    return Err(Error::data(
                        path,
                        Some(i + 1),
                        format!("`{field}` must be a string, found {other}"),
                    ))
                }
                None => {
                    return Err(Error::data(
                        path,
                        Some(i + 1),
                        format!(
                            "no `{field}` key (set [prompts] field to the key holding the prompt)"
                        ),
                    ))
                }
            },
            other => {
                return Err(Error::data(
                    path,
                    Some(i + 1),
                    format!("expected an object or a string, found {other}"),
                ))
            }
        };
        if p.trim().is_empty() {
            return Err(Error::data(path, Some(i + 1), "empty prompt"));
        }
        out.push(p);
    }
    Ok(out)
}

/// Split one CSV record starting at `pos`; returns the fields and the position after the record.
fn csv_record(s: &str, mut pos: usize) -> std::result::Result<(Vec<String>, usize), String> {
    let b = s.as_bytes();
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut start = pos;
    while pos < b.len() {
        let c = b[pos];
        if quoted {
            if c == b'"' {
                if b.get(pos + 1) == Some(&b'"') {
                    cur.push('"');
                    pos += 2;
                    continue;
                }
                quoted = false;
                pos += 1;
                continue;
            }
            // Copy a whole UTF-8 character.
            let ch = s[pos..].chars().next().unwrap_or('\u{fffd}');
            cur.push(ch);
            pos += ch.len_utf8();
            continue;
        }
        match c {
            b'"' if pos == start => {
                quoted = true;
                pos += 1;
            }
            b',' => {
                fields.push(std::mem::take(&mut cur));
                pos += 1;
                start = pos;
            }
            b'\n' => {
                fields.push(std::mem::take(&mut cur));
                return Ok((fields, pos + 1));
            }
            b'\r' if b.get(pos + 1) == Some(&b'\n') => {
                pos += 1;
            }
            _ => {
                let ch = s[pos..].chars().next().unwrap_or('\u{fffd}');
                cur.push(ch);
                pos += ch.len_utf8();
            }
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    fields.push(cur);
    Ok((fields, pos))
}

fn csv(path: &Path, text: &str, field: &str) -> Result<Vec<String>> {
    let line_at = |pos: usize| text[..pos].matches('\n').count() + 1;
    let (header, mut pos) = csv_record(text, 0).map_err(|e| Error::data(path, Some(1), e))?;
    let col = header
        .iter()
        .position(|h| h.trim() == field)
        .ok_or_else(|| {
            Error::data(
                path,
                Some(1),
                format!("no `{field}` column in the header {header:?}"),
            )
        })?;
    let mut out = Vec::new();
    while pos < text.len() {
        let line = line_at(pos);
        let (rec, next) = csv_record(text, pos).map_err(|e| Error::data(path, Some(line), e))?;
        pos = next;
        if rec.len() == 1 && rec[0].trim().is_empty() {
            continue;
        }
        let p = rec.get(col).ok_or_else(|| {
            Error::data(
                path,
                Some(line),
                format!("{} fields, the header has {}", rec.len(), header.len()),
            )
        })?;
        if p.trim().is_empty() {
            return Err(Error::data(path, Some(line), "empty prompt"));
        }
        out.push(p.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn reads_each_format() {
        let d = tempfile::tempdir().unwrap();
        let j = write(
            d.path(),
            "p.jsonl",
            "{\"prompt\": \"I loved\"}\n\n\"This film\"\n",
        );
        assert_eq!(load(&j, "prompt").unwrap(), vec!["I loved", "This film"]);
        let c = write(
            d.path(),
            "p.csv",
            "id,prompt\n1,\"A \"\"quoted\"\", multi\nline\"\n2,plain\n",
        );
        assert_eq!(
            load(&c, "prompt").unwrap(),
            vec!["A \"quoted\", multi\nline", "plain"]
        );
        let t = write(d.path(), "p.txt", "one\n\n two\n");
        assert_eq!(load(&t, "prompt").unwrap(), vec!["one", " two"]);
    }

    #[test]
    fn bad_files_name_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let e = write(d.path(), "empty.jsonl", "\n\n");
        let msg = load(&e, "prompt").unwrap_err().to_string();
        assert!(
            msg.contains("empty.jsonl") && msg.contains("no prompts"),
            "{msg}"
        );
        let b = write(
            d.path(),
            "bad.jsonl",
            "{\"prompt\": \"ok\"}\n{\"text\": 1}\n",
        );
        let msg = load(&b, "prompt").unwrap_err().to_string();
        assert!(
            msg.contains("bad.jsonl:2") && msg.contains("`prompt`"),
            "{msg}"
        );
        let c = write(d.path(), "bad.csv", "text\n\"unterminated\n");
        let msg = load(&c, "prompt").unwrap_err().to_string();
        assert!(msg.contains("bad.csv:1") && msg.contains("prompt"), "{msg}");
        let missing = d.path().join("nope.txt");
        assert!(load(&missing, "prompt")
            .unwrap_err()
            .to_string()
            .contains("nope.txt"));
    }

    #[test]
    fn split_keeps_eval_at_the_end() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "p.txt", "a\nb\nc\nd\n");
        let cfg = PromptsConfig {
            path: p,
            field: "prompt".into(),
            limit: Some(3),
            eval: 1,
        };
        let (tr, ev) = cfg.load_split().unwrap();
        assert_eq!(
            (tr, ev),
            (vec!["a".to_string(), "b".into()], vec!["c".to_string()])
        );
        let cfg = PromptsConfig { eval: 3, ..cfg };
        assert!(cfg.load_split().is_err());
    }
}
