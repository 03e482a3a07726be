//! Forward and forward + backward wall time of the NCSN network (SPEC section 9) per preset and
//! batch size, median of at least 3 repeats after a warm-up (dalemeetslangevin::bench).
//!
//! ```text
//! cargo run --release --example ncsn_timing -- [--device cpu|cuda|auto] [--batches 1,8]
//!     [--size 28|32] [PRESET ...]        (presets: tiny tiny_deep paper deep; default tiny tiny_deep)
//! ```
use std::time::Duration;

use dalemeetslangevin::autograd::{ParamStore, Tape};
use dalemeetslangevin::bench::time_median;
use dalemeetslangevin::cli::DeviceChoice;
use dalemeetslangevin::named;
use dalemeetslangevin::nn::ncsn::{Ncsn, NcsnConfig};
use dalemeetslangevin::nn::Preset;
use dalemeetslangevin::ops::copy;
use dalemeetslangevin::{Device, Error, Result, Tensor};

struct Options {
    device: Device,
    batches: Vec<usize>,
    image_size: usize,
    presets: Vec<Preset>,
}

fn parse_options() -> Result<Options> {
    let mut opts = Options {
        device: Device::auto(),
        batches: vec![1, 8],
        image_size: 28,
        presets: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .ok_or_else(|| Error::invalid(format!("{flag} needs a value")))
        };
        match arg.as_str() {
            "--device" => {
                let choice: DeviceChoice = named::parse(&value("--device")?, "device")?;
                opts.device = choice.open()?;
            }
            "--size" => opts.image_size = parse_number("--size", &value("--size")?)?,
            "--batches" => {
                opts.batches = value("--batches")?
                    .split(',')
                    .map(|b| parse_number("--batches", b))
                    .collect::<Result<_>>()?
            }
            name => opts.presets.push(Preset::parse(name)?),
        }
    }
    if matches!(opts.device, Device::Emu(_)) {
        return Err(Error::invalid(
            "timing needs real hardware: use --device cpu or --device cuda (the emulator is for correctness)",
        ));
    }
    if opts.presets.is_empty() {
        opts.presets = vec![Preset::Tiny, Preset::TinyDeep];
    }
    Ok(opts)
}

fn parse_number(flag: &str, text: &str) -> Result<usize> {
    text.trim()
        .parse()
        .map_err(|e| Error::invalid(format!("{flag} '{text}': {e}")))
}

/// Median time of a forward (inference tape) and of a forward + backward (recording tape); the
/// copies of the inputs a tape takes ownership of are timed too (small next to the network).
fn time_network(cfg: &NcsnConfig, batch: usize, device: &Device) -> Result<(Duration, Duration)> {
    let mut store = ParamStore::new(device, 0);
    let net = Ncsn::new(&mut store, cfg)?;
    let shape = cfg.input_shape(batch);
    let n: usize = shape.iter().product();
    let x = Tensor::from_vec(
        (0..n).map(|i| 1.0 + (i % 89) as f32 / 89.0).collect(),
        &shape,
        device,
    )?;
    let levels: Vec<f32> = (0..batch).map(|b| (b * 7 % cfg.n_levels) as f32).collect();
    let levels = Tensor::from_vec(levels, &[batch], device)?;
    let seed = Tensor::from_vec(vec![1.0; n], &shape, device)?;
    let budget = Duration::from_secs(2);
    let forward = time_median(
        device,
        &mut || {
            let mut tape = Tape::inference(&store);
            let (x, k) = (tape.constant(copy(&x)?), tape.constant(copy(&levels)?));
            net.forward(&mut tape, &x, &k).map(drop)
        },
        budget,
    )?;
    let training = time_median(
        device,
        &mut || {
            let mut tape = Tape::new(&store);
            let (x, k) = (tape.constant(copy(&x)?), tape.constant(copy(&levels)?));
            let out = net.forward(&mut tape, &x, &k)?;
            tape.backward(&out, copy(&seed)?).map(drop)
        },
        budget,
    )?;
    Ok((forward, training))
}

fn main() -> Result<()> {
    let opts = parse_options()?;
    println!("device: {}", opts.device);
    println!(
        "{:<28} {:>6} {:>12} {:>12} {:>14}",
        "network", "batch", "forward", "fwd+bwd", "fwd+bwd/image"
    );
    for &preset in &opts.presets {
        let channels = if opts.image_size == 28 { 1 } else { 3 };
        let cfg = NcsnConfig::new(preset, channels, opts.image_size, preset.default_levels())?;
        for &batch in &opts.batches {
            let (forward, training) = time_network(&cfg, batch, &opts.device)?;
            println!(
                "{:<28} {batch:>6} {:>12.2?} {:>12.2?} {:>14.2?}",
                cfg.describe(),
                forward,
                training,
                training / batch as u32
            );
        }
    }
    Ok(())
}
