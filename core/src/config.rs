//! Config files: TOML with kebab-case keys, `deny_unknown_fields`, plugins chosen by
//! `type = "…"`. Loading applies `--set key.path=value` overrides with the same key paths, then
//! deserialises and validates, turning every failure into an [`Error::Config`] that names the
//! file, line:column, key path and what was expected (with a "did you mean" for unknown types).

use crate::error::{Error, Location, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// A config section that can check its own values.
pub trait Validate {
    /// Check values; a config error names the offending key path (relative to this value).
    fn validate(&self) -> Result<()>;
}

/// A loaded, validated config with its resolved TOML (defaults filled in, overrides applied).
#[derive(Debug)]
pub struct Loaded<T> {
    /// The typed config.
    pub value: T,
    /// The config as TOML, every default explicit; loading it again gives the same config.
    pub resolved: String,
    /// The file it came from.
    pub source: PathBuf,
}

/// Read, override, deserialise and validate a config file.
pub fn load<T>(path: &Path, sets: &[String]) -> Result<Loaded<T>>
where
    T: DeserializeOwned + Serialize + Validate,
{
    let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
        loc: Location {
            file: Some(path.to_path_buf()),
            ..Location::default()
        },
        msg: format!("cannot read the config file: {e}"),
        hint: Some("check the path; configs live in configs/".into()),
    })?;
    load_str(&text, path, sets)
}

/// As [`load`], from text already read (`origin` names it in errors).
pub fn load_str<T>(text: &str, origin: &Path, sets: &[String]) -> Result<Loaded<T>>
where
    T: DeserializeOwned + Serialize + Validate,
{
    let file_err = |line_col, key: Option<String>, msg: String, hint| Error::Config {
        loc: Location {
            file: Some(origin.to_path_buf()),
            line_col,
            key,
        },
        msg,
        hint,
    };
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        let lc = e.span().map(|s| line_col(text, s.start));
        file_err(lc, None, format!("not valid TOML: {}", e.message()), None)
    })?;
    let mut overridden = Vec::new();
    for s in sets {
        let key = apply_set(&mut doc, s).map_err(|msg| {
            file_err(
                None,
                None,
                format!("bad --set `{s}`: {msg}"),
                Some("use --set key.path=value, e.g. --set ppo.learning-rate=1e-3".into()),
            )
        })?;
        overridden.push(key);
    }
    let text = doc.to_string();
    let value: T = deserialize(&text, origin, &overridden)?;
    value.validate().map_err(|e| match e {
        Error::Config { loc, msg, hint } => {
            let lc = loc.key.as_deref().and_then(|k| locate(&text, k));
            let hint = note_override(hint, loc.key.as_deref(), &overridden);
            file_err(lc, loc.key, msg, hint)
        }
        e => e,
    })?;
    let resolved = toml::to_string(&value)
        .map_err(|e| Error::Internal(format!("cannot serialise the resolved config: {e}")))?;
    Ok(Loaded {
        value,
        resolved,
        source: origin.to_path_buf(),
    })
}

/// Deserialise TOML text (no overrides, no validation), with errors located as in [`load`].
pub fn from_str_at<T: DeserializeOwned>(text: &str, origin: &Path) -> Result<T> {
    deserialize(text, origin, &[])
}

fn deserialize<T: DeserializeOwned>(text: &str, origin: &Path, overridden: &[String]) -> Result<T> {
    let de = toml::de::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let key = (path != "." && !path.is_empty()).then_some(path);
        let line_col = inner
            .span()
            .map(|s| line_col(text, s.start))
            .or_else(|| key.as_deref().and_then(|k| locate(text, k)));
        let (msg, hint) = explain(inner.message());
        let hint = note_override(hint, key.as_deref(), overridden);
        Error::Config {
            loc: Location {
                file: Some(origin.to_path_buf()),
                line_col,
                key,
            },
            msg,
            hint,
        }
    })
}

fn note_override(hint: Option<String>, key: Option<&str>, overridden: &[String]) -> Option<String> {
    match key {
        Some(k)
            if overridden
                .iter()
                .any(|o| o == k || k.starts_with(&format!("{o}."))) =>
        {
            let note = "this value was set on the command line with --set".to_string();
            Some(match hint {
                Some(h) => format!("{h}\n{note}"),
                None => note,
            })
        }
        _ => hint,
    }
}

