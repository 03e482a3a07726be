//! The tables and JSON `dml profile` writes.
use std::fmt::Write as _;

use serde_json::{json, Value};

use super::roofline::{self, MODELS};
use super::{divergence, efficiency, extra_wavefronts, ItemProfile, KernelProfile};

fn percent(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{:.0}%", 100.0 * v))
}

fn micros(seconds: f64) -> String {
    format!("{:.1}", seconds * 1e6)
}

fn megabytes(bytes: f64) -> String {
    format!("{:.3}", bytes / 1e6)
}

/// One line per item: launches and the predicted time of one call on each GPU.
pub fn summary_table(items: &[ItemProfile]) -> String {
    let mut out = String::new();
    let names: Vec<String> = MODELS.iter().map(|m| format!("{} us", m.name)).collect();
    let _ = writeln!(
        out,
        "| item | launches | {} | launch overhead in it | kernel with most {} time |",
        names.join(" | "),
        MODELS[MODELS.len() - 1].name
    );
    let _ = writeln!(out, "|---|---:|{}---:|---|", "---:|".repeat(MODELS.len()));
    for item in items {
        let seconds = item.seconds();
        let last = MODELS.len() - 1;
        let top = item
            .kernels
            .iter()
            .max_by(|a, b| a.seconds[last].total_cmp(&b.seconds[last]));
        let top = top.map_or("-".to_string(), |k| {
            format!(
                "{} ({:.0}%, {})",
                k.kernel,
                100.0 * k.seconds[last] / seconds[last],
                k.limit.name()
            )
        });
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0}% | {} |",
            item.key,
            item.launches(),
            seconds.map(micros).join(" | "),
            100.0 * item.launch_seconds()[last] / seconds[last],
            top
        );
    }
    out
}

/// One item's kernels with every measure.
pub fn kernel_table(item: &ItemProfile) -> String {
    let mut out = String::new();
    let names: Vec<String> = MODELS.iter().map(|m| format!("{} us", m.name)).collect();
    let _ = writeln!(out, "{} ({} launches)\n", item.key, item.launches());
    let _ = writeln!(
        out,
        "| kernel | launches | load eff | store eff | DRAM MB | L2 MB | bank ways (max) | extra wavefronts | divergent | SIMT GFLOP | tensor GFLOP | atomics | barriers | {} | bound |",
        names.join(" | ")
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|{}---|",
        "---:|".repeat(MODELS.len())
    );
    for k in &item.kernels {
        let s = &k.stats;
        let _ =
            writeln!(
            out,
            "| {} | {} | {} | {} | {}{} | {} | {} | {} | {} | {:.4} | {:.4} | {} | {} | {} | {} |",
            k.kernel,
            k.launches,
            percent(efficiency(s.global_load_min_sectors, s.global_load_sectors)),
            percent(efficiency(s.global_store_min_sectors, s.global_store_sectors)),
            megabytes(roofline::dram_bytes(s)),
            if k.exceeds_l2 { " (>L2)" } else { "" },
            megabytes(roofline::l2_bytes(s)),
            if s.shared_ideal_wavefronts > 0 {
                s.shared_max_ways.to_string()
            } else {
                "-".to_string()
            },
            percent(extra_wavefronts(s)),
            percent(divergence(s)),
            s.simt_flops as f64 / 1e9,
            s.tensor_flops as f64 / 1e9,
            s.atomics,
            s.block_barriers,
            k.seconds.map(micros).join(" | "),
            k.limit.name()
        );
    }
    out
}

fn kernel_json(k: &KernelProfile) -> Value {
    let s = &k.stats;
    let seconds: serde_json::Map<String, Value> = MODELS
        .iter()
        .zip(k.seconds)
        .map(|(m, t)| (m.name.to_string(), json!(t)))
        .collect();
    json!({
        "kernel": k.kernel,
        "launches": k.launches,
        "predicted_seconds": seconds,
        "bound": k.limit.name(),
        "dram_exceeds_l2": k.exceeds_l2,
        "load_efficiency": efficiency(s.global_load_min_sectors, s.global_load_sectors),
        "store_efficiency": efficiency(s.global_store_min_sectors, s.global_store_sectors),
        "dram_bytes": roofline::dram_bytes(s),
        "l2_bytes": roofline::l2_bytes(s),
        "extra_wavefronts": extra_wavefronts(s),
        "divergence": divergence(s),
        "counts": {
            "global_load_requests": s.global_load_requests,
            "global_store_requests": s.global_store_requests,
            "global_load_bytes": s.global_load_bytes,
            "global_store_bytes": s.global_store_bytes,
            "global_load_sectors": s.global_load_sectors,
            "global_store_sectors": s.global_store_sectors,
            "global_load_min_sectors": s.global_load_min_sectors,
            "global_store_min_sectors": s.global_store_min_sectors,
            "dram_read_sectors": s.dram_read_sectors,
            "dram_write_sectors": s.dram_write_sectors,
            "shared_load_requests": s.shared_load_requests,
            "shared_store_requests": s.shared_store_requests,
            "shared_wavefronts": s.shared_wavefronts,
            "shared_ideal_wavefronts": s.shared_ideal_wavefronts,
            "shared_max_ways": s.shared_max_ways,
            "warp_accesses": s.warp_accesses,
            "divergent_warp_accesses": s.divergent_warp_accesses,
            "simt_flops": s.simt_flops,
            "tensor_flops": s.tensor_flops,
            "bf16_tensor_flops": s.bf16_tensor_flops,
            "atomics": s.atomics,
            "block_barriers": s.block_barriers,
            "warp_barriers": s.warp_barriers,
            "unclassified_accesses": s.unclassified_accesses,
        },
    })
}

/// Everything measured, with the model's constants and the run's settings.
pub fn to_json(items: &[ItemProfile], settings: Value) -> Value {
    json!({
        "settings": settings,
        "models": MODELS.iter().map(roofline::describe).collect::<Vec<_>>(),
        "calibrated": false,
        "items": items.iter().map(|item| {
            let seconds: serde_json::Map<String, Value> = MODELS
                .iter()
                .zip(item.seconds())
                .map(|(m, t)| (m.name.to_string(), json!(t)))
                .collect();
            json!({
                "key": item.key,
                "launches": item.launches(),
                "predicted_seconds": seconds,
                "kernels": item.kernels.iter().map(kernel_json).collect::<Vec<_>>(),
            })
        }).collect::<Vec<_>>(),
    })
}
