//! `dml sweep`'s library: the grid of sampler settings, the record of their scores (sweep.csv,
//! resumable), the best setting (best_settings.json, read back by `sample`/`eval --settings`)
//! and the plot of score against step size.
mod best;
mod plot;
mod record;
mod setting;

pub use best::{best_row, BestSettings, BEST_SETTINGS_FILE};
pub use plot::sweep_chart;
pub use record::{Metric, Row, Scores, Status, SweepRecord, SWEEP_CSV_FILE};
pub use setting::{Grid, Setting};
