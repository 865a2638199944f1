//! Progress display: an indicatif bar when stderr is a terminal, periodic log lines otherwise
//! (so CI logs and `RUST_LOG` users see progress without control characters).

use indicatif::{ProgressBar, ProgressStyle};
use maxmin_core::run::Progress;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Chooses a bar or log lines.
pub enum CliProgress {
    /// A terminal bar.
    Bar(Option<ProgressBar>),
    /// Log lines at most every 10 seconds.
    Log {
        stage: String,
        total: u64,
        last: Instant,
    },
}

impl CliProgress {
    /// A bar on a terminal, logs otherwise.
    pub fn new() -> Self {
        if std::io::stderr().is_terminal() {
            CliProgress::Bar(None)
        } else {
            CliProgress::Log {
                stage: String::new(),
                total: 0,
                last: Instant::now(),
            }
        }
    }
}

impl Progress for CliProgress {
    fn start(&mut self, stage: &str, total: u64, done: u64) {
        match self {
            CliProgress::Bar(bar) => {
                let b = ProgressBar::new(total).with_position(done);
                b.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>8} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta}) {msg}",
                    )
                    .expect("static template"),
                );
                b.set_prefix(stage.to_string());
                b.enable_steady_tick(Duration::from_millis(250));
                *bar = Some(b);
            }
            CliProgress::Log {
                stage: s,
                total: t,
                last,
            } => {
                *s = stage.to_string();
                *t = total;
                *last = Instant::now();
                tracing::info!("{stage}: starting at {done}/{total}");
            }
        }
    }

    fn update(&mut self, done: u64, msg: &str) {
        match self {
            CliProgress::Bar(Some(b)) => {
                b.set_position(done);
                b.set_message(msg.to_string());
            }
            CliProgress::Bar(None) => {}
            CliProgress::Log { stage, total, last } => {
                if last.elapsed() >= Duration::from_secs(10) {
                    *last = Instant::now();
                    let pct = 100.0 * done as f64 / (*total).max(1) as f64;
                    tracing::info!("{stage}: {done}/{total} ({pct:.0}%) {msg}");
                }
            }
        }
    }

    fn finish(&mut self) {
        if let CliProgress::Bar(Some(b)) = self {
            b.finish_and_clear();
        }
    }
}
