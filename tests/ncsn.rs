//! The NCSN score network (SPEC section 9, reference/NETWORK.md) against the float64 PyTorch
//! golden files of reference/make_golden.py: parameter names, order and shapes, the output, the
//! loss L = sum(out * grad_out), dL/dx and dL/dparam for every parameter. Also the paper preset
//! end to end on cpu and the parameter counts of every preset.
mod common;

use std::time::Instant;

use common::golden::{self, Golden, Tolerances};
use common::kernel_devices;
use dalemeetslangevin::autograd::{ParamStore, Tape};
use dalemeetslangevin::nn::ncsn::{Ncsn, NcsnConfig, IMAGE_SIZES};
use dalemeetslangevin::nn::Preset;
use dalemeetslangevin::ops::ConvPrecision;
use dalemeetslangevin::{Device, Tensor};

/// fp32 convolutions. The reference is float64 rounded to float32; PyTorch's own float32 run
/// deviates by about 1e-6 (outputs) and 1.5e-5 (gradients) from it (the files' metadata) and this
/// engine on cpu and emu by at most 1e-6 and 5e-6, so these leave room for a different summation
/// order (CUDA) but not for a wrong term.
const FP32: Tolerances = Tolerances {
    output: 2e-5,
    input_grad: 5e-5,
    param_grad: 1e-4,
    loss: 1e-5,
};

/// tf32 convolutions (all three passes). One convolution in tf32 is within 2^-10 sum |a||b| of
/// fp32 (tests/conv.rs); through the whole network, on the golden inputs, the worst errors
/// measured on cpu are 1.6 2^-10 for the output, 3.4 2^-10 for dL/dx and 17 2^-10 for a
/// parameter gradient (small gradients, such as a refine block's adapter convolution's, lose the
/// most relative accuracy); on the tensor-core kernels (emu) 1.6, 3.0 and 10. The bound is about
/// 2.5 times the worst: an operand left unrounded or a wrong term moves them far beyond it.
const TF32: Tolerances = Tolerances {
    output: 4.0 / 1024.0,
    input_grad: 8.0 / 1024.0,
    param_grad: 40.0 / 1024.0,
    loss: 2e-4,
};

/// bf16 convolutions (all three passes), 3 mantissa bits fewer than tf32: one convolution is
/// within 2^-7 sum |a||b| of fp32 (tests/conv.rs). Through the whole network on cpu the worst
/// errors measured are 1.9 2^-7 for the output, 4.4 2^-7 for dL/dx and 27 2^-7 (0.21) for a
/// parameter gradient (a CIN++ embedding's in the second refine block), the loss 4.1e-5 of its
/// scale. The bounds are about 2.5 times the worst, as tf32's.
const BF16: Tolerances = Tolerances {
    output: 5.0 / 128.0,
    input_grad: 11.0 / 128.0,
    param_grad: 64.0 / 128.0,
    loss: 2e-4,
};

const GOLDEN_FILES: [&str; 3] = [
    "ncsn_tiny_28.safetensors",
    "ncsn_tiny_32.safetensors",
    "ncsn_tiny_deep_28.safetensors",
];

/// The NCSN configuration of a golden file; its width and topology must be what the preset says.
fn config_of(golden: &Golden) -> NcsnConfig {
    let preset = Preset::parse(golden.file.meta("preset").unwrap()).unwrap();
    let cfg = NcsnConfig::new(
        preset,
        golden.meta("channels"),
        golden.meta("image_size"),
        golden.meta("num_classes"),
    )
    .unwrap();
    assert_eq!(cfg.ngf, golden.meta::<usize>("ngf"), "{}: ngf", golden.name);
    assert_eq!(
        cfg.topology.name(),
        golden.file.meta("topology").unwrap(),
        "{}: topology",
        golden.name
    );
    cfg
}

