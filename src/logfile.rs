//! Tee of the log to the run directory's `log.txt`: the subscriber is set up before the run
//! directory exists, so the file is attached later.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

static FILE: OnceLock<Mutex<Option<std::fs::File>>> = OnceLock::new();

fn slot() -> &'static Mutex<Option<std::fs::File>> {
    FILE.get_or_init(|| Mutex::new(None))
}

/// Start copying log lines to `path` (appending, so a resumed run keeps its history).
pub fn attach(path: &std::path::Path) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    *slot().lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    Ok(())
}

/// A writer for tracing-subscriber that writes nowhere until [`attach`] is called.
#[derive(Clone, Copy, Default)]
pub struct LogFile;

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(f) = slot().lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            f.write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if let Some(f) = slot().lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            f.flush()?;
        }
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogFile {
    type Writer = LogFile;
    fn make_writer(&'a self) -> Self::Writer {
        LogFile
    }
}
