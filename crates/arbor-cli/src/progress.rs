//! Draws library progress as an indicatif bar, only when stderr is a TTY.

use std::io::IsTerminal;

use arbor_repo::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar on stderr, hidden when stderr is not a terminal.
#[derive(Debug)]
pub struct Bar {
    bar: ProgressBar,
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
        let style = if total > 0 {
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {human_pos}/{human_len} ({elapsed}, eta {eta})",
            )
        } else {
            ProgressStyle::with_template("{msg} {human_pos} ({elapsed})")
        };
        if let Ok(s) = style {
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
}