/// Compares the NCSN network built from the file's configuration, on `dev` with convolutions in
/// `precision`, against everything the file holds.
fn check_golden(name: &'static str, dev: &Device, precision: ConvPrecision, tol: &Tolerances) {
    let golden = Golden::load(name);
    let cfg = config_of(&golden).with_precision(precision);
    let mut store = ParamStore::new(dev, 0);
    let net = Ncsn::new(&mut store, &cfg).unwrap();
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
fn ncsn_matches_pytorch_golden_files_on_cpu() {
    for name in GOLDEN_FILES {
        check_golden(name, &Device::Cpu, ConvPrecision::Fp32, &FP32);
    }
}

#[test]
fn ncsn_matches_pytorch_golden_file_on_kernel_devices() {
    for dev in kernel_devices("ncsn_golden_kernels") {
        check_golden(GOLDEN_FILES[0], &dev, ConvPrecision::Fp32, &FP32);
    }
}

/// The whole network's output, loss and every gradient with all three convolution passes in a
/// tensor-core `precision`, against the float64 golden file within `tol`: on cpu (the operands
/// rounded: the reference) and on the GPU's tensor cores when present. On the emulator the network
/// takes 5.5 minutes a schedule (each wmma tile is computed by all 32 lanes), so it runs there only
/// with `DML_TF32_NETWORK_ON_EMU=1` (measured in tf32: the errors of the TF32 comment, identical in
/// both schedules); the kernels are tested on the emulator one by one in tests/conv.rs.
fn check_golden_on_tensor_cores(precision: ConvPrecision, tol: &Tolerances, test: &str) {
    check_golden(GOLDEN_FILES[0], &Device::Cpu, precision, tol);
    let on_emu = std::env::var("DML_TF32_NETWORK_ON_EMU").is_ok_and(|v| v == "1");
    for dev in kernel_devices(test) {
        if on_emu || !matches!(dev, Device::Emu(_)) {
            check_golden(GOLDEN_FILES[0], &dev, precision, tol);
        }
    }
}

#[test]
fn ncsn_with_tf32_convolutions_stays_within_the_tf32_bound_of_the_golden_file() {
    check_golden_on_tensor_cores(ConvPrecision::Tf32, &TF32, "ncsn_golden_tf32");
}

#[test]
fn ncsn_with_bf16_convolutions_stays_within_the_bf16_bound_of_the_golden_file() {
    check_golden_on_tensor_cores(ConvPrecision::Bf16, &BF16, "ncsn_golden_bf16");
}

#[test]
fn ncsn_paper_preset_trains_on_cpu_at_batch_8() {
    let dev = Device::Cpu;
    let cfg = NcsnConfig::new(Preset::Paper, 1, 28, Preset::Paper.default_levels()).unwrap();
    let mut store = ParamStore::new(&dev, 1);
    let net = Ncsn::new(&mut store, &cfg).unwrap();
    assert_eq!(
        store.num_elements(),
        29_117_697,
        "paper parameters (NETWORK.md section 8)"
    );
    let batch = 8;
    let shape = cfg.input_shape(batch);
    let n: usize = shape.iter().product();
    let x: Vec<f32> = (0..n).map(|i| 1.0 + (i % 97) as f32 / 97.0).collect();
    let levels: Vec<f32> = (0..batch)
        .map(|b| (b * 131 % cfg.n_levels) as f32)
        .collect();
    let start = Instant::now();
    let mut tape = Tape::new(&store);
    let x = tape.constant(Tensor::from_slice(&x, &shape, &dev).unwrap());
    let levels = tape.constant(Tensor::from_slice(&levels, &[batch], &dev).unwrap());
    let out = net.forward(&mut tape, &x, &levels).unwrap();
    let forward = start.elapsed();
    let values = out.value().to_vec().unwrap();
    assert_eq!(out.shape(), shape, "paper output shape");
    assert!(
        values.iter().all(|v| v.is_finite()),
        "paper output not finite"
    );
    let seed = Tensor::from_vec(vec![1.0 / n as f32; n], &shape, &dev).unwrap();
    let grads = tape.backward(&out, seed).unwrap();
    let total = start.elapsed();
    for (name, p) in store.iter() {
        let g = grads
            .param(name)
            .unwrap_or_else(|| panic!("paper: no gradient for {name}"));
        assert_eq!(g.shape(), p.shape(), "paper: gradient shape of {name}");
        let g = g.to_vec().unwrap();
        assert!(
            g.iter().all(|v| v.is_finite()),
            "paper: gradient of {name} not finite"
        );
        // Embedding rows of levels not in the batch get zero gradient; everything else moves.
        assert!(
            g.iter().any(|&v| v != 0.0),
            "paper: gradient of {name} is all zero"
        );
    }
    eprintln!(
        "paper 1x28x28 batch {batch} on cpu, {} parameters: forward {forward:.2?}, forward + \
         backward {total:.2?}",
        store.num_elements()
    );
}

/// NETWORK.md section 8 (generated by reference/describe.py from reference/ncsn.py): preset,
/// channels, image size, parameters at the preset's default N, of which norm embeddings.
const REFERENCE_COUNTS: [(Preset, usize, usize, usize, usize); 8] = [
    (Preset::Paper, 1, 28, 29_117_697, 21_696_000),
    (Preset::Paper, 3, 32, 73_075_715, 43_392_000),
    (Preset::Deep, 1, 28, 58_682_625, 37_824_000),
    (Preset::Deep, 3, 32, 159_075_331, 75_648_000),
    (Preset::Tiny, 1, 28, 143_505, 27_120),
    (Preset::Tiny, 3, 32, 143_795, 27_120),
    (Preset::TinyDeep, 1, 28, 105_465, 23_640),
    (Preset::TinyDeep, 3, 32, 105_611, 23_640),
];

/// The network's parameters, counted from the shapes in its store.
fn built_parameter_count(cfg: &NcsnConfig) -> usize {
    let mut store = ParamStore::new(&Device::Cpu, 0);
    Ncsn::new(&mut store, cfg).unwrap();
    let from_shapes: usize = store
        .iter()
        .map(|(_, t)| t.shape().iter().product::<usize>())
        .sum();
    assert_eq!(from_shapes, store.num_elements(), "{}", cfg.describe());
    from_shapes
}

#[test]
fn ncsn_parameter_counts_match_reference() {
    // Built with one level, every preset is cheap to allocate: the count is then
    // (count without embeddings) + (sum of 3w over the norm layers), NETWORK.md section 1. The
    // paper preset at its full N = 1000 is built by ncsn_paper_preset_trains_on_cpu_at_batch_8.
    for (preset, channels, size, total, embeddings) in REFERENCE_COUNTS {
        assert!(IMAGE_SIZES.contains(&size));
        let n = preset.default_levels();
        let one_level = NcsnConfig::new(preset, channels, size, 1).unwrap();
        let want = total - embeddings + embeddings / n;
        let what = one_level.describe();
        assert_eq!(built_parameter_count(&one_level), want, "{what}: built");
        assert_eq!(
            one_level.parameter_count(),
            want,
            "{what}: counted from stages"
        );
        let full = NcsnConfig::new(preset, channels, size, n).unwrap();
        assert_eq!(full.parameter_count(), total, "{}", full.describe());
    }
    let tiny = NcsnConfig::new(Preset::Tiny, 1, 28, Preset::Tiny.default_levels()).unwrap();
    assert_eq!(built_parameter_count(&tiny), 143_505, "{}", tiny.describe());
}
