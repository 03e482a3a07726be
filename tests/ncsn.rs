//! The NCSN score network (SPEC section 9, reference/NETWORK.md) against the float64 PyTorch
//! golden files of reference/make_golden.py: parameter names, order and shapes, the output, the
//! loss L = sum(out * grad_out), dL/dx and dL/dparam for every parameter. Also the paper preset
//! end to end on cpu and the parameter counts of every preset.
mod common;

use std::collections::BTreeSet;
use std::time::Instant;

use common::kernel_devices;
use dalemeetslangevin::autograd::{ParamStore, Tape};
use dalemeetslangevin::checkpoint::Checkpoint;
use dalemeetslangevin::nn::ncsn::{Ncsn, NcsnConfig, Preset, IMAGE_SIZES};
use dalemeetslangevin::ops::ConvPrecision;
use dalemeetslangevin::{Device, Tensor};

/// Largest allowed max|got - want| / max|want| per tensor, and the loss's error against
/// sum |out * g| (the loss is a sum of terms of both signs).
struct Tolerances {
    output: f64,
    input_grad: f64,
    param_grad: f64,
    loss: f64,
}

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

const GOLDEN_FILES: [&str; 3] = [
    "ncsn_tiny_28.safetensors",
    "ncsn_tiny_32.safetensors",
    "ncsn_tiny_deep_28.safetensors",
];

struct Golden {
    name: &'static str,
    file: Checkpoint,
}

impl Golden {
    fn load(name: &'static str) -> Self {
        let path = common::source_dir().join("tests/data").join(name);
        let file = Checkpoint::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        Self { name, file }
    }

    fn host(&self, key: &str) -> &(Vec<usize>, Vec<f32>) {
        self.file
            .tensors
            .get(key)
            .unwrap_or_else(|| panic!("{}: no tensor '{key}'", self.name))
    }

    fn tensor(&self, key: &str, dev: &Device) -> Tensor {
        let (shape, data) = self.host(key);
        Tensor::from_slice(data, shape, dev).unwrap()
    }

    fn meta<T: std::str::FromStr>(&self, key: &str) -> T
    where
        T::Err: std::fmt::Display,
    {
        self.file
            .meta_parse(key)
            .unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }

    /// The network the file was made with; its width and topology must be what the preset says.
    fn config(&self) -> NcsnConfig {
        let preset = Preset::parse(self.file.meta("preset").unwrap()).unwrap();
        let cfg = NcsnConfig::new(
            preset,
            self.meta("channels"),
            self.meta("image_size"),
            self.meta("num_classes"),
        )
        .unwrap();
        assert_eq!(cfg.ngf, self.meta::<usize>("ngf"), "{}: ngf", self.name);
        assert_eq!(
            cfg.topology.name(),
            self.file.meta("topology").unwrap(),
            "{}: topology",
            self.name
        );
        cfg
    }

    /// The file's parameter names in PyTorch's state_dict order.
    fn parameter_names(&self) -> Vec<String> {
        let names: Vec<String> = self
            .file
            .meta("parameter_names")
            .unwrap()
            .split(',')
            .map(str::to_string)
            .collect();
        let keys: BTreeSet<&str> = self
            .file
            .tensors
            .keys()
            .filter_map(|k| k.strip_prefix("param."))
            .collect();
        let listed: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(listed, keys, "{}: metadata vs param.* tensors", self.name);
        names
    }
}

/// The network of `golden` on `dev` with every parameter taken from the file. The Rust parameter
/// list must be the file's exactly: same names, same order, same shapes.
fn load_network(golden: &Golden, dev: &Device, precision: ConvPrecision) -> (ParamStore, Ncsn) {
    let cfg = golden.config().with_precision(precision);
    let mut store = ParamStore::new(dev, 0);
    let net = Ncsn::new(&mut store, &cfg).unwrap();
    let ours: Vec<String> = store.names().map(str::to_string).collect();
    let theirs = golden.parameter_names();
    let missing: Vec<&String> = theirs.iter().filter(|n| !ours.contains(n)).collect();
    let extra: Vec<&String> = ours.iter().filter(|n| !theirs.contains(n)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{}: parameters in the file but not the network: {missing:?}; in the network but not \
         the file: {extra:?}",
        golden.name
    );
    assert_eq!(ours, theirs, "{}: parameter order", golden.name);
    assert_eq!(
        store.num_elements(),
        golden.meta::<usize>("parameter_count"),
        "{}: parameter count",
        golden.name
    );
    for name in &theirs {
        let shape = store.get(name).unwrap().shape().to_vec();
        let value = golden
            .file
            .tensor(&format!("param.{name}"), &shape, dev)
            .unwrap_or_else(|e| panic!("{}: parameter {name}: {e}", golden.name));
        store.set(name, value).unwrap();
    }
    (store, net)
}

/// Everything the golden file holds a reference for, from one forward and backward pass.
struct Results {
    output: Vec<f32>,
    loss: f64,
    /// sum |out * g|, the scale of the loss's rounding error.
    loss_scale: f64,
    input_grad: Vec<f32>,
    param_grads: Vec<(String, Vec<f32>)>,
}

