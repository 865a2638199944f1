//! The error type of every maxmin library crate.
//!
//! Errors split into *bad input* (a config, a data file, an argument: the user can fix it, exit
//! code 2) and *internal* failures (exit code 1). Each input error names where the problem is
//! (file, line:column, key path) and, where we can, carries a `hint:`.

use std::fmt;
use std::path::PathBuf;

/// Result alias used across maxmin.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where in an input a problem is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    /// The file, when the input came from one.
    pub file: Option<PathBuf>,
    /// 1-based line and column, when known.
    pub line_col: Option<(usize, usize)>,
    /// Dotted key path in the config (`ppo.num-envs`), when known.
    pub key: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut wrote = false;
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some((l, c)) = self.line_col {
                write!(f, ":{l}:{c}")?;
            }
            wrote = true;
        }
        if let Some(key) = &self.key {
            if wrote {
                write!(f, ": ")?;
            }
            write!(f, "key `{key}`")?;
            wrote = true;
        }
        if !wrote {
            write!(f, "<input>")?;
        }
        Ok(())
    }
}

/// Every error maxmin's libraries return.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config file or `--set` override is invalid.
    #[error("{loc}: {msg}{}", hint_suffix(.hint))]
    Config {
        /// Where.
        loc: Location,
        /// What was expected and what was found.
        msg: String,
        /// How to fix it.
        hint: Option<String>,
    },
    /// A data file (preferences, prompts, fixtures, checkpoints) is malformed.
    #[error("{}{}: {msg}", .file.display(), line_suffix(*.line))]
    Data {
        /// The file.
        file: PathBuf,
        /// 1-based line, when the format is line oriented.
        line: Option<usize>,
        /// What is wrong.
        msg: String,
    },
    /// A bad argument or request that is the caller's to fix (exit code 2).
    #[error("{msg}{}", hint_suffix(.hint))]
    Input {
        /// What is wrong.
        msg: String,
        /// How to fix it.
        hint: Option<String>,
    },
    /// An I/O failure on a named path.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An error from the tensor engine.
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    /// The run was interrupted (SIGINT) after saving a checkpoint.
    #[error("interrupted: checkpoint saved in {}", .0.display())]
    Interrupted(PathBuf),
    /// A bug or an unexpected state.
    #[error("internal error: {0}")]
    Internal(String),
}

fn hint_suffix(h: &Option<String>) -> String {
    h.as_ref()
        .map(|h| format!("\nhint: {h}"))
        .unwrap_or_default()
}

fn line_suffix(l: Option<usize>) -> String {
    l.map(|l| format!(":{l}")).unwrap_or_default()
}

impl Error {
    /// Process exit code: 2 for bad input, 1 for internal errors, 130 for an interrupted run.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. } | Error::Data { .. } | Error::Input { .. } => 2,
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => 2,
            Error::Interrupted(_) => 130,
            _ => 1,
        }
    }

    /// A config error at a key path (file and line are filled in by the loader).
    pub fn config(key: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Config {
            loc: Location {
                key: Some(key.into()),
                ..Location::default()
            },
            msg: msg.into(),
            hint: None,
        }
    }

    /// A bad-input error with an optional hint.
    pub fn input(msg: impl Into<String>, hint: Option<String>) -> Self {
        Error::Input {
            msg: msg.into(),
            hint,
        }
    }

    /// A data-file error.
    pub fn data(file: impl Into<PathBuf>, line: Option<usize>, msg: impl Into<String>) -> Self {
        Error::Data {
            file: file.into(),
            line,
            msg: msg.into(),
        }
    }

    /// An I/O error on a path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Prefix a config error's key path with `prefix` (a plugin validates its own keys; the
    /// caller knows where the plugin sits in the file).
    pub fn under(self, prefix: &str) -> Self {
        match self {
            Error::Config { mut loc, msg, hint } => {
                loc.key = Some(match loc.key {
                    Some(k) if !k.is_empty() => format!("{prefix}.{k}"),
                    _ => prefix.to_string(),
                });
                Error::Config { loc, msg, hint }
            }
            e => e,
        }
    }
}

/// Checks used by config `validate` methods; each returns a config error naming `key`.
pub mod check {
    use super::{Error, Result};

    /// `v` must be ≥ 1.
    pub fn positive_usize(key: &str, v: usize) -> Result<()> {
        if v == 0 {
            return Err(Error::config(key, "expected a positive integer, found 0"));
        }
        Ok(())
    }

    /// `v` must be finite and > 0.
    pub fn positive_f64(key: &str, v: f64) -> Result<()> {
        if !(v.is_finite() && v > 0.0) {
            return Err(Error::config(
                key,
                format!("expected a finite number > 0, found {v}"),
            ));
        }
        Ok(())
    }

    /// `v` must be finite and ≥ 0.
    pub fn non_negative_f64(key: &str, v: f64) -> Result<()> {
        if !(v.is_finite() && v >= 0.0) {
            return Err(Error::config(
                key,
                format!("expected a finite number ≥ 0, found {v}"),
            ));
        }
        Ok(())
    }

    /// `v` must lie in `[lo, hi]`.
    pub fn in_range(key: &str, v: f64, lo: f64, hi: f64) -> Result<()> {
        if !(v.is_finite() && v >= lo && v <= hi) {
            return Err(Error::config(
                key,
                format!("expected a number in [{lo}, {hi}], found {v}"),
            ));
        }
        Ok(())
    }
}
