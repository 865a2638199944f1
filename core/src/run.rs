//! The run directory and what goes into it: `config.resolved.toml`, `metrics.jsonl` (one JSON
//! object per logged step, CleanRL's metric names), `summary.json`, `log.txt`, `checkpoints/`.
//! Files that matter are written atomically (temp file, fsync, rename).

use crate::error::{Error, Result};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the binary's SIGINT handler; trainers poll it at update boundaries, save a
/// checkpoint and return [`Error::Interrupted`].
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether an interrupt was requested.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Write `bytes` to `path` atomically: a temporary file in the same folder, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        // Persist the rename itself; not all filesystems allow fsync on a directory.
        let _ = d.sync_all();
    }
    Ok(())
}

/// Serialise `value` as pretty JSON and write it atomically.
pub fn write_json_atomic<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Internal(format!("cannot serialise {}: {e}", path.display())))?;
    write_atomic(path, s.as_bytes())
}

/// An append-only JSONL metrics log. Its byte length is recorded in each checkpoint so that a
/// resumed run truncates lines written after the checkpoint and regenerates them.
pub struct Metrics {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    len: u64,
}

impl Metrics {
    /// Open (create) `path`, truncated to `keep_bytes` (0 for a fresh run).
    pub fn open(path: &Path, keep_bytes: u64) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let actual = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if actual < keep_bytes {
            return Err(Error::data(
                path,
                None,
                format!(
                    "metrics log is shorter ({actual} B) than its checkpoint says ({keep_bytes} B)"
                ),
            ));
        }
        file.set_len(keep_bytes).map_err(|e| Error::io(path, e))?;
        let mut file = std::io::BufWriter::new(file);
        use std::io::Seek;
        file.seek(std::io::SeekFrom::End(0))
            .map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            len: keep_bytes,
        })
    }

    /// Append one record: `global_step` first, then `fields` in the given order.
    pub fn log(&mut self, global_step: u64, fields: &[(&str, f64)]) -> Result<()> {
        let mut line = format!("{{\"global_step\":{global_step}");
        for (k, v) in fields {
            let v = if v.is_finite() {
                serde_json::Number::from_f64(*v).map_or("null".to_string(), |n| n.to_string())
            } else {
                "null".to_string()
            };
            line.push_str(&format!(",{}:{v}", serde_json::Value::from(*k)));
        }
        line.push_str("}\n");
        self.log_line(&line)
    }

    /// The file it writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one JSON value as a line.
    pub fn log_value(&mut self, value: &serde_json::Value) -> Result<()> {
        self.log_line(&format!("{value}\n"))
    }

    fn log_line(&mut self, line: &str) -> Result<()> {
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| Error::io(&self.path, e))?;
        self.len += line.len() as u64;
        Ok(())
    }

    /// Flush to disk and return the byte length (for a checkpoint).
    pub fn sync(&mut self) -> Result<u64> {
        self.file.flush().map_err(|e| Error::io(&self.path, e))?;
        self.file
            .get_ref()
            .sync_data()
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(self.len)
    }
}

/// Progress reporting, implemented by the binary (a bar on a TTY, log lines otherwise).
pub trait Progress: Send {
    /// Start a stage with `total` units (env steps, iterations…).
    fn start(&mut self, stage: &str, total: u64, done: u64);
    /// Set the position and a short status message.
    fn update(&mut self, done: u64, msg: &str);
    /// End the stage.
    fn finish(&mut self);
}

/// A [`Progress`] that reports nothing (tests, library use).
#[derive(Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&mut self, _: &str, _: u64, _: u64) {}
    fn update(&mut self, _: u64, _: &str) {}
    fn finish(&mut self) {}
}

/// The experiment `name` names run directories (`runs/<name>__<timestamp>`): a non-empty name of
/// ASCII letters, digits, '-', '_' or '.'; the error names the key `name`.
pub fn check_run_name(name: &str) -> Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(Error::config(
            "name",
            format!(
                "expected a non-empty name of letters, digits, '-', '_' or '.', found {name:?}"
            ),
        ));
    }
    Ok(())
}

/// An open run directory.
pub struct RunDir {
    /// Its path.
    pub path: PathBuf,
}

impl RunDir {
    /// `runs/<name>__<UTC timestamp>` (or `out`), created with `checkpoints/`; fails if `out`
    /// already holds a run.
    pub fn create(name: &str, out: Option<&Path>) -> Result<Self> {
        let path = match out {
            Some(p) => p.to_path_buf(),
            None => PathBuf::from("runs").join(format!("{name}__{}", timestamp())),
        };
        if path.join("config.resolved.toml").exists() {
            return Err(Error::input(
                format!("{} already holds a run", path.display()),
                Some(format!(
                    "continue it with --resume {0}, or choose another --out",
                    path.display()
                )),
            ));
        }
        std::fs::create_dir_all(path.join("checkpoints")).map_err(|e| Error::io(&path, e))?;
        Ok(Self { path })
    }

    /// An existing run directory, for `--resume`.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.join("config.resolved.toml").is_file() {
            return Err(Error::input(
                format!(
                    "{} is not a run directory (no config.resolved.toml)",
                    path.display()
                ),
                Some("pass the folder `maxmin run` printed as its last line".into()),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// A path inside the run directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The checkpoints folder.
    pub fn checkpoints(&self) -> PathBuf {
        self.path.join("checkpoints")
    }
}

/// UTC time as `YYYYmmdd-HHMMSS`, from the system clock (no time-zone database needed).
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_truncate_to_checkpoint_length() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.jsonl");
        let mut m = Metrics::open(&p, 0).unwrap();
        m.log(1, &[("a", 1.5)]).unwrap();
        let keep = m.sync().unwrap();
        m.log(2, &[("a", f64::NAN)]).unwrap();
        m.sync().unwrap();
        drop(m);
        let mut m = Metrics::open(&p, keep).unwrap();
        m.log(3, &[("b", 2.0)]).unwrap();
        m.sync().unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            s,
            "{\"global_step\":1,\"a\":1.5}\n{\"global_step\":3,\"b\":2.0}\n"
        );
        assert!(Metrics::open(&p, 10_000).is_err());
    }

    #[test]
    fn atomic_write_replaces_and_timestamp_has_shape() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        write_atomic(&p, b"1").unwrap();
        write_atomic(&p, b"2").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "2");
        let t = timestamp();
        assert_eq!(t.len(), 15, "{t}");
        assert!(t.starts_with("20"), "{t}");
    }
}
