//! Measured throughput (issue 6): each item is timed on the chosen device and compared with the
//! floor its work allows (bytes over measured copy bandwidth, FLOPs over measured GEMM rate; see
//! the device README's METHOD.md). Goals are recorded in benches/RESULTS.md, never asserted.
mod ceilings;
mod table;

pub use ceilings::{measure_ceilings, Ceilings};
pub use table::{print_table, Row};

use std::time::{Duration, Instant};

use crate::device::Device;
use crate::error::Result;

/// One thing to time: its work in bytes and FLOPs, and a closure that does it once.
pub struct Item<'a> {
    pub name: String,
    pub bytes: f64,
    pub flops: f64,
    pub run: Box<dyn FnMut() -> Result<()> + 'a>,
}

/// Median wall time of `run` over repeats after warm-up, with the device synchronised around
/// each repeat so asynchronous GPU work is counted. Stops after `budget` once 3 repeats are in.
pub fn time_median(
    device: &Device,
    run: &mut dyn FnMut() -> Result<()>,
    budget: Duration,
) -> Result<Duration> {
    run()?;
    device.synchronize()?;
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < 3 || (start.elapsed() < budget && times.len() < 200) {
        let t = Instant::now();
        run()?;
        device.synchronize()?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// Times every item and returns the table rows.
pub fn run_items(
    device: &Device,
    items: Vec<Item<'_>>,
    ceilings: &Ceilings,
    budget: Duration,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for mut item in items {
        let t = time_median(device, &mut item.run, budget)?;
        rows.push(Row::new(&item.name, t, item.bytes, item.flops, ceilings));
    }
    Ok(rows)
}
