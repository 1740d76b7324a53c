//! Progress on stderr for builds that take seconds to minutes: a spinner with
//! the current sub-step on a terminal, and always one summary line per step
//! ("image: building minimal rootfs ... done in 3.1s").

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One named step. Finish it with [`Step::done`]; dropping it unfinished
/// reports a failure.
#[derive(Debug)]
pub(crate) struct Step {
    name: String,
    started: Instant,
    bar: ProgressBar,
    finished: bool,
}

impl Step {
    pub(crate) fn start(name: impl Into<String>) -> Self {
        let name = name.into();
        // indicatif draws nothing when stderr is not a terminal.
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} image: {prefix} [{elapsed}] {wide_msg}")
                .expect("static progress template is valid"),
        );
        bar.set_prefix(name.clone());
        bar.enable_steady_tick(Duration::from_millis(120));
        tracing::info!(step = %name, "image build step started");
        Self {
            name,
            started: Instant::now(),
            bar,
            finished: false,
        }
    }

    /// Shows what the step is doing right now.
    pub(crate) fn set_message(&self, message: impl Into<String>) {
        let message: String = message.into();
        tracing::debug!(step = %self.name, "{message}");
        self.bar.set_message(message);
    }

    /// A clone of the spinner, for threads that report sub-progress.
    pub(crate) fn bar(&self) -> ProgressBar {
        self.bar.clone()
    }

    pub(crate) fn done(mut self) {
        self.finish("done in");
    }

    fn finish(&mut self, verb: &str) {
        self.finished = true;
        self.bar.finish_and_clear();
        let secs = self.started.elapsed().as_secs_f64();
        eprintln!("image: {} ... {verb} {secs:.1}s", self.name);
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if !self.finished {
            self.finish("failed after");
        }
    }
}
