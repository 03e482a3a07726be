//! Progress display for long runs: an indicatif bar on a terminal; when stderr is not a terminal
//! (CI logs, pipes), a plain line at the first update (so a slow run shows at once that it is
//! alive) and every few seconds after.
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
    /// Plain-text mode: when the last line was printed (`None` before the first).
    plain: Option<Option<Instant>>,
    label: &'static str,
}

const LINE_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    /// A bar over `total` units of which `done` are already done, e.g. a resumed run.
    pub fn new(label: &'static str, total: u64, done: u64) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} ETA {eta} {msg}",
            )
            .expect("the template is valid"),
        );
        bar.set_prefix(label);
        bar.set_position(done);
        bar.reset_eta();
        let plain = bar.is_hidden().then_some(None);
        Self { bar, plain, label }
    }

    /// Moves to `pos` and shows `message` (e.g. the current loss).
    pub fn update(&mut self, pos: u64, message: impl FnOnce() -> String) {
        self.bar.set_position(pos);
        let due = |last: &Option<Instant>| last.is_none_or(|t| t.elapsed() >= LINE_EVERY);
        match &mut self.plain {
            None => self.bar.set_message(message()),
            Some(last) if due(last) || Some(pos) == self.bar.length() => {
                *last = Some(Instant::now());
                let rate = self.bar.per_sec();
                let eta = self.bar.eta().as_secs();
                eprintln!(
                    "{} {pos}/{} {rate:.2}/s ETA {eta}s {}",
                    self.label,
                    self.bar.length().unwrap_or(0),
                    message()
                );
            }
            Some(_) => {}
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
