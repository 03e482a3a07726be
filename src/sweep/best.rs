//! best_settings.json: the best setting of a sweep as the `sample`/`eval` options it stands for,
//! which `--settings best` applies as `--sampler-preset` applies a preset (options given on the
//! command line win), with its scores and conditions for the reader.
use std::path::Path;

use serde_json::{json, Map, Value};

use super::record::{Metric, Row, Status};
use super::setting::Setting;
use crate::error::{Error, Result};

/// The file's name in the run directory.
pub const BEST_SETTINGS_FILE: &str = "best_settings.json";

/// The options a settings file may set besides a setting's own ([`Setting::OPTION_FLAGS`]): the
/// ones a sweep holds fixed. Never an output or the checkpoint.
const FIXED_SETTABLE: &[&str] = &["terminal-steps", "variant"];

/// Whether a settings file may set the option `flag`.
fn settable(flag: &str) -> bool {
    Setting::OPTION_FLAGS.contains(&flag) || FIXED_SETTABLE.contains(&flag)
}

/// The scored row with the smallest finite `metric`, if any (refused and failed rows never).
pub fn best_row(rows: &[Row], metric: Metric) -> Option<&Row> {
    rows.iter()
        .filter_map(|r| match &r.status {
            Status::Scored(s) if s.get(metric).is_finite() => Some((r, s.get(metric))),
            _ => None,
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(r, _)| r)
}

/// The best setting and what it was chosen by.
pub struct BestSettings<'a> {
    pub row: &'a Row,
    pub metric: Metric,
    /// Options fixed for the whole sweep that the score depends on: (flag, value).
    pub fixed: Vec<(String, String)>,
}

impl BestSettings<'_> {
    /// Writes the file at `path` through a temporary file and a rename.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut options = Map::new();
        for (flag, value) in self
            .row
            .setting
            .options()
            .into_iter()
            .chain(self.fixed.clone())
        {
            options.insert(flag, Value::String(value));
        }
        let scores = match &self.row.status {
            Status::Scored(s) => json!({
                "frechet": s.frechet, "kid": s.kid,
                "floor_frechet": s.floor_frechet, "floor_kid": s.floor_kid,
                "n_samples": s.n_samples,
            }),
            _ => Value::Null,
        };
        let doc = json!({
            "options": options,
            "metric": self.metric.name(),
            "scores": scores,
            "conditions": self.row.conditions,
        });
        let text =
            serde_json::to_string_pretty(&doc).map_err(|e| Error::file(path, e.to_string()))?;
        let temp = crate::csv::temp_path(path);
        let io = |what: &str, e| Error::Io {
            context: format!("{what} {}", path.display()),
            source: e,
        };
        std::fs::write(&temp, text + "\n").map_err(|e| io("writing", e))?;
        std::fs::rename(&temp, path).map_err(|e| io("replacing", e))
    }

    /// The options of the settings file at `path`, as (flag without `--`, value).
    pub fn read_options(path: &Path) -> Result<Vec<(String, String)>> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            context: format!(
                "reading the settings file {} (`dml sweep` writes it into the run directory)",
                path.display()
            ),
            source: e,
        })?;
        let doc: Value = serde_json::from_str(&text)
            .map_err(|e| Error::file(path, format!("not a settings file: {e}")))?;
        let options = doc
            .get("options")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::file(path, "not a settings file: no \"options\" object"))?;
        options
            .iter()
            .map(|(flag, value)| match (settable(flag), value.as_str()) {
                (true, Some(v)) => Ok((flag.clone(), v.to_string())),
                _ => Err(Error::file(
                    path,
                    format!(
                        "option \"{flag}\": {value}: a settings file sets only {} (as strings)",
                        Setting::OPTION_FLAGS
                            .iter()
                            .chain(FIXED_SETTABLE)
                            .copied()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            })
            .collect()
    }
}