fn run_network(golden: &Golden, dev: &Device, precision: ConvPrecision) -> Results {
    let (store, net) = load_network(golden, dev, precision);
    let mut tape = Tape::new(&store);
    let x = tape.leaf(golden.tensor("input.x", dev));
    let levels = tape.constant(golden.tensor("input.levels", dev));
    let out = net.forward(&mut tape, &x, &levels).unwrap();
    let output = out.value().to_vec().unwrap();
    // make_golden.py: L = sum(out * g), so dL/dout = g.
    let (_, g) = golden.host("input.grad_out");
    let loss = output
        .iter()
        .zip(g)
        .map(|(&o, &g)| o as f64 * g as f64)
        .sum();
    let loss_scale = output
        .iter()
        .zip(g)
        .map(|(&o, &g)| (o as f64 * g as f64).abs())
        .sum();
    let grads = tape
        .backward(&out, golden.tensor("input.grad_out", dev))
        .unwrap();
    let input_grad = grads
        .wrt(&x)
        .unwrap_or_else(|| panic!("{}: no gradient for the input", golden.name))
        .to_vec()
        .unwrap();
    let param_grads = store
        .names()
        .map(|name| {
            let g = grads
                .param(name)
                .unwrap_or_else(|| panic!("{}: no gradient for {name}", golden.name));
            (name.to_string(), g.to_vec().unwrap())
        })
        .collect();
    Results {
        output,
        loss,
        loss_scale,
        input_grad,
        param_grads,
    }
}

/// max|got - want| / max|want| of one tensor, failing with the tensor's name and worst element
/// when it exceeds `rtol` or anything is not finite.
fn relative_error(what: &str, got: &[f32], want: &[f32], rtol: f64) -> f64 {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} elements vs {}",
        got.len(),
        want.len()
    );
    let scale = want.iter().fold(0.0f64, |m, &w| m.max((w as f64).abs()));
    let scale = if scale > 0.0 { scale } else { 1.0 };
    let (worst, err) = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w as f64).abs())
        .enumerate()
        .fold((0, 0.0f64), |best, (i, e)| {
            if e > best.1 || e.is_nan() {
                (i, e)
            } else {
                best
            }
        });
    let rel = err / scale;
    assert!(
        rel <= rtol && got.iter().all(|g| g.is_finite()),
        "{what}: relative error {rel:.3e} > {rtol:.0e} (max |want| {scale:.4e}); worst element \
         {worst}: got {}, want {}",
        got[worst],
        want[worst]
    );
    rel
}

/// Compares everything against the file on `dev` with convolutions in `precision`; prints the
/// worst relative errors.
fn check_golden(name: &'static str, dev: &Device, precision: ConvPrecision, tol: &Tolerances) {
    let golden = Golden::load(name);
    let start = Instant::now();
    let got = run_network(&golden, dev, precision);
    let elapsed = start.elapsed();
    let tag = format!("{name} on {dev} in {precision}");
    let out_err = relative_error(
        &format!("{tag}: output"),
        &got.output,
        &golden.host("output").1,
        tol.output,
    );
    let want_loss: f64 = golden.meta("loss_float64");
    let loss_err = (got.loss - want_loss).abs() / got.loss_scale;
    assert!(
        loss_err <= tol.loss,
        "{tag}: loss {} vs {want_loss} (error {loss_err:.3e} of sum |out * g| = {})",
        got.loss,
        got.loss_scale
    );
    let x_err = relative_error(
        &format!("{tag}: input_grad.x"),
        &got.input_grad,
        &golden.host("input_grad.x").1,
        tol.input_grad,
    );
    let (worst_param, param_err) = got
        .param_grads
        .iter()
        .map(|(pname, g)| {
            let want = &golden.host(&format!("grad.{pname}")).1;
            let e = relative_error(&format!("{tag}: grad.{pname}"), g, want, tol.param_grad);
            (pname.as_str(), e)
        })
        .fold(("", 0.0f64), |a, b| if b.1 > a.1 { b } else { a });
    eprintln!(
        "{tag}: {:.2?}; worst relative errors: output {out_err:.2e}, loss {loss_err:.2e}, \
         input grad {x_err:.2e}, parameter grads {param_err:.2e} ({worst_param}); {} parameters",
        elapsed,
        got.param_grads.len()
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

/// The whole network's output, loss and every gradient with all three convolution passes in
/// tf32, against the float64 golden file: on cpu (the operands rounded: the reference) and on the
/// GPU's tensor cores when present. On the emulator the network takes 5.5 minutes a schedule (each
/// wmma tile is computed by all 32 lanes), so it runs there only with `DML_TF32_NETWORK_ON_EMU=1`
/// (measured: the errors of the TF32 comment, identical in both schedules); the tf32 kernels are
/// tested on the emulator one by one in tests/conv.rs.
#[test]
fn ncsn_with_tf32_convolutions_stays_within_the_tf32_bound_of_the_golden_file() {
    check_golden(GOLDEN_FILES[0], &Device::Cpu, ConvPrecision::Tf32, &TF32);
    let on_emu = std::env::var("DML_TF32_NETWORK_ON_EMU").is_ok_and(|v| v == "1");
    for dev in kernel_devices("ncsn_golden_tf32") {
        if on_emu || !matches!(dev, Device::Emu(_)) {
            check_golden(GOLDEN_FILES[0], &dev, ConvPrecision::Tf32, &TF32);
        }
    }
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
