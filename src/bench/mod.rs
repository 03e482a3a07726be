//! Measured throughput: each item is timed on the chosen device and compared with the
//! floor its work allows (bytes over measured copy bandwidth, FLOPs over measured GEMM rate) and
//! with PyTorch's time for the same work. Item keys and the byte and FLOP counting conventions
//! are reference/BENCH.md's, so the two sides line up key by key. Goals are recorded in
//! benches/RESULTS.md, never asserted.
//!
//! Items come in families (`items_*.rs`, one kind of work each) listed by [`registry`]. An item
//! knows its key and counts without allocating anything; its inputs are made by
//! [`Item::prepare`] just before it is timed and freed right after, outside the timed closure.
mod ceilings;
mod items_conv;
mod items_elementwise;
mod items_gbm;
mod items_inception;
mod items_norm;
mod items_sampler;
mod items_train;
mod network_trace;
mod registry;
mod report;
mod rotation;
mod table;
mod torch;

pub use ceilings::{measure_ceilings, Ceilings};
pub use network_trace::{launch_counts, ConvShape, LaunchCounts, NetworkTrace, NormShape};
pub use registry::{families, select, Family};
pub use report::write_json;
pub use table::{markdown_table, Row};
pub use torch::{TorchItem, TorchResults};

use std::time::{Duration, Instant};

use crate::device::Device;
use crate::error::Result;
use crate::ops::ConvPrecision;
use crate::tensor::memory;

/// The sizes every family builds its items for.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub device: Device,
    /// Batch of the conv, norm and training items (BENCH.md: 8).
    pub batch: usize,
    /// Batch of the sampler steps (BENCH.md: 1000 on a GPU, 16 on a host).
    pub sampler_batch: usize,
    /// Images of 28x28 per tensor of the element-wise, Dale-step and M-DSM items (BENCH.md
    /// `--elementwise-batch`: 1000).
    pub elementwise_images: usize,
    /// Grey 28x28 images per call of the FID Inception item (BENCH.md `--inception-batch`: 16).
    pub inception_batch: usize,
    /// The forward convolutions' arithmetic in the conv, train and sampler items (BENCH.md and
    /// PyTorch's results: fp32).
    pub precision: ConvPrecision,
}

impl BenchConfig {
    /// BENCH.md's default sizes on `device`.
    pub fn defaults(device: &Device) -> Self {
        Self {
            device: device.clone(),
            batch: 8,
            sampler_batch: default_sampler_batch(device),
            elementwise_images: 1000,
            inception_batch: DEFAULT_INCEPTION_BATCH,
            precision: ConvPrecision::Fp32,
        }
    }
}

impl BenchConfig {
    /// The sizes and precision, as the JSON reports of `dml bench` and `dml profile` record them.
    pub fn settings_json(&self) -> serde_json::Value {
        serde_json::json!({
            "batch": self.batch,
            "sampler_batch": self.sampler_batch,
            "elementwise_batch": self.elementwise_images,
            "inception_batch": self.inception_batch,
            "conv_precision": self.precision.name(),
        })
    }
}

/// BENCH.md's batch of the FID Inception item, on every device: 16 images.
pub const DEFAULT_INCEPTION_BATCH: usize = 16;

/// BENCH.md's sampler batch: 1000 images on a GPU, 16 on the host.
pub fn default_sampler_batch(device: &Device) -> usize {
    if device.is_host() {
        16
    } else {
        1000
    }
}

/// One timed call, its inputs already made.
pub type Run = Box<dyn FnMut() -> Result<()>>;

/// One thing to time: its key, its work in bytes and FLOPs (BENCH.md's conventions), and how to
/// make its inputs and the call that does the work once.
pub struct Item {
    pub key: String,
    pub bytes: f64,
    pub flops: f64,
    /// Whether the table reports the item's peak memory (the network items).
    pub reports_memory: bool,
    /// Images one call processes, for items whose throughput is read in images/s.
    pub images: Option<usize>,
    prepare: Box<dyn Fn() -> Result<Run>>,
}

impl Item {
    pub fn new(
        key: String,
        bytes: f64,
        flops: f64,
        prepare: impl Fn() -> Result<Run> + 'static,
    ) -> Self {
        Self {
            key,
            bytes,
            flops,
            reports_memory: false,
            images: None,
            prepare: Box::new(prepare),
        }
    }

    /// The same item with its peak memory reported.
    pub fn with_memory(mut self) -> Self {
        self.reports_memory = true;
        self
    }

    /// The same item with its throughput also reported in images/s, `images` per call.
    pub fn with_images(mut self, images: usize) -> Self {
        self.images = Some(images);
        self
    }

    /// Makes the inputs (untimed) and returns the call to time.
    pub fn prepare(&self) -> Result<Run> {
        (self.prepare)()
    }
}

/// Bytes held by tensors during one call: the most at any moment (everything alive included:
/// parameters, optimiser state, inputs) and how far that rose above what was alive before it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeakMemory {
    pub peak_bytes: usize,
    pub step_bytes: usize,
}

/// What timing one item measured.
pub struct Measurement {
    pub time: Duration,
    pub memory: Option<PeakMemory>,
}

/// Median wall time of `run` over repeats after warm-up, with the device synchronised around
/// each repeat so asynchronous GPU work is counted. Stops after `budget` once 3 repeats are in.
pub fn time_median(
    device: &Device,
    run: &mut dyn FnMut() -> Result<()>,
    budget: Duration,
) -> Result<Duration> {
    let warm_up = Instant::now();
    for _ in 0..WARM_UP_CALLS {
        run()?;
    }
    device.synchronize()?;
    if matches!(device, Device::Cuda(_)) {
        while warm_up.elapsed() < GPU_WARM_UP {
            run()?;
            device.synchronize()?;
        }
    }
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < 3 || (start.elapsed() < budget && times.len() < MAX_REPEATS) {
        let t = Instant::now();
        run()?;
        device.synchronize()?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// Warm-up calls before timing (BENCH.md: 2, as the PyTorch side).
const WARM_UP_CALLS: usize = 2;
/// On a GPU the warm-up also lasts this long: an idle GPU's clocks take a while to rise (an H200
/// idles at 345 MHz against 1980 MHz boost). On the first H200 run the first two items, timed
/// right after the host-side GEMM ceiling had left the GPU idle, took 127 us where the third,
/// moving more bytes, took 22 us (clocks being the likely cause, not yet confirmed).
const GPU_WARM_UP: Duration = Duration::from_millis(200);
/// BENCH.md: at most 500 repeats.
const MAX_REPEATS: usize = 500;

/// The tensor bytes one call of `run` holds at its peak (see [`crate::tensor::memory`]).
pub fn peak_memory(device: &Device, run: &mut dyn FnMut() -> Result<()>) -> Result<PeakMemory> {
    device.synchronize()?;
    let before = memory::live_bytes();
    let (ran, step_bytes) = memory::high_water(|| run().and_then(|()| device.synchronize()));
    ran?;
    Ok(PeakMemory {
        peak_bytes: before + step_bytes,
        step_bytes,
    })
}

/// Prepares `item`, times it and, when it reports memory, measures one more call's peak.
pub fn measure(item: &Item, device: &Device, budget: Duration) -> Result<Measurement> {
    let mut run = item.prepare()?;
    let time = time_median(device, &mut run, budget)?;
    let memory = if item.reports_memory {
        Some(peak_memory(device, &mut run)?)
    } else {
        None
    };
    Ok(Measurement { time, memory })
}
