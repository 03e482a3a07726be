//! One sampler setting of a sweep, and the grid of them.
use crate::diffusion::samplers::SamplerKind;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::generate::InitKind;

/// The values a sweep varies; the other sampler options are fixed for the whole sweep. The
/// first six are the GBM samplers' (SPEC 4), the last two the additive baseline's annealed
/// Langevin (SPEC 8); a sweep varies only those of its checkpoint's diffusion, the others keep
/// one value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Setting {
    pub sampler: SamplerKind,
    pub delta_s: f32,
    pub inner_steps: usize,
    pub chi: f32,
    pub kappa: f32,
    pub init: InitKind,
    pub eps: f32,
    pub steps_per_level: usize,
}

/// The number of fields of a setting.
const FIELDS: usize = 8;

impl Setting {
    /// The columns [`Self::fields`] fill, in order.
    pub const CSV_COLUMNS: &'static str =
        "sampler,delta_s,inner_steps,chi,kappa,init,eps,steps_per_level";

    /// The values as written (`f32`'s shortest form, which parses back to the same number).
    pub fn fields(&self) -> [String; FIELDS] {
        [
            self.sampler.name().to_string(),
            self.delta_s.to_string(),
            self.inner_steps.to_string(),
            self.chi.to_string(),
            self.kappa.to_string(),
            self.init.name().to_string(),
            self.eps.to_string(),
            self.steps_per_level.to_string(),
        ]
    }

    /// The setting whose [`Self::fields`] are `fields`.
    pub fn parse(fields: &[String]) -> Result<Self> {
        if fields.len() < FIELDS {
            return Err(Error::invalid(format!(
                "a setting has {FIELDS} fields ({}), found {}",
                Self::CSV_COLUMNS,
                fields.len()
            )));
        }
        Ok(Self {
            sampler: crate::named::parse(&fields[0], "sampler")?,
            delta_s: number(&fields[1], "delta_s")?,
            inner_steps: number(&fields[2], "inner_steps")?,
            chi: number(&fields[3], "chi")?,
            kappa: number(&fields[4], "kappa")?,
            init: crate::named::parse(&fields[5], "init")?,
            eps: number(&fields[6], "eps")?,
            steps_per_level: number(&fields[7], "steps_per_level")?,
        })
    }

    /// The `sample`/`eval` options (without `--`) of [`Self::fields`], in order.
    pub const OPTION_FLAGS: [&'static str; FIELDS] = [
        "sampler",
        "delta-s",
        "inner-steps",
        "chi",
        "kappa",
        "init",
        "eps",
        "steps-per-level",
    ];

    /// The setting as `sample`/`eval` options: (flag without `--`, value).
    pub fn options(&self) -> Vec<(String, String)> {
        Self::OPTION_FLAGS
            .iter()
            .map(|f| f.to_string())
            .zip(self.fields())
            .collect()
    }

    /// One line for progress output: the options of the sampler that `additive` names.
    pub fn describe(&self, additive: bool) -> String {
        match additive {
            true => format!(
                "annealed Langevin eps {} T {}",
                self.eps, self.steps_per_level
            ),
            false => format!(
                "{} delta_s {} L {} chi {} kappa {} init {}",
                self.sampler, self.delta_s, self.inner_steps, self.chi, self.kappa, self.init
            ),
        }
    }

    /// The step size a sweep's plot puts on its x axis: eps for the additive baseline,
    /// delta_s otherwise.
    pub fn step_size(&self, additive: bool) -> f32 {
        match additive {
            true => self.eps,
            false => self.delta_s,
        }
    }

    /// The setting with its step size left out: the settings a line of the plot joins.
    pub fn without_step_size(&self) -> Self {
        Self {
            delta_s: 0.0,
            eps: 0.0,
            ..*self
        }
    }
}

fn number<T: FromStr>(field: &str, what: &str) -> Result<T> {
    field
        .parse()
        .map_err(|_| Error::invalid(format!("{what} '{field}' is not a number of its kind")))
}

/// The axes of a grid search: every combination of their values is a setting.
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    pub sampler: Vec<SamplerKind>,
    pub delta_s: Vec<f32>,
    pub inner_steps: Vec<usize>,
    pub chi: Vec<f32>,
    pub kappa: Vec<f32>,
    pub init: Vec<InitKind>,
    pub eps: Vec<f32>,
    pub steps_per_level: Vec<usize>,
}

impl Grid {
    /// Every setting, the step sizes (`delta_s`, `eps`) varying fastest (so a plot's lines fill
    /// in one at a time), each once (a value repeated on an axis is dropped).
    pub fn settings(&self) -> Vec<Setting> {
        let mut all = Vec::new();
        for &sampler in &self.sampler {
            for &init in &self.init {
                for &kappa in &self.kappa {
                    for &chi in &self.chi {
                        for &inner_steps in &self.inner_steps {
                            for &steps_per_level in &self.steps_per_level {
                                for &delta_s in &self.delta_s {
                                    for &eps in &self.eps {
                                        let s = Setting {
                                            sampler,
                                            delta_s,
                                            inner_steps,
                                            chi,
                                            kappa,
                                            init,
                                            eps,
                                            steps_per_level,
                                        };
                                        if !all.contains(&s) {
                                            all.push(s);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grid_has_every_combination_once_and_fields_parse_back() {
        let grid = Grid {
            sampler: vec![SamplerKind::Adls, SamplerKind::Asams],
            delta_s: vec![1e-4, 3e-4, 1e-4],
            inner_steps: vec![1, 3],
            chi: vec![0.995],
            kappa: vec![1.0],
            init: vec![InitKind::LogNormal],
            eps: vec![2e-5],
            steps_per_level: vec![100, 30],
        };
        let settings = grid.settings();
        assert_eq!(settings.len(), 16);
        assert_eq!(settings[1].delta_s, 3e-4);
        for s in settings {
            assert_eq!(Setting::parse(&s.fields()).unwrap(), s);
        }
    }
}
