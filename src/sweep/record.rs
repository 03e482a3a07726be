//! sweep.csv: one row per setting tried, appended atomically as each finishes, so that a sweep
//! killed at any moment resumes by skipping the settings already in it. Every row carries the
//! conditions its score was made under (checkpoint, seed, count, classifier, ...): scores made
//! under other conditions cannot be compared, so a sweep refuses a file that holds any.
use std::path::{Path, PathBuf};

use super::setting::Setting;
use crate::csv::{append_atomically, quote, read_rows, replace, split_line};
use crate::diffusion::additive;
use crate::error::{Error, Result};

/// The record's file name in the run directory.
pub const SWEEP_CSV_FILE: &str = "sweep.csv";

const STATUS_COLUMNS: &str =
    "status,frechet,kid,floor_frechet,floor_kid,n_samples,seconds,conditions,reason";

/// The Inception distances' columns, named as in eval.csv: empty in rows scored without
/// `--inception`. Last, so that a record from before them reads as one with them empty
/// ([`read_rows`]).
const INCEPTION_COLUMNS: &str = "inception_fid,inception_kid_mean,inception_kid_std";

/// The samples' nearest training image (pixel L2, mean) and the same for test images, named as
/// in eval.csv: samples much further from every training image than test images are carry
/// pixel noise, which the classifier's features barely see. Empty in rows from before them.
const NEIGHBOUR_COLUMNS: &str = "nn_train_l2_mean,test_nn_train_l2_mean";

crate::named::value_names! {
    /// The distance a sweep minimises.
    pub enum Metric {
        Frechet = "frechet" => "Frechet distance in classifier features (as `dml eval` reports it)",
        Kid = "kid" => "kernel distance (cubic kernel, MMD^2) in classifier features",
        InceptionFid = "inception-fid" => "Inception FID (needs --inception)",
        InceptionKid = "inception-kid" => "Inception KID, the mean over its subsets (needs --inception)",
    }
}

impl Metric {
    /// Whether the metric is measured in the FID Inception's features, which only a sweep with
    /// `--inception` scores.
    pub fn needs_inception(self) -> bool {
        matches!(self, Self::InceptionFid | Self::InceptionKid)
    }
}

/// The distances `dml eval` reports for one setting's samples; the Inception ones only when the
/// sweep was given `--inception`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scores {
    pub frechet: f64,
    pub kid: f64,
    pub floor_frechet: f64,
    pub floor_kid: f64,
    pub n_samples: usize,
    pub inception_fid: Option<f64>,
    pub inception_kid_mean: Option<f64>,
    pub inception_kid_std: Option<f64>,
    pub nn_mean: Option<f64>,
    pub test_nn_mean: Option<f64>,
}

impl Scores {
    /// The value of `metric`; `None` for an Inception metric in a row scored without it.
    pub fn get(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::Frechet => Some(self.frechet),
            Metric::Kid => Some(self.kid),
            Metric::InceptionFid => self.inception_fid,
            Metric::InceptionKid => self.inception_kid_mean,
        }
    }
}

/// How trying a setting ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    Scored(Scores),
    /// The sampler's checks refused the setting before sampling (a step size beyond its bound).
    Refused(String),
    /// Sampling or scoring failed (samples that are not finite): never the best.
    Failed(String),
}

impl Status {
    fn name(&self) -> &'static str {
        match self {
            Self::Scored(_) => "scored",
            Self::Refused(_) => "refused",
            Self::Failed(_) => "failed",
        }
    }
}

/// One line of sweep.csv.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub setting: Setting,
    pub status: Status,
    pub seconds: f64,
    pub conditions: String,
}

impl Row {
    fn header() -> String {
        format!(
            "{},{STATUS_COLUMNS},{INCEPTION_COLUMNS},{NEIGHBOUR_COLUMNS}",
            Setting::CSV_COLUMNS
        )
    }

