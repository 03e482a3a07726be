//! Work captured once and replayed as a graph (docs/DESIGN.md section 10), on the emulator, which
//! keeps CUDA's rules: a replay runs the recorded launches with the arguments they had, so what
//! changes between replays must be read from memory written in place; a body that copies between
//! host and device, frees memory it did not allocate or keeps memory it did is refused. On a GPU
//! the same replays run as CUDA graphs.
mod common;

use common::kernel_devices;
use dalemeetslangevin::autograd::{ParamStore, Tape};
use dalemeetslangevin::device::graph::{capture, Captured, Graph};
use dalemeetslangevin::device::EmuSchedule;
use dalemeetslangevin::diffusion::additive::{
    annealed_langevin, AnnealedLangevinConfig, NoiseLevels,
};
use dalemeetslangevin::diffusion::samplers::{
    sample, PhiloxDraw, SamplerConfig, SamplerStats, StepCoefficients, StepKind,
};
use dalemeetslangevin::diffusion::{
    Level, NetworkGaussianScore, NetworkScore, Parameterisation, Schedule, ScoreSource, SigmaShape,
};
use dalemeetslangevin::nn::ncsn::{Ncsn, NcsnConfig};
use dalemeetslangevin::nn::Preset;
use dalemeetslangevin::ops;
use dalemeetslangevin::{Device, Result, Tensor};
use rand::Rng;

fn random(n: usize, lo: f32, hi: f32, dev: &Device) -> Tensor {
    let mut rng = rand::rng();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(lo..hi)).collect();
    Tensor::from_vec(v, &[n], dev).unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect()
}

fn graph_of(captured: Captured) -> Graph {
    match captured {
        Captured::Graph(g) => g,
        Captured::Unavailable(why) => panic!("capture refused: {why}"),
    }
}

fn refusal(captured: Captured) -> String {
    match captured {
        Captured::Graph(_) => panic!("a body a replay cannot repeat was captured"),
        Captured::Unavailable(why) => why,
    }
}

/// A Dale step captured once, then replayed with new coefficients and Philox steps written in
/// place, gives the bits of the same steps run directly; the body did not run at capture.
#[test]
fn a_replayed_step_reads_its_scalars_from_memory() {
    for dev in kernel_devices("a_replayed_step_reads_its_scalars_from_memory") {
        let n = 1 + rand::rng().random_range(0..3000);
        let (mut x, h) = (random(n, 0.5, 2.0, &dev), random(n, -1.0, 1.0, &dev));
        let mut direct = ops::copy(&x).unwrap();
        let start = bits(&x);
        let coefs = |i: usize| StepCoefficients {
            drift: -0.01 * i as f32,
            score: 0.02 + 0.01 * i as f32,
            noise: if i == 2 { 0.0 } else { 0.1 / (1 + i) as f32 },
        };
        let draw = PhiloxDraw::sampler(11, 0);
        let mut scalars = coefs(0).scalars(&dev, draw).unwrap();
        let graph = graph_of(capture(&dev, &mut || {
            ops::gbm_dale_step(&mut x, &h, &scalars)
        }));
        assert_eq!(bits(&x), start, "the body ran during capture");
        assert!(
            matches!(graph.kernels(), Some(1) | None),
            "one kernel, or a CUDA graph"
        );
        // (coefficients, Philox step): step 2^31's bits read as -0.0, equal to step 0's +0.0 as
        // floats, yet another step.
        for (i, step) in [(0, 0), (0, 1 << 31), (1, 7), (2, 14), (3, 21)] {
            coefs(i).write(&mut scalars, step).unwrap();
            // SAFETY: x, h and scalars outlive the graph and are written in place only.
            unsafe { graph.replay() }.unwrap();
            let draw = PhiloxDraw::sampler(11, step);
            ops::gbm_dale_step(&mut direct, &h, &coefs(i).scalars(&dev, draw).unwrap()).unwrap();
            assert_eq!(bits(&x), bits(&direct), "step {step} on {dev} (n = {n})");
        }
    }
}

