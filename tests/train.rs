//! The trainer as a library: exact resume, checkpoint contents, sampling from a checkpoint.
mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;

use dalemeetslangevin::checkpoint::Checkpoint;
use dalemeetslangevin::data::{Dataset, PixelRange, Split};
use dalemeetslangevin::diffusion::additive::AnnealedLangevinConfig;
use dalemeetslangevin::diffusion::additive::NoiseLevels;
use dalemeetslangevin::diffusion::loss::{LossTarget, LossWeighting};
use dalemeetslangevin::diffusion::samplers::SamplerConfig;
use dalemeetslangevin::diffusion::{Parameterisation, Schedule, SigmaShape};
use dalemeetslangevin::generate::{generate, GenerateOptions, InitKind};
use dalemeetslangevin::nn::Preset;
use dalemeetslangevin::ops::ConvPrecision;
use dalemeetslangevin::optim::LrDecay;
use dalemeetslangevin::train::{
    self, checkpoint_path, read_losses, ModelSpec, Objective, OptimizerKind, ResumeChanges, RunEnd,
    RunLock, ScoreModel, TrainConfig, Trainer, Weights,
};
use dalemeetslangevin::Device;

fn shapes() -> Dataset {
    Dataset::load("shapes", Split::Train).unwrap().truncated(64)
}

fn gbm(levels: usize) -> Objective {
    Objective::Gbm {
        schedule: Schedule::new(SigmaShape::Constant, levels, 0.8, 0.8).unwrap(),
        weighting: LossWeighting::SkSquared,
        parameterisation: Parameterisation::H,
        target: LossTarget::Exact,
    }
}

fn config(steps: u64, optimizer: OptimizerKind) -> TrainConfig {
    TrainConfig {
        optimizer,
        warmup_steps: 2,
        checkpoint_every: 3,
        seed: 7,
        ..TrainConfig::new(4, steps)
    }
}

fn trainer(data: &Dataset, objective: Objective, steps: u64, opt: OptimizerKind) -> Trainer {
    trainer_of(data, objective, config(steps, opt))
}

fn trainer_of(data: &Dataset, objective: Objective, config: TrainConfig) -> Trainer {
    let range = PixelRange::new(1.0, 2.0).unwrap();
    let spec = ModelSpec::for_dataset(Preset::Tiny, data, objective, range).unwrap();
    Trainer::new(config, spec, data, &Device::Cpu).unwrap()
}

/// A run's configuration for a total step count.
type ConfigOf = fn(u64) -> TrainConfig;

/// [`config`] with a cosine decay ending at step 6 and the EMA warm-up: both depend on the step
/// number, which a resumed run must continue from.
fn decaying_config(steps: u64) -> TrainConfig {
    TrainConfig {
        lr_decay: LrDecay::Cosine,
        lr_decay_steps: 6,
        lr_final: 1e-4,
        ema_warmup: true,
        ..config(steps, OptimizerKind::AdamW)
    }
}

/// Every tensor and every metadata entry of two checkpoints, bit for bit.
fn assert_same_checkpoint(a: &Checkpoint, b: &Checkpoint) {
    assert_eq!(a.metadata, b.metadata, "metadata differs");
    assert_eq!(
        a.tensors.keys().collect::<Vec<_>>(),
        b.tensors.keys().collect::<Vec<_>>()
    );
    for (name, (shape, data)) in &a.tensors {
        let (shape_b, data_b) = &b.tensors[name];
        assert_eq!(shape, shape_b, "{name}");
        let same = data
            .iter()
            .zip(data_b)
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "tensor {name} differs between the runs");
    }
}

/// A resume that only sets the total step count.
fn steps(n: u64) -> ResumeChanges {
    ResumeChanges {
        steps: Some(n),
        ..ResumeChanges::default()
    }
}

fn run_to_end(t: &mut Trainer, data: &Dataset, dir: &Path) -> train::RunSummary {
    let lock = RunLock::acquire(dir).unwrap();
    train::run(t, data, &lock, &AtomicBool::new(false), &mut |_| {}).unwrap()
}