    /// The row as one CSV line; the distances as `dml eval`'s CSV writes them (`{:e}`, which
    /// reads back to the same number).
    fn to_line(&self) -> String {
        let mut fields: Vec<String> = self.setting.fields().to_vec();
        let optional = |x: Option<f64>| x.map_or_else(String::new, |v| format!("{v:e}"));
        let (scores, reason, optional_scores) = match &self.status {
            Status::Scored(s) => (
                vec![
                    format!("{:e}", s.frechet),
                    format!("{:e}", s.kid),
                    format!("{:e}", s.floor_frechet),
                    format!("{:e}", s.floor_kid),
                    s.n_samples.to_string(),
                ],
                String::new(),
                vec![
                    optional(s.inception_fid),
                    optional(s.inception_kid_mean),
                    optional(s.inception_kid_std),
                    optional(s.nn_mean),
                    optional(s.test_nn_mean),
                ],
            ),
            Status::Refused(why) | Status::Failed(why) => {
                (vec![String::new(); 5], why.clone(), vec![String::new(); 5])
            }
        };
        fields.push(self.status.name().to_string());
        fields.extend(scores);
        fields.push(format!("{:.3}", self.seconds));
        fields.push(self.conditions.clone());
        // One row a line: a multi-line error message is joined.
        fields.push(reason.replace(['\n', '\r'], " "));
        fields.extend(optional_scores);
        fields
            .iter()
            .map(|f| quote(f))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn parse(line: &str) -> Result<Self> {
        let f = split_line(line);
        // The setting's fields, then the status columns, the Inception ones and the neighbours'.
        let n = Setting::CSV_COLUMNS.split(',').count();
        let status_columns = STATUS_COLUMNS.split(',').count();
        let inception_columns = INCEPTION_COLUMNS.split(',').count();
        let expected =
            n + status_columns + inception_columns + NEIGHBOUR_COLUMNS.split(',').count();
        if f.len() != expected {
            return Err(Error::invalid(format!(
                "{} fields, expected {expected}",
                f.len()
            )));
        }
        let number = |i: usize| -> Result<f64> {
            f[n + i]
                .parse()
                .map_err(|_| Error::invalid(format!("'{}' is not a number", f[n + i])))
        };
        let inception_at = n + status_columns;
        let [inception_fid, inception_kid_mean, inception_kid_std] =
            optional_numbers(&f[inception_at..][..inception_columns], INCEPTION_COLUMNS)?;
        let [nn_mean, test_nn_mean] =
            optional_numbers(&f[inception_at + inception_columns..], NEIGHBOUR_COLUMNS)?;
        let status = match f[n].as_str() {
            "scored" => Status::Scored(Scores {
                frechet: number(1)?,
                kid: number(2)?,
                floor_frechet: number(3)?,
                floor_kid: number(4)?,
                n_samples: f[n + 5]
                    .parse()
                    .map_err(|_| Error::invalid(format!("'{}' is not a count", f[n + 5])))?,
                inception_fid,
                inception_kid_mean,
                inception_kid_std,
                nn_mean,
                test_nn_mean,
            }),
            "refused" => Status::Refused(f[n + 8].clone()),
            "failed" => Status::Failed(f[n + 8].clone()),
            other => return Err(Error::invalid(format!("unknown status '{other}'"))),
        };
        Ok(Self {
            setting: Setting::parse(&f[..n])?,
            status,
            seconds: number(6)?,
            conditions: f[n + 7].clone(),
        })
    }
}

/// The numbers of `fields`, the optional `columns` of a row: all numbers, or all empty (a row
/// scored without them: without `--inception`, or before the columns existed).
fn optional_numbers<const N: usize>(fields: &[String], columns: &str) -> Result<[Option<f64>; N]> {
    if fields.iter().all(String::is_empty) {
        return Ok([None; N]);
    }
    let mut values = [None; N];
    for (value, field) in values.iter_mut().zip(fields) {
        *value = Some(field.parse::<f64>().map_err(|_| {
            Error::invalid(format!(
                "'{field}' is not a number ({columns} are all numbers or all empty)"
            ))
        })?);
    }
    Ok(values)
}

/// The rows of one run directory's sweep.csv.
pub struct SweepRecord {
    pub path: PathBuf,
    pub rows: Vec<Row>,
}

impl SweepRecord {
    /// The record at `path` (empty when there is none), which must hold only scores made under
    /// `conditions`. A record written before settings had the additive baseline's columns, or
    /// before the Inception or neighbour columns, is rewritten in today's form (its rows keep
    /// their scores, the new columns empty).
    pub fn open(path: &Path, conditions: &str) -> Result<Self> {
        upgrade_gbm_only_record(path)?;
        let lines = read_rows(path, &Row::header())?;
        let rows = lines
            .iter()
            .enumerate()
            .map(|(i, line)| {
                Row::parse(line).map_err(|e| Error::file(path, format!("row {}: {e}", i + 1)))
            })
            .collect::<Result<Vec<Row>>>()?;
        if let Some(other) = rows.iter().find(|r| r.conditions != conditions) {
            return Err(Error::file(
                path,
                format!(
                    "holds scores made under other conditions ({}), this sweep's differ ({}): \
                     scores made differently cannot be compared; give the same options, or move \
                     the file away to start a new sweep",
                    differing(&other.conditions, conditions),
                    differing(conditions, &other.conditions)
                ),
            ));
        }
        if first_line(path).is_some_and(|h| h != Row::header()) {
            // read_rows accepted it: its header is today's without the last columns.
            eprintln!(
                "{}: adding the columns it lacks (of {INCEPTION_COLUMNS},{NEIGHBOUR_COLUMNS}) to \
                 the record",
                path.display()
            );
            replace(path, &Row::header(), &lines)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            rows,
        })
    }