/// Memory the body allocates is filled at every replay as at its allocation: zeros (a memset
/// node on CUDA) are zeros again, so a kernel that adds into them adds to zero each time.
#[test]
fn a_replay_refills_the_zeros_the_body_allocated() {
    for dev in kernel_devices("a_replay_refills_the_zeros_the_body_allocated") {
        let n = 1 + rand::rng().random_range(0..2000);
        let s = random(n, -1.0, 1.0, &dev);
        let mut out = Tensor::zeros(&[n], &dev).unwrap();
        let add_once = ops::StepScalars::new(&dev, &[1.0], 0.0, PhiloxDraw::sampler(1, 0)).unwrap();
        let graph = graph_of(capture(&dev, &mut || {
            let mut acc = Tensor::zeros(&[n], &dev)?;
            ops::additive_langevin_step(&mut acc, &s, &add_once)?;
            ops::copy_into(&acc, &mut out)
        }));
        for replay in 0..3 {
            // SAFETY: s, out and the scalars outlive the graph.
            unsafe { graph.replay() }.unwrap();
            assert_eq!(bits(&out), bits(&s), "replay {replay} on {dev}");
        }
    }
}

#[test]
fn capture_refuses_what_a_replay_cannot_repeat() {
    let dev = Device::emu();
    let mut x = random(64, 0.5, 2.0, &dev);
    let why = refusal(capture(&dev, &mut || Tensor::scalar(1.0, &dev).map(drop)));
    assert!(why.contains("copy from the host"), "{why}");

    let why = refusal(capture(&dev, &mut || x.to_vec().map(drop)));
    assert!(why.contains("copy to the host"), "{why}");

    let mut outside = Some(random(8, 0.0, 1.0, &dev));
    let why = refusal(capture(&dev, &mut || {
        drop(outside.take());
        Ok(())
    }));
    assert!(why.contains("frees memory allocated before"), "{why}");

    let mut kept = None;
    let why = refusal(capture(&dev, &mut || {
        kept = Some(ops::copy(&x)?);
        Ok(())
    }));
    assert!(why.contains("outlive"), "{why}");
    drop(kept);

    let why = refusal(capture(&dev, &mut || {
        ops::fill(&mut x, f32::NAN).and(Err(dalemeetslangevin::Error::invalid(
            "the body's own error",
        )))
    }));
    assert!(why.contains("the body's own error"), "{why}");

    let why = refusal(capture(&Device::Cpu, &mut || Ok(())));
    assert!(why.contains("cpu"), "{why}");

    // A refused capture leaves none in progress: the next one works.
    let graph = graph_of(capture(&dev, &mut || ops::fill(&mut x, 3.0)));
    // SAFETY: x outlives the graph.
    unsafe { graph.replay() }.unwrap();
    assert!(x.to_vec().unwrap().iter().all(|&v| v == 3.0));
}

/// The tiny NCSN network, randomly initialised, as the sampler's score on `dev`.
fn tiny_network(dev: &Device, levels: usize) -> (ParamStore, Ncsn) {
    let cfg = NcsnConfig::new(Preset::Tiny, 1, 28, levels).unwrap();
    let mut store = ParamStore::new(dev, 3);
    let net = Ncsn::new(&mut store, &cfg).unwrap();
    (store, net)
}

fn run_sampler(
    score: &mut dyn ScoreSource,
    schedule: &Schedule,
    config: &SamplerConfig,
    dev: &Device,
) -> (Vec<u32>, SamplerStats) {
    let x: Vec<f32> = (0..2 * 28 * 28)
        .map(|i| 0.6 + (i % 23) as f32 / 23.0)
        .collect();
    let x = Tensor::from_vec(x, &[2, 1, 28, 28], dev).unwrap();
    let (x, stats) = sample(score, schedule, config, x, None).unwrap();
    (bits(&x), stats)
}

