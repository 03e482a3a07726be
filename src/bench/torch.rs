//! PyTorch's timings of the same items (reference/bench_torch.py's JSON, format in BENCH.md), for
//! the ours/theirs columns.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::Ceilings;
use crate::error::{Error, Result};

/// One item as PyTorch ran it.
#[derive(Clone, Debug, PartialEq)]
pub struct TorchItem {
    pub eager_s: Option<f64>,
    /// None when the item was not compiled (convolutions, CPU runs) or compilation failed.
    pub compile_s: Option<f64>,
    pub bytes: f64,
    pub flops: f64,
}

pub struct TorchResults {
    pub path: PathBuf,
    /// E.g. "cpu (2 cores)".
    pub device: String,
    pub torch_version: String,
    pub ceilings: Option<Ceilings>,
    pub notes: Vec<String>,
    pub items: HashMap<String, TorchItem>,
}

impl TorchResults {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e.to_string()))?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| Error::file(path, format!("not PyTorch benchmark JSON: {e}")))?;
        let items = json
            .get("items")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::file(path, "no \"items\" object (see reference/BENCH.md)"))?
            .iter()
            .map(|(key, v)| {
                Ok((
                    key.clone(),
                    parse_item(v).map_err(|m| Error::file(path, format!("item {key}: {m}")))?,
                ))
            })
            .collect::<Result<HashMap<_, _>>>()?;
        let text_of = |k: &str| {
            json.get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let ceilings = json.get("ceilings").and_then(|c| {
            Some(Ceilings {
                copy_bytes_per_s: c.get("copy_bytes_per_s")?.as_f64()?,
                gemm_flops_per_s: c.get("gemm_flops_per_s")?.as_f64()?,
            })
        });
        let notes = json
            .get("notes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            path: path.to_path_buf(),
            device: text_of("device"),
            torch_version: text_of("torch"),
            ceilings,
            notes,
            items,
        })
    }

    pub fn get(&self, key: &str) -> Option<&TorchItem> {
        self.items.get(key)
    }
}

fn parse_item(v: &Value) -> std::result::Result<TorchItem, String> {
    let number = |k: &str| v.get(k).and_then(Value::as_f64);
    Ok(TorchItem {
        eager_s: number("eager_s"),
        compile_s: number("compile_s"),
        bytes: number("bytes").ok_or("no \"bytes\"")?,
        flops: number("flops").ok_or("no \"flops\"")?,
    })
}
