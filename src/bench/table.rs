//! The benchmark table: time, achieved rates, the ratio to the floor, peak memory, and the
//! ratios to PyTorch's times for the same key.
use std::fmt::Write as _;
use std::time::Duration;

use super::torch::TorchItem;
use super::{Ceilings, Item, Measurement, PeakMemory};

pub struct Row {
    pub key: String,
    pub time: Duration,
    pub bytes: f64,
    pub flops: f64,
    pub gb_per_s: f64,
    pub flop_per_s: f64,
    /// Measured time over the floor (1.0 = at the ceiling).
    pub over_floor: f64,
    pub memory: Option<PeakMemory>,
    /// Images per call and per second, for items read in images/s.
    pub images: Option<usize>,
    pub images_per_s: Option<f64>,
    /// PyTorch's images per second for the same key: eager, torch.compile.
    pub torch_images_per_s: [Option<f64>; 2],
    /// Our time over PyTorch's eager time for the same key (< 1: we are faster).
    pub torch_eager: Option<f64>,
    /// Our time over PyTorch's torch.compile time.
    pub torch_compile: Option<f64>,
}

impl Row {
    pub fn new(item: &Item, m: &Measurement, c: &Ceilings, torch: Option<&TorchItem>) -> Self {
        let s = m.time.as_secs_f64();
        let floor = (item.bytes / c.copy_bytes_per_s).max(item.flops / c.gemm_flops_per_s);
        let ratio = |theirs: Option<f64>| theirs.filter(|t| *t > 0.0).map(|t| s / t);
        let per_s = |t: Option<f64>| {
            let images = item.images? as f64;
            t.filter(|t| *t > 0.0).map(|t| images / t)
        };
        Row {
            key: item.key.clone(),
            time: m.time,
            bytes: item.bytes,
            flops: item.flops,
            gb_per_s: item.bytes / s / 1e9,
            flop_per_s: item.flops / s,
            over_floor: if floor > 0.0 { s / floor } else { f64::NAN },
            memory: m.memory,
            images: item.images,
            images_per_s: per_s(Some(s)),
            torch_images_per_s: [
                per_s(torch.and_then(|t| t.eager_s)),
                per_s(torch.and_then(|t| t.compile_s)),
            ],
            torch_eager: ratio(torch.and_then(|t| t.eager_s)),
            torch_compile: ratio(torch.and_then(|t| t.compile_s)),
        }
    }
}

fn human_time(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1e3 {
        format!("{us:.1} us")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

fn human_bytes(b: usize) -> String {
    let mib = b as f64 / (1024.0 * 1024.0);
    if mib >= 1024.0 {
        format!("{:.2} GiB", mib / 1024.0)
    } else {
        format!("{mib:.1} MiB")
    }
}

fn or_dash(v: Option<f64>) -> String {
    v.map_or("—".to_string(), |r| format!("{r:.2}"))
}

fn images_or_dash(v: Option<f64>) -> String {
    v.map_or("—".to_string(), |r| format!("{r:.1}"))
}

/// The table as Markdown (so it can be pasted into benches/RESULTS.md as it is). FLOP rates in
/// TFLOP/s on a GPU, GFLOP/s on a host (`tera`). Items read in images/s (the FID Inception's
/// features) follow in a second table with PyTorch's images/s beside ours.
pub fn markdown_table(rows: &[Row], c: &Ceilings, tera: bool) -> String {
    let (unit, scale) = if tera {
        ("TFLOP/s", 1e12)
    } else {
        ("GFLOP/s", 1e9)
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ceilings: copy {:.1} GB/s (read + write), GEMM {:.1} GFLOP/s\n",
        c.copy_bytes_per_s / 1e9,
        c.gemm_flops_per_s / 1e9
    );
    let _ = writeln!(
        out,
        "| item | time | GB/s | {unit} | x floor | memory (tensor peak) | / torch eager | / torch compile |"
    );
    let _ = writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for r in rows {
        let memory = r
            .memory
            .map_or("—".to_string(), |m| human_bytes(m.peak_bytes));
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
            r.key,
            human_time(r.time),
            r.gb_per_s,
            r.flop_per_s / scale,
            r.over_floor,
            memory,
            or_dash(r.torch_eager),
            or_dash(r.torch_compile)
        );
    }
    let per_image: Vec<&Row> = rows.iter().filter(|r| r.images.is_some()).collect();
    if !per_image.is_empty() {
        let _ = writeln!(
            out,
            "\n| item | images per call | images/s | torch eager images/s | torch compile images/s |"
        );
        let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: |");
        for r in per_image {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                r.key,
                r.images.unwrap_or(0),
                images_or_dash(r.images_per_s),
                images_or_dash(r.torch_images_per_s[0]),
                images_or_dash(r.torch_images_per_s[1])
            );
        }
    }
    out
}
