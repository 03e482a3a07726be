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

/// The scored row with the smallest finite `metric`, if any (refused and failed rows never, nor
/// rows without the metric: an Inception metric in a row scored without `--inception`).
pub fn best_row(rows: &[Row], metric: Metric) -> Option<&Row> {
    rows.iter()
        .filter_map(|r| match &r.status {
            Status::Scored(s) => s.get(metric).filter(|v| v.is_finite()).map(|v| (r, v)),
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
            Status::Scored(s) => {
                let mut scores = json!({
                    "frechet": s.frechet, "kid": s.kid,
                    "floor_frechet": s.floor_frechet, "floor_kid": s.floor_kid,
                    "n_samples": s.n_samples,
                });
                // The Inception distances when the sweep scored them (named as in sweep.csv).
                let inception = [
                    ("inception_fid", s.inception_fid),
                    ("inception_kid_mean", s.inception_kid_mean),
                    ("inception_kid_std", s.inception_kid_std),
                ];
                for (name, value) in inception {
                    if let (Some(v), Some(map)) = (value, scores.as_object_mut()) {
                        map.insert(name.to_string(), json!(v));
                    }
                }
                scores
            }
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::diffusion::samplers::SamplerKind;
    use crate::generate::InitKind;
    use crate::sweep::Scores;

    /// A row of delta_s `delta_s` scored `frechet`, with Inception FID and KID when given.
    pub(in crate::sweep) fn row(delta_s: f32, frechet: f64, inception: Option<(f64, f64)>) -> Row {
        Row {
            setting: Setting {
                sampler: SamplerKind::Adls,
                delta_s,
                inner_steps: 3,
                chi: 0.995,
                kappa: 1.0,
                init: InitKind::LogNormal,
                eps: 2e-5,
                steps_per_level: 100,
            },
            status: Status::Scored(Scores {
                frechet,
                kid: frechet / 10.0,
                floor_frechet: 1.0,
                floor_kid: 0.0,
                n_samples: 4,
                inception_fid: inception.map(|i| i.0),
                inception_kid_mean: inception.map(|i| i.1),
                inception_kid_std: inception.map(|_| 0.5),
                nn_mean: Some(3.5),
                test_nn_mean: Some(3.6),
            }),
            seconds: 1.0,
            conditions: String::new(),
        }
    }

    #[test]
    fn the_best_row_is_chosen_by_the_metric_and_its_file_carries_the_inception_numbers() {
        let rows = [
            row(1e-3, 10.0, Some((300.0, 0.2))),
            row(2e-3, 20.0, Some((100.0, 0.3))),
            row(3e-3, 30.0, Some((200.0, 0.1))),
            // Least of all by Inception FID, but not finite: never the best.
            row(4e-3, 40.0, Some((f64::NAN, f64::NAN))),
            Row {
                status: Status::Failed("NaN".into()),
                ..row(5e-3, 0.0, Some((0.0, 0.0)))
            },
        ];
        let best = |metric| best_row(&rows, metric).unwrap().setting.delta_s;
        assert_eq!(best(Metric::Frechet), 1e-3);
        assert_eq!(best(Metric::Kid), 1e-3);
        assert_eq!(best(Metric::InceptionFid), 2e-3);
        assert_eq!(best(Metric::InceptionKid), 3e-3);
        // Rows scored without --inception have no Inception metric: no best by it.
        let plain = [row(1e-3, 10.0, None)];
        assert!(best_row(&plain, Metric::InceptionFid).is_none());
        assert!(best_row(&plain, Metric::Frechet).is_some());

        let dir = std::env::temp_dir().join(format!("dml-best-inception-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(BEST_SETTINGS_FILE);
        let write = |row, metric| {
            BestSettings {
                row,
                metric,
                fixed: vec![],
            }
            .write(&path)
            .unwrap();
            serde_json::from_str::<Value>(&std::fs::read_to_string(&path).unwrap()).unwrap()
        };
        let doc = write(&rows[1], Metric::InceptionFid);
        assert_eq!(doc["metric"], "inception-fid");
        assert_eq!(doc["options"]["delta-s"], "0.002");
        assert_eq!(doc["scores"]["inception_fid"], 100.0);
        assert_eq!(doc["scores"]["inception_kid_mean"], 0.3);
        assert_eq!(doc["scores"]["inception_kid_std"], 0.5);
        // Without Inception numbers the file has no Inception keys.
        let doc = write(&plain[0], Metric::Frechet);
        assert_eq!(doc["metric"], "frechet");
        assert!(doc["scores"].get("inception_fid").is_none(), "{doc}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