    /// Whether `setting` has a row already (scored, refused or failed: trying it again would
    /// give the same, the seed being fixed).
    pub fn has(&self, setting: &Setting) -> bool {
        self.rows.iter().any(|r| r.setting == *setting)
    }

    /// Adds `row` to the file (atomically) and to the rows.
    pub fn append(&mut self, row: Row) -> Result<()> {
        append_atomically(&self.path, &Row::header(), &row.to_line())?;
        self.rows.push(row);
        Ok(())
    }
}

/// The first line of the file at `path`, if it can be read and has one.
fn first_line(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().next().map(str::to_string)
}

/// The columns of sweep.csv before settings carried `eps` and `steps_per_level` (and before the
/// Inception columns).
const GBM_ONLY_HEADER: &str = "sampler,delta_s,inner_steps,chi,kappa,init,\
    status,frechet,kid,floor_frechet,floor_kid,n_samples,seconds,conditions,reason";

/// Rewrites a record with [`GBM_ONLY_HEADER`] in today's columns, giving each row the additive
/// sampler's defaults (which did not affect its GBM samples) and empty Inception columns; any
/// other file is left as it is.
fn upgrade_gbm_only_record(path: &Path) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    if text.lines().next() != Some(GBM_ONLY_HEADER) {
        return Ok(());
    }
    let defaults = [
        additive::DEFAULT_EPS.to_string(),
        additive::DEFAULT_STEPS_PER_LEVEL.to_string(),
    ];
    let rows: Vec<String> = text
        .lines()
        .skip(1)
        .map(|line| {
            let mut f = split_line(line);
            let at = 6.min(f.len());
            f.splice(at..at, defaults.iter().cloned());
            let trailing = format!("{INCEPTION_COLUMNS},{NEIGHBOUR_COLUMNS}");
            f.extend(trailing.split(',').map(|_| String::new()));
            f.iter().map(|x| quote(x)).collect::<Vec<_>>().join(",")
        })
        .collect();
    eprintln!(
        "{}: adding the additive baseline's eps and steps_per_level columns to the record",
        path.display()
    );
    replace(path, &Row::header(), &rows)
}

