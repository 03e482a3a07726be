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
    /// Where and when this bar started: the plain line's rate counts the units done since.
    start: (u64, Instant),
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
        Self {
            bar,
            plain,
            label,
            start: (done, Instant::now()),
        }
    }

    /// "R/s ETA Ts" from the units done since the bar started, or "" before there are any (a
    /// rate over no work would be noise: the first update can come microseconds after the start).
    fn rate_and_eta(&self, pos: u64) -> String {
        let (done, since) = self.start;
        let seconds = since.elapsed().as_secs_f64();
        if pos <= done || seconds <= 0.0 {
            return String::new();
        }
        let rate = (pos - done) as f64 / seconds;
        let left = self.bar.length().unwrap_or(pos).saturating_sub(pos);
        format!("{rate:.2}/s ETA {:.0}s ", left as f64 / rate)
    }

    /// Moves to `pos` and shows `message` (e.g. the current loss).
    pub fn update(&mut self, pos: u64, message: impl FnOnce() -> String) {
        self.bar.set_position(pos);
        let due = |last: &Option<Instant>| last.is_none_or(|t| t.elapsed() >= LINE_EVERY);
        match &mut self.plain {
            None => self.bar.set_message(message()),
            Some(last) if due(last) || Some(pos) == self.bar.length() => {
                *last = Some(Instant::now());
                eprintln!(
                    "{} {pos}/{} {}{}",
                    self.label,
                    self.bar.length().unwrap_or(0),
                    self.rate_and_eta(pos),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_counts_only_units_done_since_the_bar_started() {
        // A bar made after the first unit (as the sampler's is) shows no rate until a second.
        let bar = Progress::new("sample", 10, 1);
        assert_eq!(bar.rate_and_eta(1), "");
        std::thread::sleep(Duration::from_millis(50));
        let line = bar.rate_and_eta(3);
        let rate: f64 = line.split("/s").next().unwrap().parse().unwrap();
        // 2 units in at least 50 ms: at most 40/s, however slow the machine.
        assert!(rate > 0.0 && rate <= 40.0, "{line}");
        assert!(line.contains(" ETA "), "{line}");
    }
}
