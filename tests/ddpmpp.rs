//! The DDPM++ score network (SPEC section 11) against the float64 PyTorch golden files of
//! reference/make_ddpmpp_golden.py (reference/ddpmpp.py, itself checked against score_sde's own
//! model by reference/check_against_score_sde.py): parameter names, order and shapes, the output,
//! the loss L = sum(out * grad_out), dL/dx and dL/dparam for every parameter. Also the presets'
//! sizes and refusals, and score_sde's initialisation.
mod common;

use common::golden::{self, Golden, Tolerances};
use common::kernel_devices;
use dalemeetslangevin::autograd::{ParamStore, Tape};
use dalemeetslangevin::nn::ddpmpp::{Ddpmpp, DdpmppConfig};
use dalemeetslangevin::nn::Preset;
use dalemeetslangevin::ops::{ConvPrecision, PhiloxDraw};
use dalemeetslangevin::rng::stream;
use dalemeetslangevin::{Device, Tensor};

/// fp32 throughout. The reference is float64 rounded to float32; PyTorch's own float32 run
/// deviates by 3.4e-6 (output) and 1.3e-5 (gradients) from it (the files' metadata). The bounds
/// leave room for another summation order but not for a wrong term: a wrong initial scale, a
/// missing 1/sqrt(2) or a transposed product moves the output by 1e-2 or more.
const FP32: Tolerances = Tolerances {
    output: 2e-5,
    input_grad: 5e-5,
    param_grad: 2e-4,
    loss: 1e-5,
};

const GOLDEN_FILES: [&str; 2] = ["ddpmpp_tiny_28.safetensors", "ddpmpp_tiny_32.safetensors"];

/// The DDPM++ configuration of a golden file; its widths must be what the preset says.
fn config_of(golden: &Golden) -> DdpmppConfig {
    let preset = Preset::parse(golden.file.meta("preset").unwrap()).unwrap();
    let cfg = DdpmppConfig::new(
        preset,
        golden.meta("channels"),
        golden.meta("image_size"),
        1000,
    )
    .unwrap();
    let list = |key: &str| -> Vec<usize> {
        golden
            .meta_list(key)
            .iter()
            .map(|v| v.parse().unwrap())
            .collect()
    };
    assert_eq!(cfg.nf, golden.meta::<usize>("nf"), "{}: nf", golden.name);
    assert_eq!(cfg.ch_mult, list("ch_mult"), "{}: ch_mult", golden.name);
    assert_eq!(cfg.num_res_blocks, golden.meta::<usize>("num_res_blocks"));
    assert_eq!(cfg.attn_resolutions, list("attn_resolutions"));
    cfg
}

fn check_golden(name: &'static str, dev: &Device, precision: ConvPrecision, tol: &Tolerances) {
    let golden = Golden::load(name);
    let cfg = config_of(&golden).with_precision(precision);
    let mut store = ParamStore::new(dev, 0);
    let net = Ddpmpp::new(&mut store, &cfg).unwrap();
    golden.load_parameters(&mut store, dev);
    let forward: &golden::Forward = &|t, x, k| net.forward(t, x, k);
    golden::check(
        &golden,
        &store,
        forward,
        &format!("{name} on {dev} in {precision}"),
        tol,
    );
}

#[test]
fn ddpmpp_matches_pytorch_golden_files_on_cpu() {
    for name in GOLDEN_FILES {
        check_golden(name, &Device::Cpu, ConvPrecision::Fp32, &FP32);
    }
}

#[test]
fn ddpmpp_matches_pytorch_golden_file_on_kernel_devices() {
    for dev in kernel_devices("ddpmpp_golden_kernels") {
        check_golden(GOLDEN_FILES[1], &dev, ConvPrecision::Fp32, &FP32);
    }
}

#[test]
fn ddpmpp_presets_have_the_released_sizes_and_refuse_what_they_cannot_run() {
    let count = |preset, c, s| {
        let cfg = DdpmppConfig::new(preset, c, s, 1000).unwrap();
        let mut store = ParamStore::new(&Device::Cpu, 0);
        Ddpmpp::new(&mut store, &cfg).unwrap();
        store.num_elements()
    };
    // reference/ddpmpp.py's counts (score_sde's, checked by check_against_score_sde.py).
    assert_eq!(count(Preset::DdpmppTiny, 1, 28), 47_985);
    assert_eq!(count(Preset::DdpmppTiny, 3, 32), 48_275);
    assert_eq!(count(Preset::Ddpmpp, 3, 32), 106_632_579);
    for (preset, c, s, why) in [
        (Preset::Ddpmpp, 1, 28, "multiple of 8"),
        (Preset::DdpmppTiny, 2, 28, "image channels"),
        (Preset::DdpmppTiny, 1, 27, "multiple of 2"),
        (Preset::Tiny, 1, 28, "not a DDPM++ preset"),
    ] {
        let e = DdpmppConfig::new(preset, c, s, 10).unwrap_err().to_string();
        assert!(e.contains(why), "{preset} {c}x{s}x{s}: {e}");
    }
}

