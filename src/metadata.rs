//! Reading back the key/value pairs that a type's `describe` writes into checkpoint metadata
//! (schedules, noise levels, the fitted log-normal initialisation): typed values, with errors that
//! name whose metadata it is and the key.
use std::str::FromStr;

use crate::error::{Error, Result};

/// The pairs of one describer (`owner` names it in errors, e.g. "schedule").
pub struct MetadataReader<'a> {
    pairs: &'a [(String, String)],
    owner: &'static str,
}

impl<'a> MetadataReader<'a> {
    pub fn new(owner: &'static str, pairs: &'a [(String, String)]) -> Self {
        Self { pairs, owner }
    }

    /// The value of `key`; missing is an error.
    pub fn text(&self, key: &str) -> Result<&'a str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| Error::invalid(format!("{} metadata lacks '{key}'", self.owner)))
    }

    /// The value of `key` parsed as `T` (`what` names the kind of value in the error).
    pub fn parse<T: FromStr>(&self, key: &str, what: &str) -> Result<T> {
        self.parse_text(key, self.text(key)?, what)
    }

    /// The comma-separated values of `key`, each parsed as `T`.
    pub fn list<T: FromStr>(&self, key: &str, what: &str) -> Result<Vec<T>> {
        let text = self.text(key)?;
        text.split(',')
            .map(|v| self.parse_text(key, v.trim(), what))
            .collect()
    }

    fn parse_text<T: FromStr>(&self, key: &str, v: &str, what: &str) -> Result<T> {
        v.parse().map_err(|_| {
            Error::invalid(format!(
                "{} metadata '{key}': '{v}' is not {what}",
                self.owner
            ))
        })
    }
}
