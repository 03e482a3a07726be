//! `dml profile`: every kernel a `dml bench` item launches, run once on the profiling emulator,
//! with its memory traffic, bank conflicts, divergence and FLOPs and its predicted time on an
//! H100 and an H200 (docs/DESIGN.md section 8; the model in src/profile/roofline.rs).
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use serde_json::json;

use super::bench::{ensure_items_fit, write_text};
use super::DeviceChoice;
use crate::bench::{self, BenchConfig};
use crate::device::{Device, EmuSchedule};
use crate::error::{Error, Result};
use crate::ops::ConvPrecision;
use crate::profile::{self, report};

#[derive(Args, Debug)]
pub struct ProfileArgs {
    /// Only these items: comma-separated key prefixes or family names, as `dml bench --items`
    /// (elementwise, conv, norm, gbm, sampler, train, ddpmpp, inception). Default: every item but
    /// DDPM++'s and the FID Inception's (hours and over 10 minutes on the profiler even at one
    /// image: name them to profile them).
    #[arg(long, value_delimiter = ',')]
    pub items: Vec<String>,
    /// Batch of the conv, norm and training items (`dml bench`: 8). Every memory access goes
    /// through the profiler, so the default is small; see README for how predictions scale.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Batch of the sampler steps (`dml bench`: 1000 on a GPU).
    #[arg(long, default_value_t = 1)]
    pub sampler_batch: usize,
    /// Images of 28x28 per tensor of the element-wise, Dale-step and M-DSM items (`dml bench`: 1000).
    #[arg(long, default_value_t = 4)]
    pub elementwise_batch: usize,
    /// Grey 28x28 images per call of the FID Inception item (`dml bench`: 16).
    #[arg(long, default_value_t = 1)]
    pub inception_batch: usize,
    /// Arithmetic of the convolutions: fp32 (SIMT), or tf32 or bf16 operands (tensor cores).
    #[arg(long, value_enum, default_value_t = ConvPrecision::Fp32)]
    pub precision: ConvPrecision,
    /// Only the one-line-per-item summary, not each item's kernels.
    #[arg(long)]
    pub summary: bool,
    /// Also write everything measured, with the model's constants, as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write the tables (Markdown) to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
}

impl ProfileArgs {
    fn config(&self, device: &Device) -> Result<BenchConfig> {
        let batches = [
            self.batch,
            self.sampler_batch,
            self.elementwise_batch,
            self.inception_batch,
        ];
        if batches.contains(&0) {
            return Err(Error::invalid(
                "profile: --batch, --sampler-batch, --elementwise-batch and --inception-batch \
                 must be at least 1",
            ));
        }
        Ok(BenchConfig {
            device: device.clone(),
            batch: self.batch,
            sampler_batch: self.sampler_batch,
            elementwise_images: self.elementwise_batch,
            inception_batch: self.inception_batch,
            precision: self.precision,
        })
    }
}

/// The emulator schedule to profile on: the profiler is part of the emulator.
fn emulator(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Auto | DeviceChoice::Emu => Ok(Device::Emu(EmuSchedule::Forward)),
        DeviceChoice::EmuReverse => Ok(Device::Emu(EmuSchedule::Reverse)),
        DeviceChoice::Cpu | DeviceChoice::Cuda => Err(Error::invalid(
            "profile measures kernels on the emulator (--device emu, the default here); \
             to time them on real hardware use `dml bench --device cuda`",
        )),
    }
}

pub fn run(choice: DeviceChoice, args: &ProfileArgs) -> Result<()> {
    let device = emulator(choice)?;
    let cfg = args.config(&device)?;
    let wanted = if args.items.is_empty() {
        bench::families()
            .into_iter()
            .filter(|f| f.profiled_by_default)
            .map(|f| f.name.to_string())
            .collect()
    } else {
        args.items.clone()
    };
    let items = bench::select(&cfg, &wanted)?;
    ensure_items_fit(&items, &device)?;
    let mut profiles = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let start = Instant::now();
        profiles.push(profile::profile_item(item)?);
        eprintln!(
            "  [{}/{}] {} ({:.1} s on the profiler)",
            i + 1,
            items.len(),
            item.key,
            start.elapsed().as_secs_f64()
        );
    }
    let mut text = report::summary_table(&profiles);
    if !args.summary {
        for p in &profiles {
            text.push('\n');
            text.push_str(&report::kernel_table(p));
        }
    }
    println!("{text}");
    let mut notes = notes(&cfg);
    if args.items.is_empty() {
        let left_out: Vec<&str> = bench::families()
            .into_iter()
            .filter(|f| !f.profiled_by_default)
            .map(|f| f.name)
            .collect();
        notes.push(format!(
            "not profiled unless named in --items (over 10 minutes on the profiler): {}",
            left_out.join(", ")
        ));
    }
    for note in &notes {
        println!("note: {note}");
    }
    if let Some(path) = &args.markdown {
        write_text(path, &text)?;
    }
    if let Some(path) = &args.json {
        let mut settings = cfg.settings_json();
        settings["schedule"] = json!(device.to_string());
        settings["notes"] = json!(notes);
        let value = report::to_json(&profiles, settings);
        write_text(path, &format!("{value:#}\n"))?;
    }
    Ok(())
}

fn notes(cfg: &BenchConfig) -> Vec<String> {
    vec![
        format!(
            "profiled at batch {} (conv, norm, train), {} (sampler), {} images (element-wise), \
             {} (inception); \
             the DRAM, L2, shared and FLOP terms grow in proportion to the batch, the launch \
             overhead does not, and launches of fewer blocks than SMs are predicted at that \
             fraction of the GPU",
            cfg.batch, cfg.sampler_batch, cfg.elementwise_images, cfg.inception_batch
        ),
        "predictions are a roofline (src/profile/roofline.rs): not yet calibrated against a GPU"
            .to_string(),
        "FLOPs are counted for the convolutions' main loops and tensor-core tiles only".to_string(),
    ]
}
