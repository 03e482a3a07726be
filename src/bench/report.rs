//! The results as JSON (`dml bench --json`), keyed like PyTorch's file so the two can be read
//! side by side.
use std::path::Path;

use serde_json::{json, Map, Value};

use super::{Ceilings, Row};
use crate::error::{Error, Result};

/// Writes `rows` with the run's context: device, ceilings, settings (sizes, budget) and notes
/// (load average, which memory the memory column counts).
pub fn write_json(
    path: &Path,
    device: &str,
    ceilings: &Ceilings,
    settings: Value,
    notes: &[String],
    rows: &[Row],
) -> Result<()> {
    let items: Map<String, Value> = rows
        .iter()
        .map(|r| {
            let mut item = json!({
                "time_s": r.time.as_secs_f64(),
                "bytes": r.bytes,
                "flops": r.flops,
                "over_floor": finite(r.over_floor),
                "torch_eager_ratio": r.torch_eager,
                "torch_compile_ratio": r.torch_compile,
            });
            if let (Some(images), Some(per_s)) = (r.images, r.images_per_s) {
                item["images"] = json!(images);
                item["images_per_s"] = json!(per_s);
            }
            if let Some(m) = r.memory {
                item["memory_peak_bytes"] = json!(m.peak_bytes);
                item["memory_step_bytes"] = json!(m.step_bytes);
            }
            (r.key.clone(), item)
        })
        .collect();
    let report = json!({
        "device": device,
        "engine": concat!("dalemeetslangevin ", env!("CARGO_PKG_VERSION")),
        "settings": settings,
        "notes": notes,
        "ceilings": {
            "copy_bytes_per_s": ceilings.copy_bytes_per_s,
            "gemm_flops_per_s": ceilings.gemm_flops_per_s,
        },
        "items": items,
    });
    let text = serde_json::to_string_pretty(&report)
        .map_err(|e| Error::file(path, format!("encoding results: {e}")))?;
    std::fs::write(path, text + "\n").map_err(|e| Error::file(path, e.to_string()))
}

/// JSON has no NaN: a ratio without a floor is written as null.
fn finite(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        Value::Null
    }
}
