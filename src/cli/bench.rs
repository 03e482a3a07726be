//! `dml bench`: one table of kernel and end-to-end throughput on the chosen device, item keys and
//! counts as reference/BENCH.md fixes them, with ratios to PyTorch's times for the same keys.
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde_json::json;

use crate::bench::{self, BenchConfig, Row, TorchResults};
use crate::device::{Device, EmuSchedule};
use crate::error::{Error, Result};
use crate::memory_budget;
use crate::nn::Preset;
use crate::ops::ConvPrecision;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Only these items: comma-separated key prefixes (`conv_fwd`, `train_step/paper`) or family
    /// names (elementwise, conv, norm, gbm, sampler, train, ddpmpp, inception). Default: every item.
    #[arg(long, value_delimiter = ',')]
    pub items: Vec<String>,
    /// A short run: 50 ms per item and small sampler and Inception batches (keys then differ from
    /// PyTorch's).
    #[arg(long)]
    pub quick: bool,
    /// Batch of the conv, norm and training items.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Batch of the sampler steps (default: 1000 on cuda, 16 on cpu; 4 with --quick).
    #[arg(long)]
    pub sampler_batch: Option<usize>,
    /// Images of 28x28 per tensor of the element-wise, Dale-step and M-DSM items.
    #[arg(long, default_value_t = 1000)]
    pub elementwise_batch: usize,
    /// Grey 28x28 images per call of the FID Inception item (default: 16; 4 with --quick).
    #[arg(long)]
    pub inception_batch: Option<usize>,
    /// Arithmetic of the convolutions (all three passes) in the conv, train and sampler items;
    /// compare with PyTorch's run in the same arithmetic (reference/bench_torch.py: fp32 by
    /// default, --tf32 on, --bf16 on).
    #[arg(long, value_enum, default_value_t = ConvPrecision::Fp32)]
    pub precision: ConvPrecision,
    /// Time spent on each item, in milliseconds (at least 3 repeats are always timed).
    #[arg(long)]
    pub budget_ms: Option<u64>,
    /// Print every item key with its bytes and FLOPs, and time nothing.
    #[arg(long)]
    pub list: bool,
    /// PyTorch's results for the ratio columns (default: benches/torch_<device>.json if present).
    #[arg(long)]
    pub torch_results: Option<PathBuf>,
    /// No ratio columns, even when PyTorch's results are present.
    #[arg(long, conflicts_with = "torch_results")]
    pub no_torch: bool,
    /// Also write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write the table (Markdown) to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
}

const QUICK_BUDGET_MS: u64 = 50;
const DEFAULT_BUDGET_MS: u64 = 500;
const QUICK_SAMPLER_BATCH: usize = 4;
const QUICK_INCEPTION_BATCH: usize = 4;

impl BenchArgs {
    fn config(&self, device: &Device) -> Result<BenchConfig> {
        let sampler_batch = self.sampler_batch.unwrap_or(if self.quick {
            QUICK_SAMPLER_BATCH
        } else {
            bench::default_sampler_batch(device)
        });
        let inception_batch = self.inception_batch.unwrap_or(if self.quick {
            QUICK_INCEPTION_BATCH
        } else {
            bench::DEFAULT_INCEPTION_BATCH
        });
        if [
            self.batch,
            sampler_batch,
            self.elementwise_batch,
            inception_batch,
        ]
        .contains(&0)
        {
            return Err(Error::invalid(
                "bench: --batch, --sampler-batch, --elementwise-batch and --inception-batch must \
                 be at least 1",
            ));
        }
        Ok(BenchConfig {
            device: device.clone(),
            batch: self.batch,
            sampler_batch,
            elementwise_images: self.elementwise_batch,
            inception_batch,
            precision: self.precision,
        })
    }

    fn budget(&self) -> Duration {
        let default = if self.quick {
            QUICK_BUDGET_MS
        } else {
            DEFAULT_BUDGET_MS
        };
        Duration::from_millis(self.budget_ms.unwrap_or(default))
    }

