//! The golden-file harness of the score networks (docs/DESIGN.md section 5, item 3): a file of
//! reference/make_golden.py or make_ddpmpp_golden.py holds float64 PyTorch results for one
//! network's parameters and inputs; a test loads the parameters into the engine's network, runs
//! one forward and backward pass, and compares the output, the loss L = sum(out * grad_out),
//! dL/dx and dL/dparam for every parameter, tensor by tensor.
use std::collections::BTreeSet;
use std::time::Instant;

use dalemeetslangevin::autograd::{ParamStore, Tape, Var};
use dalemeetslangevin::checkpoint::Checkpoint;
use dalemeetslangevin::{Device, Result, Tensor};

/// Largest allowed max|got - want| / max|want| per tensor, and the loss's error against
/// sum |out * g| (the loss is a sum of terms of both signs).
pub struct Tolerances {
    pub output: f64,
    pub input_grad: f64,
    pub param_grad: f64,
    pub loss: f64,
}

pub struct Golden {
    pub name: &'static str,
    pub file: Checkpoint,
}

impl Golden {
    pub fn load(name: &'static str) -> Self {
        let path = super::source_dir().join("tests/data").join(name);
        let file = Checkpoint::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        Self { name, file }
    }

    pub fn host(&self, key: &str) -> &(Vec<usize>, Vec<f32>) {
        self.file
            .tensors
            .get(key)
            .unwrap_or_else(|| panic!("{}: no tensor '{key}'", self.name))
    }

    pub fn tensor(&self, key: &str, dev: &Device) -> Tensor {
        let (shape, data) = self.host(key);
        Tensor::from_slice(data, shape, dev).unwrap()
    }

    pub fn meta<T: std::str::FromStr>(&self, key: &str) -> T
    where
        T::Err: std::fmt::Display,
    {
        self.file
            .meta_parse(key)
            .unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }

    /// A comma-separated metadata list (empty when the key is absent or empty).
    pub fn meta_list(&self, key: &str) -> Vec<String> {
        self.file
            .metadata
            .get(key)
            .map(|v| {
                v.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The file's parameter names in PyTorch's state_dict order.
    pub fn parameter_names(&self) -> Vec<String> {
        let names = self.meta_list("parameter_names");
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

    /// Sets every parameter of `store` (a freshly built network's) from the file. The Rust
    /// parameter list must be the file's exactly: same names, same order, same shapes.
    pub fn load_parameters(&self, store: &mut ParamStore, dev: &Device) {
        let ours: Vec<String> = store.names().map(str::to_string).collect();
        let theirs = self.parameter_names();
        let missing: Vec<&String> = theirs.iter().filter(|n| !ours.contains(n)).collect();
        let extra: Vec<&String> = ours.iter().filter(|n| !theirs.contains(n)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{}: parameters in the file but not the network: {missing:?}; in the network but \
             not the file: {extra:?}",
            self.name
        );
        assert_eq!(ours, theirs, "{}: parameter order", self.name);
        assert_eq!(
            store.num_elements(),
            self.meta::<usize>("parameter_count"),
            "{}: parameter count",
            self.name
        );
        for name in &theirs {
            let shape = store.get(name).unwrap().shape().to_vec();
            let value = self
                .file
                .tensor(&format!("param.{name}"), &shape, dev)
                .unwrap_or_else(|e| panic!("{}: parameter {name}: {e}", self.name));
            store.set(name, value).unwrap();
        }
    }
}

/// Everything the golden file holds a reference for, from one forward and backward pass.
pub struct Results {
    pub output: Vec<f32>,
    pub loss: f64,
    /// sum |out * g|, the scale of the loss's rounding error.
    pub loss_scale: f64,
    pub input_grad: Vec<f32>,
    pub param_grads: Vec<(String, Vec<f32>)>,
}

/// The network's forward pass: `(tape, x, levels) -> output`.
pub type Forward<'n> = dyn for<'p> Fn(&mut Tape<'p>, &Var<'p>, &Var<'p>) -> Result<Var<'p>> + 'n;

/// One forward and backward pass of the network on the golden inputs, on `store`'s device.
pub fn run_network(golden: &Golden, store: &ParamStore, forward: &Forward<'_>) -> Results {
    let dev = store.device().clone();
    let mut tape = Tape::new(store);
    let x = tape.leaf(golden.tensor("input.x", &dev));
    let levels = tape.constant(golden.tensor("input.levels", &dev));
    let out = forward(&mut tape, &x, &levels).unwrap();
    let output = out.value().to_vec().unwrap();
    // L = sum(out * g), so dL/dout = g.
    let (_, g) = golden.host("input.grad_out");
    let terms = || output.iter().zip(g).map(|(&o, &g)| o as f64 * g as f64);
    let loss = terms().sum();
    let loss_scale = terms().map(f64::abs).sum();
    let grads = tape
        .backward(&out, golden.tensor("input.grad_out", &dev))
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

fn max_abs(v: &[f32]) -> f64 {
    v.iter().fold(0.0f64, |m, &w| m.max((w as f64).abs()))
}

/// max|got - want| / `scale` (max|want| unless given) of one tensor, failing with the tensor's
/// name and worst element when it exceeds `rtol` or anything is not finite.
pub fn relative_error(what: &str, got: &[f32], want: &[f32], scale: Option<f64>, rtol: f64) -> f64 {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} elements vs {}",
        got.len(),
        want.len()
    );
    let scale = scale.unwrap_or_else(|| max_abs(want));
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
        "{what}: relative error {rel:.3e} > {rtol:.0e} (scale {scale:.4e}); worst element \
         {worst}: got {}, want {}",
        got[worst],
        want[worst]
    );
    rel
}

/// Compares `got` against the file, tagging failures with `tag`; prints the worst relative
/// errors. A parameter the file lists under `zero_gradients` (zero in exact arithmetic, so its
/// float64 reference is rounding noise) is compared against the largest parameter gradient.
pub fn check_results(
    golden: &Golden,
    tag: &str,
    got: &Results,
    elapsed: std::time::Duration,
    tol: &Tolerances,
) {
    let out_err = relative_error(
        &format!("{tag}: output"),
        &got.output,
        &golden.host("output").1,
        None,
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
        None,
        tol.input_grad,
    );
    let zero = golden.meta_list("zero_gradients");
    let largest = got
        .param_grads
        .iter()
        .map(|(pname, _)| max_abs(&golden.host(&format!("grad.{pname}")).1))
        .fold(0.0f64, f64::max);
    let (worst_param, param_err) = got
        .param_grads
        .iter()
        .map(|(pname, g)| {
            let want = &golden.host(&format!("grad.{pname}")).1;
            let scale = zero.contains(pname).then_some(largest);
            let what = format!("{tag}: grad.{pname}");
            (
                pname.as_str(),
                relative_error(&what, g, want, scale, tol.param_grad),
            )
        })
        .fold(("", 0.0f64), |a, b| if b.1 > a.1 { b } else { a });
    eprintln!(
        "{tag}: {elapsed:.2?}; worst relative errors: output {out_err:.2e}, loss {loss_err:.2e}, \
         input grad {x_err:.2e}, parameter grads {param_err:.2e} ({worst_param}); {} parameters",
        got.param_grads.len()
    );
}

/// Loads `golden`, runs `forward` on `store` (the parameters already loaded) and checks.
pub fn check(
    golden: &Golden,
    store: &ParamStore,
    forward: &Forward<'_>,
    tag: &str,
    tol: &Tolerances,
) {
    let start = Instant::now();
    let got = run_network(golden, store, forward);
    check_results(golden, tag, &got, start.elapsed(), tol);
}