/// The `key=value` parts of `conditions` that `other` does not have; a key that only `other`
/// has (`inception`, given to one sweep and not the other) as `no KEY`.
fn differing(conditions: &str, other: &str) -> String {
    let key = |part: &str| part.split('=').next().unwrap_or_default().to_string();
    let ours: Vec<&str> = conditions.split(';').collect();
    let theirs: Vec<&str> = other.split(';').collect();
    let our_keys: Vec<String> = ours.iter().map(|p| key(p)).collect();
    let changed = ours
        .iter()
        .filter(|part| !theirs.contains(part))
        .map(|p| p.to_string());
    let missing = theirs
        .iter()
        .map(|p| key(p))
        .filter(|k| !our_keys.contains(k))
        .map(|k| format!("no {k}"));
    changed.chain(missing).collect::<Vec<_>>().join(";")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::samplers::SamplerKind;
    use crate::generate::InitKind;

    #[test]
    fn rows_read_back_as_written() {
        let setting = Setting {
            sampler: SamplerKind::Asams,
            delta_s: 3e-4,
            inner_steps: 3,
            chi: 0.995,
            kappa: 1.0,
            init: InitKind::ClassAverage,
            eps: 2e-5,
            steps_per_level: 100,
        };
        let scores = Scores {
            frechet: 1.0 / 3.0,
            kid: 2e-5,
            floor_frechet: 0.1,
            floor_kid: -1e-6,
            n_samples: 8,
            inception_fid: None,
            inception_kid_mean: None,
            inception_kid_std: None,
            nn_mean: None,
            test_nn_mean: None,
        };
        let with_inception = Scores {
            inception_fid: Some(116.15 / 7.0),
            inception_kid_mean: Some(-3e-4),
            inception_kid_std: Some(1.0 / 3.0),
            nn_mean: Some(5.778),
            test_nn_mean: Some(1.0 / 7.0),
            ..scores
        };
        let statuses = [
            Status::Scored(scores),
            Status::Scored(with_inception),
            Status::Refused("delta_s too big, \"see\" SPEC".into()),
            Status::Failed("NaN".into()),
        ];
        for status in statuses {
            let row = Row {
                setting,
                status,
                seconds: 1.5,
                conditions: "seed=0;count=8".into(),
            };
            assert_eq!(Row::parse(&row.to_line()).unwrap(), row);
        }
    }

    #[test]
    fn a_record_from_before_the_additive_columns_is_upgraded_with_its_scores() {
        let dir = std::env::temp_dir().join(format!("dml-sweep-upgrade-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(SWEEP_CSV_FILE);
        let old_row = "adls,0.01,2,1,1,lognormal,scored,8.9e1,4.9e0,5.2e0,-2.5e-1,128,60.000,\
            \"seed=0;count=128\",";
        std::fs::write(&path, format!("{GBM_ONLY_HEADER}\n{old_row}\n")).unwrap();
        let record = SweepRecord::open(&path, "seed=0;count=128").unwrap();
        assert_eq!(record.rows.len(), 1);
        let row = &record.rows[0];
        assert_eq!((row.setting.delta_s, row.setting.inner_steps), (0.01, 2));
        assert_eq!(row.setting.eps, additive::DEFAULT_EPS);
        let Status::Scored(scores) = &row.status else {
            panic!("{row:?}");
        };
        assert_eq!((scores.frechet, scores.n_samples), (89.0, 128));
        assert_eq!(scores.get(Metric::InceptionFid), None);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(&Row::header()), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_record_from_before_the_inception_columns_is_upgraded_with_its_scores() {
        let dir = std::env::temp_dir().join(format!("dml-sweep-inception-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(SWEEP_CSV_FILE);
        let old_header = format!("{},{STATUS_COLUMNS}", Setting::CSV_COLUMNS);
        let scored = "adls,0.01,2,1,1,lognormal,0.00002,100,scored,8.9e1,4.9e0,5.2e0,-2.5e-1,\
            128,60.000,\"seed=0;count=128\",";
        let refused = "adls,1000000,2,1,1,lognormal,0.00002,100,refused,,,,,,0.001,\
            \"seed=0;count=128\",beyond the bound";
        std::fs::write(&path, format!("{old_header}\n{scored}\n{refused}\n")).unwrap();
        let record = SweepRecord::open(&path, "seed=0;count=128").unwrap();
        assert_eq!(record.rows.len(), 2);
        let Status::Scored(scores) = &record.rows[0].status else {
            panic!("{:?}", record.rows[0]);
        };
        assert_eq!(
            (scores.frechet, scores.kid, scores.n_samples),
            (89.0, 4.9, 128)
        );
        assert_eq!(
            (
                scores.inception_fid,
                scores.inception_kid_mean,
                scores.inception_kid_std
            ),
            (None, None, None)
        );
        assert_eq!(scores.get(Metric::Frechet), Some(89.0));
        assert_eq!(scores.get(Metric::InceptionKid), None);
        assert_eq!(
            record.rows[1].status,
            Status::Refused("beyond the bound".into())
        );
        // Rewritten in today's form on opening, each row with five empty columns more (the
        // Inception and neighbour columns).
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!("{}\n{scored},,,,,\n{refused},,,,,\n", Row::header())
        );
        assert!(Row::header().ends_with(&format!("{INCEPTION_COLUMNS},{NEIGHBOUR_COLUMNS}")));
        // Opening again reads the same rows and leaves the file as it is.
        let again = SweepRecord::open(&path, "seed=0;count=128").unwrap();
        assert_eq!(again.rows, record.rows);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn optional_columns_are_all_numbers_or_all_empty() {
        let empty = vec![String::new(); 3];
        assert_eq!(
            optional_numbers(&empty, INCEPTION_COLUMNS).unwrap(),
            [None; 3]
        );
        let full: Vec<String> = ["1.5e1", "2e-3", "1e-4"].map(String::from).to_vec();
        assert_eq!(
            optional_numbers(&full, INCEPTION_COLUMNS).unwrap(),
            [Some(15.0), Some(2e-3), Some(1e-4)]
        );
        let partial: Vec<String> = ["1.5e1", "", "1e-4"].map(String::from).to_vec();
        let e = optional_numbers::<3>(&partial, INCEPTION_COLUMNS)
            .unwrap_err()
            .to_string();
        assert!(e.contains("all numbers or all empty"), "{e}");
    }

    #[test]
    fn conditions_with_and_without_inception_name_what_differs() {
        let without = "seed=0;data=shapes;max_reference=6";
        let with = "seed=0;data=shapes;max_reference=6;inception=w.safetensors";
        assert_eq!(differing(with, without), "inception=w.safetensors");
        assert_eq!(differing(without, with), "no inception");
        assert_eq!(differing("seed=7;count=4", "seed=0;count=4"), "seed=7");
    }
}
