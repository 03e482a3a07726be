//! `dml bench`: one table of kernel and end-to-end throughput on the chosen device.
use std::time::Duration;

use clap::Args;

use crate::bench::{self, Item};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Elements per tensor for the element-wise items (default: 1000 images of 28x28).
    #[arg(long, default_value_t = 1000 * 28 * 28)]
    pub elements: usize,
    /// Time spent on each item, in milliseconds (at least 3 repeats are always timed).
    #[arg(long, default_value_t = 500)]
    pub budget_ms: u64,
    /// Only items whose name contains this text.
    #[arg(long)]
    pub filter: Option<String>,
}

pub fn run(device: &Device, args: &BenchArgs) -> Result<()> {
    if matches!(device, Device::Emu(_)) {
        return Err(Error::invalid(
            "bench times real hardware: use --device cpu or --device cuda (the emulator is for correctness)",
        ));
    }
    let budget = Duration::from_millis(args.budget_ms);
    println!("device: {device}");
    let ceilings = bench::measure_ceilings(device, budget)?;
    let n = args.elements;
    let x = ops::scale(&ops::normal(&[n], 1, 0, 0, device)?, 0.5, 1.5)?;
    let y = ops::normal(&[n], 2, 0, 0, device)?;
    let f = 4.0 * n as f64;
    let mut items: Vec<Item<'_>> = vec![
        Item {
            name: format!("copy ({n})"),
            bytes: 2.0 * f,
            flops: 0.0,
            run: Box::new(|| ops::copy(&x).map(drop)),
        },
        Item {
            name: format!("exp ({n})"),
            bytes: 2.0 * f,
            flops: 0.0,
            run: Box::new(|| ops::exp(&x).map(drop)),
        },
        Item {
            name: format!("add ({n})"),
            bytes: 3.0 * f,
            flops: n as f64,
            run: Box::new(|| ops::add(&x, &y).map(drop)),
        },
        Item {
            name: format!("sum ({n})"),
            bytes: f,
            flops: n as f64,
            run: Box::new(|| ops::sum(&x).map(drop)),
        },
        Item {
            name: format!("philox normals ({n})"),
            bytes: f,
            flops: 0.0,
            run: Box::new(|| ops::normal(&[n], 3, 0, 0, device).map(drop)),
        },
    ];
    if let Some(filter) = &args.filter {
        items.retain(|i| i.name.contains(filter.as_str()));
    }
    let rows = bench::run_items(device, items, &ceilings, budget)?;
    bench::print_table(&rows, &ceilings);
    Ok(())
}