    /// PyTorch's results: the file given, else benches/torch_<device>.json when it exists.
    fn torch_results(&self, device: &Device) -> Result<Option<TorchResults>> {
        if self.no_torch {
            return Ok(None);
        }
        match &self.torch_results {
            Some(path) => TorchResults::load(path).map(Some),
            None => {
                let default = PathBuf::from(format!("benches/torch_{}.json", device_kind(device)));
                if default.exists() {
                    TorchResults::load(&default).map(Some)
                } else {
                    Ok(None)
                }
            }
        }
    }
}

fn device_kind(device: &Device) -> &'static str {
    if device.is_host() {
        "cpu"
    } else {
        "cuda"
    }
}

pub fn run(device: &Device, args: &BenchArgs) -> Result<()> {
    if matches!(device, Device::Emu(_)) {
        return Err(Error::invalid(
            "bench times real hardware: use --device cpu or --device cuda (the emulator is for correctness)",
        ));
    }
    let cfg = args.config(device)?;
    let items = bench::select(&cfg, &args.items)?;
    if args.list {
        for item in &items {
            println!("{}\tbytes {}\tflops {}", item.key, item.bytes, item.flops);
        }
        return Ok(());
    }
    ensure_items_fit(&items, device)?;
    let torch = args.torch_results(device)?;
    let budget = args.budget();
    let load_before = load_average();
    println!("device: {device}");
    println!(
        "convolutions: {} (forward, backward-data, backward-weight)",
        cfg.precision
    );
    let mut ceilings = bench::measure_ceilings(device, budget)?;
    let mut notes = vec![
        format!("load average at start {load_before}"),
        format!(
            "convolutions, all three passes (conv_*, train_step, sampler_step), in {}",
            cfg.precision
        ),
        "memory: the most bytes held by live tensors during one call (parameters, optimiser state \
         and inputs included), counted by the tensor layer; scratch buffers that are not tensors \
         (the cpu convolution's im2col columns) are not counted"
            .to_string(),
    ];
    if let Some(t) = &torch {
        notes.extend(torch_notes(t, &items));
    }
    if let Device::Cuda(_) = device {
        // The engine links no GPU BLAS: the GEMM ceiling on a GPU is PyTorch's, when given.
        match torch.as_ref().and_then(|t| t.ceilings) {
            Some(tc) => {
                ceilings.gemm_flops_per_s = tc.gemm_flops_per_s;
                notes.push("GEMM ceiling from PyTorch's results (torch.mm, m = 8192)".to_string());
            }
            None => notes.push(
                "GEMM ceiling measured on the host cpu (no PyTorch results for this GPU): the \
                 `x floor` of items limited by FLOPs is not the GPU's"
                    .to_string(),
            ),
        }
    }
    let mut rows = Vec::with_capacity(items.len());
    for item in &items {
        let m = bench::measure(item, device, budget)?;
        let theirs = torch.as_ref().and_then(|t| t.get(&item.key));
        rows.push(Row::new(item, &m, &ceilings, theirs));
        eprintln!("  {} {:?}", item.key, m.time);
    }
    notes.push(format!("load average at end {}", load_average()));
    let launches = network_launches(&items, cfg.precision, device)?;
    if let Some(note) = launches_note(&launches, cfg.precision, device) {
        notes.push(note);
    }
    let table = bench::markdown_table(&rows, &ceilings, !device.is_host());
    println!("{table}");
    for note in &notes {
        println!("note: {note}");
    }
    if let Some(path) = &args.markdown {
        write_text(path, &table)?;
    }
    if let Some(path) = &args.json {
        let mut settings = cfg.settings_json();
        settings["budget_ms"] = json!(budget.as_millis() as u64);
        settings["threads"] = json!(std::thread::available_parallelism().map_or(1, |n| n.get()));
        settings["torch_results"] = json!(torch.as_ref().map(|t| t.path.display().to_string()));
        let per_preset = |count: fn(&bench::LaunchCounts) -> u64| {
            launches
                .iter()
                .map(|(p, n)| (p.name().to_string(), json!(count(n))))
                .collect::<serde_json::Map<_, _>>()
        };
        settings["launches_per_forward"] = per_preset(|n| n.forward).into();
        settings["launches_per_replayed_sampler_step"] = per_preset(|n| n.replayed_step).into();
        bench::write_json(
            path,
            &device.to_string(),
            &ceilings,
            settings,
            &notes,
            &rows,
        )?;
    }
    Ok(())
}