#[test]
fn ddpmpp_starts_with_score_sde_initialisation_and_refuses_bad_inputs() {
    let cfg = DdpmppConfig::new(Preset::DdpmppTiny, 1, 28, 10).unwrap();
    let mut store = ParamStore::new(&Device::Cpu, 7);
    let net = Ddpmpp::new(&mut store, &cfg).unwrap();
    let max_abs = |name: &str| {
        let v = store.get(name).unwrap().to_vec().unwrap();
        v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
    };
    // default_init: U(-b, b), b = sqrt(3 scale / fan_avg); scale 0 means 1e-10.
    let bound =
        |fan_in: f32, fan_out: f32, scale: f32| (3.0 * scale / ((fan_in + fan_out) / 2.0)).sqrt();
    let b = bound(72.0, 72.0, 1.0); // Conv_0 of the first block, 8 -> 8 channels, 3x3
    assert!(
        max_abs("all_modules.3.Conv_0.weight") <= b
            && max_abs("all_modules.3.Conv_0.weight") > 0.8 * b
    );
    assert!(max_abs("all_modules.3.Conv_1.weight") <= bound(72.0, 72.0, 1e-10));
    assert!(max_abs("all_modules.6.NIN_0.W") <= bound(16.0, 16.0, 0.1));
    assert!(max_abs("all_modules.6.NIN_0.W") > 0.8 * bound(16.0, 16.0, 0.1));
    assert_eq!(max_abs("all_modules.3.Conv_0.bias"), 0.0);
    assert_eq!(
        store
            .get("all_modules.3.GroupNorm_0.weight")
            .unwrap()
            .to_vec()
            .unwrap(),
        [1.0; 8]
    );

    let mut tape = Tape::inference(&store);
    let x = tape.constant(Tensor::zeros(&[2, 1, 28, 28], &Device::Cpu).unwrap());
    let bad_level = tape.constant(Tensor::from_vec(vec![0.0, 10.0], &[2], &Device::Cpu).unwrap());
    let e = net
        .forward(&mut tape, &x, &bad_level)
        .unwrap_err()
        .to_string();
    assert!(e.contains("level 10"), "{e}");
    let levels = tape.constant(Tensor::from_vec(vec![0.0], &[1], &Device::Cpu).unwrap());
    let e = net.forward(&mut tape, &x, &levels).unwrap_err().to_string();
    assert!(e.contains("levels [1] for a batch of 2"), "{e}");
    let wrong = tape.constant(Tensor::zeros(&[2, 3, 28, 28], &Device::Cpu).unwrap());
    let two = tape.constant(Tensor::zeros(&[2], &Device::Cpu).unwrap());
    let e = net
        .forward(&mut tape, &wrong, &two)
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not fit the network"), "{e}");
}

#[test]
fn ddpmpp_dropout_draws_its_masks_from_the_training_step() {
    let mut cfg = DdpmppConfig::new(Preset::DdpmppTiny, 1, 28, 10).unwrap();
    cfg.dropout = 0.5;
    let mut store = ParamStore::new(&Device::Cpu, 3);
    let net = Ddpmpp::new(&mut store, &cfg).unwrap();
    // Open the residual branches (Conv_1 starts at 1e-10 scale) so dropout shows in the output.
    let names: Vec<String> = store.names().map(str::to_string).collect();
    for name in names.iter().filter(|n| n.contains("Conv_1.weight")) {
        let shape = store.get(name).unwrap().shape().to_vec();
        let n: usize = shape.iter().product();
        let values = (0..n)
            .map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * 0.2)
            .collect();
        store
            .set(
                name,
                Tensor::from_vec(values, &shape, &Device::Cpu).unwrap(),
            )
            .unwrap();
    }
    let run = |step: Option<u32>| {
        let mut tape = Tape::inference(&store);
        let pixels = (0..2 * 784).map(|i| 1.0 + (i % 29) as f32 / 29.0).collect();
        let x = tape.constant(Tensor::from_vec(pixels, &[2, 1, 28, 28], &Device::Cpu).unwrap());
        let k = tape.constant(Tensor::from_vec(vec![1.0, 7.0], &[2], &Device::Cpu).unwrap());
        let out = match step {
            Some(step) => {
                let draw = PhiloxDraw::new(9, stream::DROPOUT, step);
                net.forward_train(&mut tape, &x, &k, draw).unwrap()
            }
            None => net.forward(&mut tape, &x, &k).unwrap(),
        };
        out.value().to_vec().unwrap()
    };
    let (inference, step1, again, step2) = (run(None), run(Some(1)), run(Some(1)), run(Some(2)));
    assert_eq!(step1, again, "the same step draws the same masks");
    assert_ne!(step1, inference, "training drops activations");
    assert_ne!(step1, step2, "another step draws other masks");
    assert_eq!(inference, run(None), "inference has no dropout");
}
