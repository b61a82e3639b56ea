//! Draws library progress as an indicatif bar, only when stderr is a TTY.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arbor_repo::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar on stderr, hidden when stderr is not a terminal.
#[derive(Debug)]
pub struct Bar {
    bar: ProgressBar,
    /// Bytes transferred in this phase (pulls).
    bytes: Arc<AtomicU64>,
}

impl Bar {
    /// A bar that draws only on a TTY.
    pub fn new() -> Bar {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Bar {
            bar: ProgressBar::with_draw_target(None, target),
            bytes: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Default for Bar {
    fn default() -> Self {
        Bar::new()
    }
}

impl Progress for Bar {
    fn start(&self, phase: &str, total: u64) {
        self.bytes.store(0, Ordering::Relaxed);
        let style = if total > 0 {
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {human_pos}/{human_len}{bytes} ({elapsed}, eta {eta})",
            )
        } else {
            ProgressStyle::with_template("{msg} {human_pos}{bytes} ({elapsed})")
        };
        if let Ok(s) = style {
            let bytes = self.bytes.clone();
            let s = s.with_key(
                "bytes",
                move |st: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let b = bytes.load(Ordering::Relaxed);
                    if b > 0 {
                        let secs = st.elapsed().as_secs_f64().max(0.001);
                        let rate = (b as f64 / secs) as u64;
                        let _ = write!(
                            w,
                            ", {} at {}/s",
                            crate::render::human_bytes(b),
                            crate::render::human_bytes(rate)
                        );
                    }
                },
            );
            self.bar.set_style(s.progress_chars("=> "));
        }
        self.bar.set_length(total);
        self.bar.set_position(0);
        self.bar.set_message(phase.to_string());
    }

    fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }

    fn set_total(&self, total: u64) {
        self.bar.set_length(total);
    }

    fn inc_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }
}