#[test]
fn resume_reproduces_the_uninterrupted_run() {
    let additive = Objective::Additive {
        levels: NoiseLevels::paper_default(),
    };
    let cases: [(&str, Objective, ConfigOf); 4] = [
        ("adamw", gbm(20), |s| config(s, OptimizerKind::AdamW)),
        ("egd", gbm(20), |s| config(s, OptimizerKind::Egd)),
        ("additive", additive, |s| config(s, OptimizerKind::AdamW)),
        ("cosine", gbm(20), decaying_config),
    ];
    for (name, objective, config) in cases {
        let data = shapes();
        let straight_dir = common::tempdir(&format!("straight-{name}"));
        let mut straight = trainer_of(&data, objective.clone(), config(6));
        run_to_end(&mut straight, &data, &straight_dir);

        let dir = common::tempdir(&format!("resumed-{name}"));
        let mut first = trainer_of(&data, objective, config(4));
        run_to_end(&mut first, &data, &dir);
        let ckpt = checkpoint_path(&dir);
        let mut resumed = Trainer::resume(&ckpt, &data, &Device::Cpu, &steps(6)).unwrap();
        assert_eq!(resumed.steps_done(), 4);
        let summary = run_to_end(&mut resumed, &data, &dir);
        assert_eq!((summary.end, summary.steps_run), (RunEnd::Finished, 2));

        assert_same_checkpoint(
            &straight.checkpoint().unwrap(),
            &resumed.checkpoint().unwrap(),
        );
        let log_a = read_losses(&train::loss_log_path(&straight_dir)).unwrap();
        let log_b = read_losses(&train::loss_log_path(&dir)).unwrap();
        assert_eq!(log_a, log_b, "loss logs differ ({name})");
    }
}

