//! The `dml` command line (clap). One file per subcommand.
mod bench;
mod demo;
mod eval;
mod info;
mod level_loss;
mod model_args;
pub mod paths;
mod profile;
mod progress;
mod sample;
mod scoring;
mod stop;
mod sweep;
mod train;
mod train_classifier;
mod train_eval;
mod train_resume;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::device::{CudaDevice, Device, EmuSchedule};
use crate::error::Result;
use crate::sweep::{BestSettings, BEST_SETTINGS_FILE};

#[derive(Parser, Debug)]
#[command(
    name = "dml",
    version,
    about = "Dale meets Langevin: multiplicative (geometric-Brownian-motion) diffusion models, in Rust + CUDA",
    long_about = None
)]
pub struct Cli {
    /// The backend every computation runs on.
    #[arg(long, global = true, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train the tiny preset for a few minutes on the CPU (Fashion-MNIST when installed, else
    /// the built-in shapes), sample from it and write the images: the quickest look at the engine.
    Demo(demo::DemoArgs),
    /// Train a score network; writes checkpoint.safetensors and loss.csv into the run directory.
    Train(train::TrainArgs),
    /// Draw images from a checkpoint and write a PNG grid (and optionally the tensors).
    Sample(sample::SampleArgs),
    /// Train the classifier whose features `dml eval` measures distances in, report its test
    /// accuracy and cache it (SPEC 10).
    TrainClassifier(train_classifier::TrainClassifierArgs),
    /// Evaluate a checkpoint's samples: Frechet and kernel distances in classifier features,
    /// nearest training images (table, figure, CSV row), sign changes.
    Eval(eval::EvalArgs),
    /// Grid-search sampler settings (delta_s, L, chi, kappa, init, sampler) on a checkpoint,
    /// scoring each with `dml eval`'s distances on a fixed seed and count; resumable. Writes
    /// sweep.csv, sweep.png and best_settings.json (`sample`/`eval --settings best`) into the
    /// run directory.
    Sweep(sweep::SweepArgs),
    /// The test loss level by level (SPEC 3.2) of one or more checkpoints, on the same test
    /// images and noise: which levels a model has learnt, and where one checkpoint beats
    /// another. Prints a table; writes level_loss.csv and level_loss.png into the run directory.
    LevelLoss(level_loss::LevelLossArgs),
    /// Print the build (kernels compiled or not, nvcc version, architectures), the devices found,
    /// and the backend that would be chosen; with --kernels, what the compiler made of each kernel.
    Info(info::InfoArgs),
    /// Time kernels and end-to-end steps on the chosen device and print a table with achieved
    /// GB/s and TFLOP/s and the ratio to the floor set by measured copy bandwidth and GEMM rate.
    Bench(bench::BenchArgs),
    /// Run each kernel of `dml bench`'s items once on the profiling emulator and print its
    /// coalescing, DRAM traffic, bank conflicts, divergence and FLOPs, and its predicted time on
    /// an H100 and an H200: judging a kernel change without a GPU.
    Profile(profile::ProfileArgs),
}

crate::named::value_names! {
    /// What `--device` names: a backend, or the choice of one.
    pub enum DeviceChoice {
        Auto = "auto" => "cuda when a GPU and compiled kernels are present, else cpu",
        Cpu = "cpu" => "native Rust, the reference semantics",
        Cuda = "cuda" => "the CUDA kernels on the first GPU",
        Emu = "emu" => "the CUDA kernels run by the CPU emulator (debugging)",
        EmuReverse = "emu-reverse" => "the emulator resuming threads in reverse order (exposes races)",
    }
}

impl DeviceChoice {
    /// The device, or the error explaining why a GPU cannot be used.
    pub fn open(self) -> Result<Device> {
        Ok(match self {
            Self::Auto => Device::auto(),
            Self::Cpu => Device::Cpu,
            Self::Cuda => Device::Cuda(CudaDevice::open(0)?),
            Self::Emu => Device::Emu(EmuSchedule::Forward),
            Self::EmuReverse => Device::Emu(EmuSchedule::Reverse),
        })
    }
}

