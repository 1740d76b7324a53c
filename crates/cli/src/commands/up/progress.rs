//! `hearth up`'s progress: a spinner with the elapsed time and what is
//! happening now while a step runs (on a terminal), and one line per step
//! when it ends ("up: creating a sandbox ... done in 4.9s"), so a log or a
//! pipe still shows where the time went.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Spinner {
    name: String,
    started: Instant,
    bar: ProgressBar,
    finished: bool,
}

impl Spinner {
    pub fn start(name: impl Into<String>) -> Spinner {
        let name = name.into();
        // indicatif draws nothing when stderr is not a terminal.
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} up: {prefix} [{elapsed}] {wide_msg}")
                .expect("static progress template is valid"),
        );
        bar.set_prefix(name.clone());
        bar.enable_steady_tick(Duration::from_millis(120));
        Spinner {
            name,
            started: Instant::now(),
            bar,
            finished: false,
        }
    }

    pub fn message(&self, message: impl Into<String>) {
        self.bar.set_message(message.into());
    }

    /// Ends the step; returns its duration.
    pub fn done(mut self) -> Duration {
        self.finish("done in")
    }

    fn finish(&mut self, verb: &str) -> Duration {
        self.finished = true;
        self.bar.finish_and_clear();
        let took = self.started.elapsed();
        eprintln!("up: {} ... {verb} {:.1}s", self.name, took.as_secs_f64());
        took
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        if !self.finished {
            self.finish("failed after");
        }
    }
}