/// Rewrite serde's messages into ours: for an unknown plugin type, suggest the nearest name.
fn explain(message: &str) -> (String, Option<String>) {
    let msg = message.trim().to_string();
    if let Some(rest) = msg.strip_prefix("unknown variant `") {
        let unknown = rest.split('`').next().unwrap_or_default();
        let known: Vec<&str> = rest
            .split_once("expected")
            .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
            .unwrap_or_default();
        let mut hint = format!("known types: {}", known.join(", "));
        if let Some(n) = crate::registry::nearest(unknown, &known) {
            hint = format!("did you mean `{n}`? {hint}");
        }
        return (format!("unknown type `{unknown}`"), Some(hint));
    }
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let unknown = rest.split('`').next().unwrap_or_default();
        let known: Vec<&str> = rest
            .split_once("expected")
            .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
            .unwrap_or_default();
        let mut hint = format!("allowed keys here: {}", known.join(", "));
        if let Some(n) = crate::registry::nearest(unknown, &known) {
            hint = format!("did you mean `{n}`? {hint}");
        }
        return (format!("unknown key `{unknown}`"), Some(hint));
    }
    (msg, None)
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Line:column of a dotted key path in TOML text (the key itself, or its table header).
pub fn locate(text: &str, key: &str) -> Option<(usize, usize)> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let mut best = None;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let (k, item) = table.get_key_value(part)?;
        best = k.span().map(|s| line_col(text, s.start)).or(best);
        if i + 1 == parts.len() {
            break;
        }
        table = match item {
            toml_edit::Item::Table(t) => t,
            toml_edit::Item::Value(toml_edit::Value::InlineTable(t)) => t,
            toml_edit::Item::ArrayOfTables(a) => {
                let idx: usize = parts.get(i + 1)?.parse().ok()?;
                let t = a.get(idx)?;
                best = t.span().map(|s| line_col(text, s.start)).or(best);
                // The index consumed the next part.
                return locate_rest(text, t, &parts[i + 2..]).or(best);
            }
            _ => return best,
        };
    }
    best
}

fn locate_rest(text: &str, table: &toml_edit::Table, parts: &[&str]) -> Option<(usize, usize)> {
    let mut t: &dyn toml_edit::TableLike = table;
    let mut best = None;
    for part in parts {
        let (k, item) = t.get_key_value(part)?;
        best = k.span().map(|s| line_col(text, s.start)).or(best);
        match item {
            toml_edit::Item::Table(x) => t = x,
            toml_edit::Item::Value(toml_edit::Value::InlineTable(x)) => t = x,
            _ => break,
        }
    }
    best
}

/// Apply one `key.path=value` override; returns the key path.
fn apply_set(doc: &mut toml_edit::DocumentMut, set: &str) -> std::result::Result<String, String> {
    let (key, raw) = set
        .split_once('=')
        .ok_or_else(|| "expected KEY.PATH=VALUE".to_string())?;
    let key = key.trim();
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("empty part in key path `{key}`"));
    }
    // A bare word that is not TOML (`--set env.type=cartpole`) is taken as a string.
    let value: toml_edit::Value = raw
        .trim()
        .parse()
        .unwrap_or_else(|_| toml_edit::Value::from(raw.trim()));
    let (last, parents) = parts.split_last().expect("non-empty key path");
    let mut table: &mut dyn toml_edit::TableLike = doc.as_table_mut();
    let mut i = 0;
    while i < parents.len() {
        let part = parents[i];
        if table.get(part).is_none() {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            table.insert(part, toml_edit::Item::Table(t));
        }
        let item = table.get_mut(part).expect("inserted above");
        table = match item {
            toml_edit::Item::Table(t) => t,
            toml_edit::Item::Value(toml_edit::Value::InlineTable(t)) => t,
            toml_edit::Item::ArrayOfTables(a) => {
                let idx: usize =
                    parents
                        .get(i + 1)
                        .and_then(|p| p.parse().ok())
                        .ok_or_else(|| {
                            format!("`{part}` is a list of tables: index it, e.g. `{part}.0.…`")
                        })?;
                let len = a.len();
                i += 1;
                a.get_mut(idx)
                    .ok_or_else(|| format!("`{part}` has {len} entries, no index {idx}"))?
            }
            _ => return Err(format!("`{part}` is a value, not a table")),
        };
        i += 1;
    }
    table.insert(last, toml_edit::Item::Value(value));
    Ok(key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    struct Inner {
        #[serde(default = "one")]
        num_envs: usize,
    }
    fn one() -> usize {
        1
    }
    #[derive(Debug, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    struct Top {
        name: String,
        inner: Inner,
    }
    impl Validate for Top {
        fn validate(&self) -> Result<()> {
            crate::error::check::positive_usize("num-envs", self.inner.num_envs)
                .map_err(|e| e.under("inner"))
        }
    }

    fn load_t(text: &str, sets: &[&str]) -> Result<Loaded<Top>> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        load_str(text, Path::new("t.toml"), &sets)
    }

    #[test]
    fn defaults_and_overrides_resolve() {
        let l = load_t("name = \"a\"\n[inner]\n", &["inner.num-envs=8"]).unwrap();
        assert_eq!(l.value.inner.num_envs, 8);
        assert!(l.resolved.contains("num-envs = 8"), "{}", l.resolved);
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = load_t("name = \"a\"\n[inner]\nnum-envs = \"x\"\n", &[]).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("t.toml:3:"), "{s}");
        assert!(s.contains("inner.num-envs"), "{s}");
        let e = load_t("name = \"a\"\n[inner]\nnum-env = 2\n", &[]).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("unknown key `num-env`") && s.contains("did you mean `num-envs`"),
            "{s}"
        );
        let e = load_t("name = \"a\"\n[inner]\nnum-envs = 0\n", &[]).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("t.toml:3:1: key `inner.num-envs`"), "{s}");
        let e = load_t("name = \"a\"\n[inner]\n", &["inner.num-envs=0"]).unwrap_err();
        assert!(e.to_string().contains("--set"), "{e}");
        let e = load_t("name = [\n", &[]).unwrap_err();
        assert!(e.to_string().contains("not valid TOML"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }
}