/// Kernel launches per forward pass and per replayed sampler step of each network the chosen
/// items run (`train_step/tiny/..`, `sampler_step/paper/..`), counted on the GPU when
/// benchmarking one, else on the emulator: the counts are the same on both, and the cpu
/// launches nothing.
fn network_launches(
    items: &[bench::Item],
    precision: ConvPrecision,
    device: &Device,
) -> Result<Vec<(Preset, bench::LaunchCounts)>> {
    let counter = match device {
        Device::Cuda(_) => device.clone(),
        _ => Device::Emu(EmuSchedule::Forward),
    };
    let mut presets: Vec<Preset> = items
        .iter()
        .filter_map(|item| {
            let mut parts = item.key.split('/');
            let root = parts.next()?;
            let network_item = root == "train_step" || root == "sampler_step";
            network_item.then(|| Preset::parse(parts.next()?).ok())?
        })
        .collect();
    presets.sort_by_key(|p| p.name());
    presets.dedup();
    presets
        .into_iter()
        .map(|p| Ok((p, bench::launch_counts(p, precision, &counter)?)))
        .collect()
}

fn launches_note(
    launches: &[(Preset, bench::LaunchCounts)],
    precision: ConvPrecision,
    device: &Device,
) -> Option<String> {
    if launches.is_empty() {
        return None;
    }
    let counts = |count: fn(&bench::LaunchCounts) -> u64| {
        let each: Vec<String> = launches
            .iter()
            .map(|(p, n)| format!("{p} {}", count(n)))
            .collect();
        each.join(", ")
    };
    let on = if matches!(device, Device::Cuda(_)) {
        "cuda"
    } else {
        "emu"
    };
    Some(format!(
        "kernel launches per network forward (batch 1, {precision} convolutions, counted on {on}): \
         {}; per sampler step replayed from its graph (docs/DESIGN.md section 10): {}",
        counts(|n| n.forward),
        counts(|n| n.replayed_step)
    ))
}

/// Refuses, before any timing, items too large for the device: the bytes an item reads and
/// writes once are a lower bound of what it holds (--batch 100000 or --elementwise-batch
/// 100000000 would otherwise abort on allocation).
pub(super) fn ensure_items_fit(items: &[bench::Item], device: &Device) -> Result<()> {
    let Some(largest) = items.iter().max_by(|a, b| a.bytes.total_cmp(&b.bytes)) else {
        return Ok(());
    };
    let bytes = (largest.bytes.is_finite() && largest.bytes < u64::MAX as f64)
        .then_some(largest.bytes as u64);
    memory_budget::ensure_fits(
        device,
        &format!(
            "bench: item {} (see --batch, --sampler-batch, --elementwise-batch, \
             --inception-batch)",
            largest.key
        ),
        bytes,
    )
}

/// Where PyTorch's results come from, and any key whose counts differ from ours (the ratio then
/// compares different work).
fn torch_notes(t: &TorchResults, items: &[bench::Item]) -> Vec<String> {
    let mut notes = vec![format!(
        "torch ratios: our time / PyTorch {} on {} ({})",
        t.torch_version,
        t.device,
        t.path.display()
    )];
    notes.extend(t.notes.iter().map(|n| format!("PyTorch run: {n}")));
    for item in items {
        if let Some(theirs) = t.get(&item.key) {
            if theirs.bytes != item.bytes || theirs.flops != item.flops {
                notes.push(format!(
                    "{}: PyTorch counts {} bytes and {} FLOPs, we count {} and {}",
                    item.key, theirs.bytes, theirs.flops, item.bytes, item.flops
                ));
            }
        }
    }
    notes
}

/// The 1-minute load average (other processes slow every item down), or "unknown".
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string())
}

pub(super) fn write_text(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::file(path, e.to_string()))
}