/// Parses the process's arguments (clap exits with its usage message on bad ones), noting which
/// training options were given on the command line: a resumed run refuses those that conflict
/// with it, and must tell them apart from defaults. An error when a settings file named by
/// `--settings` cannot be read.
pub fn parse() -> Result<Cli> {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let (cli, given) = parse_from(&argv);
    let preset = preset_options(&cli)?;
    if preset.is_empty() {
        return Ok(cli);
    }
    Ok(with_preset(argv, &preset, given))
}

/// The options a named set of defaults given on the command line stands for: `train --recipe`,
/// `sample`/`eval --sampler-preset` or `--settings`.
fn preset_options(cli: &Cli) -> Result<Vec<(String, String)>> {
    let owned = |options: Vec<(&str, &str)>| {
        options
            .into_iter()
            .map(|(f, v)| (f.to_string(), v.to_string()))
            .collect()
    };
    let (sampling, checkpoint) = match &cli.command {
        Command::Train(args) => return Ok(args.recipe.map_or(vec![], |r| owned(r.options()))),
        Command::Sample(args) => (&args.sampling, &args.checkpoint),
        Command::Eval(args) => (&args.sampling, &args.checkpoint),
        _ => return Ok(vec![]),
    };
    if let Some(settings) = &sampling.settings {
        let file = settings_file(settings, checkpoint);
        eprintln!(
            "sampler settings from {} (options given on the command line win)",
            file.display()
        );
        return BestSettings::read_options(&file);
    }
    Ok(sampling
        .sampler_preset
        .map_or(vec![], |p| owned(p.options())))
}

/// The file `--settings` names: `best` is the best_settings.json of the checkpoint's run
/// directory, anything else a path.
fn settings_file(settings: &str, checkpoint: &Path) -> PathBuf {
    match settings {
        "best" => paths::run_dir_of(checkpoint).join(BEST_SETTINGS_FILE),
        path => PathBuf::from(path),
    }
}

/// `argv` parsed again with a preset's `options` added where `argv` does not give them; the
/// options recorded as given stay those of `argv`.
fn with_preset(mut argv: Vec<OsString>, options: &[(String, String)], given: Vec<String>) -> Cli {
    for (flag, value) in options {
        if !given.contains(&flag.replace('-', "_")) {
            argv.extend([format!("--{flag}").into(), OsString::from(value)]);
        }
    }
    let (mut cli, _) = parse_from(&argv);
    if let Command::Train(args) = &mut cli.command {
        args.given = given;
    }
    cli
}

/// The command line `argv` parsed (clap exits with its usage message on bad arguments), and
/// the options of its subcommand that were given on it.
fn parse_from(argv: &[OsString]) -> (Cli, Vec<String>) {
    let matches = Cli::command().get_matches_from(argv);
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let given = matches
        .subcommand()
        .map_or_else(Vec::new, |(_, sub)| given_on_command_line(sub));
    if let Command::Train(args) = &mut cli.command {
        args.given = given.clone();
    }
    (cli, given)
}

fn given_on_command_line(matches: &ArgMatches) -> Vec<String> {
    matches
        .ids()
        .filter(|id| matches.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| id.to_string())
        .collect()
}

/// Runs the command; returns the process's exit code: 0, or 128 + the signal that stopped a
/// training run (see [`stop`]).
pub fn run(cli: Cli) -> Result<u8> {
    crate::tensor::host_allocator::retain_freed_memory();
    let device = || cli.device.open();
    match cli.command {
        Command::Demo(args) => return demo::run(&device()?, &args),
        Command::Train(args) => return train::run(&device()?, &args),
        Command::Sample(args) => sample::run(&device()?, &args),
        Command::TrainClassifier(args) => train_classifier::run(&device()?, &args),
        Command::Eval(args) => eval::run(&device()?, &args),
        Command::Sweep(args) => sweep::run(&device()?, &args),
        Command::LevelLoss(args) => level_loss::run(&device()?, &args),
        Command::Info(args) => info::run(cli.device, &args),
        Command::Bench(args) => bench::run(&device()?, &args),
        Command::Profile(args) => profile::run(cli.device, &args),
    }?;
    Ok(0)
}