#[test]
fn a_requested_stop_writes_a_checkpoint_of_every_step_taken() {
    let data = shapes();
    let dir = common::tempdir("stop");
    let mut t = trainer(&data, gbm(10), 50, OptimizerKind::AdamW);
    let stop = AtomicBool::new(false);
    let lock = RunLock::acquire(&dir).unwrap();
    let summary = train::run(&mut t, &data, &lock, &stop, &mut |r| {
        if r.step == 2 {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    })
    .unwrap();
    assert_eq!((summary.end, summary.steps_done), (RunEnd::Stopped, 2));
    let ckpt = Checkpoint::load(checkpoint_path(&dir)).unwrap();
    assert_eq!(ckpt.meta("train.step").unwrap(), "2");
}

#[test]
fn egd_never_changes_a_weight_sign() {
    let data = shapes();
    let mut t = trainer(&data, gbm(10), 3, OptimizerKind::Egd);
    let weights = |t: &Trainer| -> Vec<f32> {
        t.model
            .store
            .iter()
            .flat_map(|(_, w)| w.to_vec().unwrap())
            .collect()
    };
    // Zero-initialised entries (CIN++ beta, rows of levels not drawn yet) take one additive step
    // when their first gradient arrives (SPEC 7); every entry non-zero before keeps its sign.
    t.step(&data).unwrap();
    let before = weights(&t);
    t.step(&data).unwrap();
    t.step(&data).unwrap();
    let after = weights(&t);
    let flipped = before
        .iter()
        .zip(&after)
        .filter(|(&b, &a)| b != 0.0 && (a == 0.0 || (a > 0.0) != (b > 0.0)))
        .count();
    let nonzero = before.iter().filter(|&&b| b != 0.0).count();
    assert!(nonzero > before.len() / 2, "most weights are non-zero");
    assert_eq!(flipped, 0, "weights changed sign under EGD");
}

#[test]
fn resuming_on_other_data_is_an_error() {
    let data = shapes();
    let dir = common::tempdir("other-data");
    let mut t = trainer(&data, gbm(10), 1, OptimizerKind::AdamW);
    run_to_end(&mut t, &data, &dir);
    let other = Dataset::load("shapes", Split::Train).unwrap().truncated(32);
    let err = Trainer::resume(
        &checkpoint_path(&dir),
        &other,
        &Device::Cpu,
        &ResumeChanges::default(),
    )
    .err()
    .expect("resume on other data must fail")
    .to_string();
    assert!(err.contains("trained on"), "{err}");
}

/// The data a run resumes on is identified by its content: the same images under another
/// spelling of the path resume, other images behind the same name and count do not.
#[test]
fn resume_identifies_the_data_by_content_not_by_name() {
    let data = shapes();
    let dir = common::tempdir("data-identity");
    let mut t = trainer(&data, gbm(10), 1, OptimizerKind::AdamW);
    run_to_end(&mut t, &data, &dir);
    let ckpt = checkpoint_path(&dir);

    let respelled = Dataset {
        name: format!("./{}/", data.name),
        ..data.clone()
    };
    Trainer::resume(&ckpt, &respelled, &Device::Cpu, &ResumeChanges::default()).unwrap();

    let mut replaced = data.clone();
    replaced.images.iter_mut().for_each(|p| *p = 255 - *p);
    let err = Trainer::resume(&ckpt, &replaced, &Device::Cpu, &ResumeChanges::default())
        .err()
        .expect("resume on replaced data must fail")
        .to_string();
    assert!(err.contains("trained on"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_checkpoint_samples_with_every_sampler_and_init() {
    let data = shapes();
    let dir = common::tempdir("sample");
    let mut t = trainer(&data, gbm(8), 2, OptimizerKind::AdamW);
    run_to_end(&mut t, &data, &dir);
    let model = ScoreModel::load(&checkpoint_path(&dir), Weights::Ema, None, &Device::Cpu).unwrap();
    for (sampler, init) in [
        (SamplerConfig::adls(0.01, 2, 0.9, 3), InitKind::LogNormal),
        (
            SamplerConfig::asams(0.01, 1, 0.9, 3),
            InitKind::ClassAverage,
        ),
        (SamplerConfig::algorithm1(0.01, 3), InitKind::LogNormal),
    ] {
        let opts = GenerateOptions {
            count: 5,
            batch: 3,
            init,
            sampler,
            additive: AnnealedLangevinConfig::paper_default(3),
        };
        let mut last = None;
        let out = generate(&model, &opts, &mut |p| last = Some(p)).unwrap();
        assert_eq!(out.images.shape(), &[5, 1, 28, 28]);
        let p = last.expect("progress was reported");
        assert_eq!(p.evals_done, p.evals_total);
        assert_eq!(out.stats.steps, 2 * sampler.total_steps(8));
        assert!(out.images.to_vec().unwrap().iter().all(|v| v.is_finite()));
        assert_eq!(
            out.classes.is_some(),
            init == InitKind::ClassAverage,
            "classes are reported for class-average init only"
        );
    }
    // The same seed gives the same images; batches differ from each other.
    let opts = GenerateOptions {
        count: 4,
        batch: 2,
        init: InitKind::LogNormal,
        sampler: SamplerConfig::adls(0.01, 1, 0.9, 5),
        additive: AnnealedLangevinConfig::paper_default(5),
    };
    let a = generate(&model, &opts, &mut |_| {})
        .unwrap()
        .images
        .to_vec()
        .unwrap();
    let b = generate(&model, &opts, &mut |_| {})
        .unwrap()
        .images
        .to_vec()
        .unwrap();
    assert_eq!(a, b);
    assert_ne!(a[..784], a[2 * 784..3 * 784]);
}

/// A one-step run of the tiny preset whose convolutions run in `precision`.
fn trained_in(precision: ConvPrecision, name: &str) -> (Dataset, std::path::PathBuf) {
    let data = shapes();
    let dir = common::tempdir(name);
    let range = PixelRange::new(1.0, 2.0).unwrap();
    let spec = ModelSpec::for_dataset(Preset::Tiny, &data, gbm(10), range)
        .unwrap()
        .with_precision(precision);
    let mut t = Trainer::new(config(1, OptimizerKind::AdamW), spec, &data, &Device::Cpu).unwrap();
    run_to_end(&mut t, &data, &dir);
    (data, dir)
}

/// The network's output on a fixed batch at level 3.
fn output_of(model: &ScoreModel) -> Vec<f32> {
    let x: Vec<f32> = (0..2 * 28 * 28)
        .map(|i| 1.0 + (i % 17) as f32 / 17.0)
        .collect();
    let x = dalemeetslangevin::Tensor::from_vec(x, &[2, 1, 28, 28], &Device::Cpu).unwrap();
    model.output(&x, &[3, 3]).unwrap().to_vec().unwrap()
}

#[test]
fn the_convolution_precision_is_stored_and_reloaded() {
    let (data, dir) = trained_in(ConvPrecision::Tf32, "precision-stored");
    let path = checkpoint_path(&dir);
    let ckpt = Checkpoint::load(&path).unwrap();
    assert_eq!(ckpt.meta("net.conv_precision").unwrap(), "tf32");

    let stored = ScoreModel::load(&path, Weights::Ema, None, &Device::Cpu).unwrap();
    assert_eq!(stored.spec.net.precision(), ConvPrecision::Tf32);
    let fp32 =
        ScoreModel::load(&path, Weights::Ema, Some(ConvPrecision::Fp32), &Device::Cpu).unwrap();
    assert_eq!(fp32.spec.net.precision(), ConvPrecision::Fp32);
    assert_ne!(
        output_of(&stored),
        output_of(&fp32),
        "the loaded network does not run in the stored precision"
    );

    let resumed = Trainer::resume(&path, &data, &Device::Cpu, &steps(2)).unwrap();
    assert_eq!(resumed.model.spec.net.precision(), ConvPrecision::Tf32);
    Trainer::resume(
        &path,
        &data,
        &Device::Cpu,
        &ResumeChanges {
            precision: Some(ConvPrecision::Tf32),
            ..steps(2)
        },
    )
    .unwrap();

    // A checkpoint written before the precision was stored was trained in fp32.
    let mut old = ckpt.clone();
    old.metadata.remove("net.conv_precision").unwrap();
    let old_path = dir.join("old.safetensors");
    old.save(&old_path).unwrap();
    let model = ScoreModel::load(&old_path, Weights::Ema, None, &Device::Cpu).unwrap();
    assert_eq!(model.spec.net.precision(), ConvPrecision::Fp32);
    assert_eq!(output_of(&model), output_of(&fp32));
}

#[test]
fn resuming_with_another_precision_is_refused() {
    let (data, dir) = trained_in(ConvPrecision::Fp32, "precision-refused");
    let path = checkpoint_path(&dir);
    assert_eq!(
        Checkpoint::load(&path)
            .unwrap()
            .meta("net.conv_precision")
            .unwrap(),
        "fp32"
    );
    let err = Trainer::resume(
        &path,
        &data,
        &Device::Cpu,
        &ResumeChanges {
            precision: Some(ConvPrecision::Tf32),
            ..steps(2)
        },
    )
    .err()
    .expect("resuming an fp32 run in tf32 must fail")
    .to_string();
    assert!(
        err.contains("checkpoint.safetensors")
            && err.contains("trained with --precision fp32")
            && err.contains("cannot resume with --precision tf32"),
        "{err}"
    );
}

/// tf32 against fp32 training, relative loss differences. The first step's loss differs only by
/// the forward pass's rounding (measured 1.6e-4, about 2^-13; the bound is 2^-10). After that the
/// two runs' weights drift apart step by step, so the 10-step mean losses are compared: measured
/// worst 7.5e-3 over 100 steps (9.3e-3 before the cpu's exp changed), bound 3e-2.
const TF32_FIRST_STEP_RTOL: f64 = 1.0 / 1024.0;
const TF32_WINDOW_RTOL: f64 = 3e-2;

/// The losses of `steps` steps of the tiny preset with convolutions in `precision` (same seed,
/// so the same batches, levels and noise whatever the precision).
fn losses_in(precision: ConvPrecision, steps: u64) -> Vec<f64> {
    let data = shapes();
    let range = PixelRange::new(1.0, 2.0).unwrap();
    let spec = ModelSpec::for_dataset(Preset::Tiny, &data, gbm(10), range)
        .unwrap()
        .with_precision(precision);
    let mut t = Trainer::new(
        config(steps, OptimizerKind::AdamW),
        spec,
        &data,
        &Device::Cpu,
    )
    .unwrap();
    (0..steps)
        .map(|_| t.step(&data).unwrap().loss as f64)
        .collect()
}

/// bf16 against fp32 training, as for tf32 above: the first step's loss differs by the forward
/// pass's rounding (measured 5.5e-4, about 2^-11; the bound is 2^-7, bf16's rounding of one
/// product), the 10-step means by the drift of the weights (measured worst 6.1e-3 over 100
/// steps, the last window; bound 3e-2, as tf32's). The cpu path is deterministic, so these are
/// the same numbers on every run.
const BF16_FIRST_STEP_RTOL: f64 = 1.0 / 128.0;
const BF16_WINDOW_RTOL: f64 = 3e-2;

/// 100 training steps with every convolution pass in `precision` track the fp32 run within the
/// stated relative bounds: on the first step's loss and on every 10-step mean.
fn check_training_tracks_fp32(precision: ConvPrecision, first_rtol: f64, window_rtol: f64) {
    let fp32 = losses_in(ConvPrecision::Fp32, 100);
    let other = losses_in(precision, 100);
    let window_means = |l: &[f64]| {
        l.chunks(10)
            .map(|c| c.iter().sum::<f64>() / 10.0)
            .collect::<Vec<_>>()
    };
    let (a, b) = (window_means(&fp32), window_means(&other));
    let first = (other[0] - fp32[0]).abs() / fp32[0].abs();
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (y - x).abs() / x.abs())
        .fold(0.0f64, f64::max);
    eprintln!(
        "{precision}: first step {first:.3e}; worst 10-step mean {worst:.3e}; fp32 {a:?}; {precision} {b:?}"
    );
    assert!(other.iter().all(|l| l.is_finite()));
    assert!(first < first_rtol, "{precision}: first step: {first:.3e}");
    assert!(
        worst < window_rtol,
        "{precision}: 10-step mean losses: {worst:.3e}\nfp32 {a:?}\n{precision} {b:?}"
    );
}

/// 100 training steps with every convolution pass in tf32 track the fp32 run. On cpu the tf32
/// convolutions round their operands exactly as the tensor-core kernels do (tests/conv.rs checks
/// each kernel against that reference on emu), so this is the tensor-core training run's
/// arithmetic; on emu 100 steps would take over an hour (each wmma tile is computed by 32 lanes).
#[test]
fn a_hundred_tf32_training_steps_track_the_fp32_losses() {
    check_training_tracks_fp32(ConvPrecision::Tf32, TF32_FIRST_STEP_RTOL, TF32_WINDOW_RTOL);
}

/// The same for bf16, whose operands keep 3 fewer mantissa bits.
#[test]
fn a_hundred_bf16_training_steps_track_the_fp32_losses() {
    check_training_tracks_fp32(ConvPrecision::Bf16, BF16_FIRST_STEP_RTOL, BF16_WINDOW_RTOL);
}

/// The cpu backend spreads samples, planes and elements over rayon's pool; the weights and the
/// losses of a run must not depend on how many threads it has (a machine with more cores, or
/// RAYON_NUM_THREADS, resumes a run bit for bit). Batch 20 splits the convolutions' weight
/// gradient into runs of two samples and every element-wise op over several threads.
#[test]
fn training_does_not_depend_on_the_number_of_cpu_threads() {
    let data = shapes();
    let runs: Vec<_> = [1, 2, 3]
        .into_iter()
        .map(|threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let range = PixelRange::new(1.0, 2.0).unwrap();
                let spec = ModelSpec::for_dataset(Preset::Tiny, &data, gbm(20), range).unwrap();
                let config = TrainConfig {
                    seed: 7,
                    ..TrainConfig::new(20, 3)
                };
                let mut t = Trainer::new(config, spec, &data, &Device::Cpu).unwrap();
                let dir = common::tempdir(&format!("threads-{threads}"));
                run_to_end(&mut t, &data, &dir);
                let losses = read_losses(&train::loss_log_path(&dir)).unwrap();
                (t.checkpoint().unwrap(), losses)
            })
        })
        .collect();
    for (ckpt, losses) in &runs[1..] {
        assert_same_checkpoint(&runs[0].0, ckpt);
        assert_eq!(&runs[0].1, losses, "loss logs differ");
    }
}
