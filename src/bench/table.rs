//! The benchmark table: time, achieved rates, and the ratio to the floor.
use std::time::Duration;

use super::Ceilings;

pub struct Row {
    pub name: String,
    pub time: Duration,
    pub gb_per_s: f64,
    pub tflop_per_s: f64,
    /// Measured time over the floor (1.0 = at the ceiling).
    pub over_floor: f64,
}

impl Row {
    pub fn new(name: &str, time: Duration, bytes: f64, flops: f64, c: &Ceilings) -> Self {
        let s = time.as_secs_f64();
        let floor = (bytes / c.copy_bytes_per_s).max(flops / c.gemm_flops_per_s);
        Row {
            name: name.to_string(),
            time,
            gb_per_s: bytes / s / 1e9,
            tflop_per_s: flops / s / 1e12,
            over_floor: if floor > 0.0 { s / floor } else { f64::NAN },
        }
    }
}

fn human(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1e3 {
        format!("{us:.1} us")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// Prints the table as Markdown, so it can be pasted into benches/RESULTS.md as it is.
pub fn print_table(rows: &[Row], c: &Ceilings) {
    println!(
        "ceilings: copy {:.1} GB/s (read + write), GEMM {:.3} TFLOP/s",
        c.copy_bytes_per_s / 1e9,
        c.gemm_flops_per_s / 1e12
    );
    println!("| item | time | GB/s | TFLOP/s | time / floor |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for r in rows {
        println!(
            "| {} | {} | {:.2} | {:.4} | {:.2} |",
            r.name,
            human(r.time),
            r.gb_per_s,
            r.tflop_per_s,
            r.over_floor
        );
    }
}