/// ADLS and ASAMS with the network's score: the steps replayed from one captured graph give the
/// samples and sign-change counts of the run with every step launched directly, bit for bit,
/// across levels (the level and kappa change, so a value fixed at capture would show).
#[test]
fn sampler_steps_replayed_from_a_graph_give_the_direct_samples() {
    let schedule = Schedule::new(SigmaShape::Geometric, 4, 0.2, 0.6).unwrap();
    let kinds = [
        StepKind::DaleLangevin(Default::default()),
        StepKind::SignAgnostic,
    ];
    let devices = kernel_devices("sampler_steps_replayed_from_a_graph_give_the_direct_samples");
    // Each emulator schedule runs one kind (the emulator is slow), a GPU both.
    let runs = devices.iter().enumerate().flat_map(|(i, dev)| match dev {
        Device::Emu(_) => vec![(kinds[i % 2], dev.clone())],
        _ => kinds.iter().map(|&k| (k, dev.clone())).collect(),
    });
    for (step, dev) in runs {
        let (store, net) = tiny_network(&dev, schedule.n_levels());
        let mut score = NetworkScore::new(
            |x: &Tensor, levels: &Tensor| {
                let mut tape = Tape::inference(&store);
                let levels = tape.constant(ops::copy(levels)?);
                let x = tape.constant(ops::copy(x)?);
                ops::copy(net.forward(&mut tape, &x, &levels)?.value())
            },
            Parameterisation::H,
        );
        // kappa large enough (noise about 1 per step) that ASAMS's steps flip signs to count.
        let config = SamplerConfig {
            step,
            kappa_start: 40.0,
            terminal_denoise_steps: 1,
            ..SamplerConfig::adls(2e-3, 2, 0.7, 5)
        };
        let direct = SamplerConfig {
            graphs: false,
            ..config
        };
        let (replayed, stats) = run_sampler(&mut score, &schedule, &config, &dev);
        let (expected, direct_stats) = run_sampler(&mut score, &schedule, &direct, &dev);
        assert_eq!(stats.steps, 7);
        assert_eq!(stats.replayed_steps, 6, "{step:?}: all steps but the first");
        assert_eq!(direct_stats.replayed_steps, 0);
        assert_eq!(replayed, expected, "{step:?} on {dev}");
        assert_eq!(stats.sign_changes, direct_stats.sign_changes, "{step:?}");
        if step == StepKind::SignAgnostic {
            assert!(
                stats.sign_changes > 0,
                "no sign changed: the count went untested"
            );
        }
    }
}

/// A score that reads its level on the host but claims to be replayable has the first step's
/// level fixed into the graph: the replayed run then differs from the direct one. (What
/// `ScoreSource::replayable` guards against; it also shows the emulator's replay does not
/// re-run the body.)
#[test]
fn a_level_read_on_the_host_is_fixed_at_capture() {
    struct HostLevel;
    impl ScoreSource for HostLevel {
        fn h(&mut self, x: &Tensor, level: Level<'_>) -> Result<Tensor> {
            ops::scale(x, -0.1 * level.k as f32, 0.0)
        }
        fn replayable(&self) -> bool {
            true
        }
    }
    let dev = Device::emu();
    let schedule = Schedule::new(SigmaShape::Geometric, 5, 0.2, 0.6).unwrap();
    let config = SamplerConfig::adls(2e-3, 2, 0.7, 5);
    let (replayed, stats) = run_sampler(&mut HostLevel, &schedule, &config, &dev);
    let direct = SamplerConfig {
        graphs: false,
        ..config
    };
    let (expected, _) = run_sampler(&mut HostLevel, &schedule, &direct, &dev);
    assert!(stats.replayed_steps > 0);
    assert_ne!(replayed, expected);
}

/// The additive baseline's annealed Langevin with the network's score: the same, bit for bit.
#[test]
fn annealed_langevin_replayed_from_a_graph_gives_the_direct_samples() {
    let levels = NoiseLevels::new(SigmaShape::Geometric, 3, 1.0, 0.1).unwrap();
    let devices =
        kernel_devices("annealed_langevin_replayed_from_a_graph_gives_the_direct_samples");
    // One emulator schedule is enough here (the sampler test above runs both).
    let forward = |d: &Device| matches!(d, Device::Emu(EmuSchedule::Forward));
    for dev in devices.into_iter().filter(|d| !forward(d)) {
        let (store, net) = tiny_network(&dev, levels.len());
        let mut score = NetworkGaussianScore(|x: &Tensor, levels: &Tensor| {
            let mut tape = Tape::inference(&store);
            let levels = tape.constant(ops::copy(levels)?);
            let x = tape.constant(ops::copy(x)?);
            ops::copy(net.forward(&mut tape, &x, &levels)?.value())
        });
        let config = AnnealedLangevinConfig {
            steps_per_level: 2,
            eps: 1e-3,
            ..AnnealedLangevinConfig::paper_default(9)
        };
        let mut run = |graphs: bool| {
            let x: Vec<f32> = (0..2 * 28 * 28).map(|i| (i % 19) as f32 / 19.0).collect();
            let x = Tensor::from_vec(x, &[2, 1, 28, 28], &dev).unwrap();
            let config = AnnealedLangevinConfig { graphs, ..config };
            let (x, replayed) = annealed_langevin(&mut score, &levels, &config, x, None).unwrap();
            (bits(&x), replayed)
        };
        let (replayed, n) = run(true);
        let (expected, none) = run(false);
        assert_eq!(
            (n, none),
            (5, 0),
            "all 6 steps but the first replayed on {dev}"
        );
        assert_eq!(replayed, expected, "on {dev}");
    }
}
