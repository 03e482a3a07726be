//! Finite-difference gradient checks of computations built on a tape (cpu backend).
use dalemeetslangevin::autograd::{ParamStore, Tape, Var};
use dalemeetslangevin::{Device, Result, Tensor};
use rand::rngs::StdRng;

/// A computation from leaf inputs to one output.
pub type Graph = dyn for<'p> Fn(&mut Tape<'p>, &[Var<'p>]) -> Result<Var<'p>>;

/// L = sum(r * f(inputs)) in f64, on an inference tape.
fn loss(f: &Graph, store: &ParamStore, inputs: &[(Vec<f32>, Vec<usize>)], r: &[f32]) -> f64 {
    let mut tape = Tape::inference(store);
    let vars: Vec<Var<'_>> = inputs
        .iter()
        .map(|(x, s)| tape.constant(Tensor::from_slice(x, s, &Device::Cpu).unwrap()))
        .collect();
    let y = f(&mut tape, &vars).unwrap().value().to_vec().unwrap();
    y.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Checks the tape's gradient of L = sum(r * f(inputs)) (r random) with respect to every input
/// against central differences with step `eps`, element by element:
/// |analytic - numeric| <= tol * (1 + |numeric|).
pub fn check_gradients(
    what: &str,
    rng: &mut StdRng,
    inputs: &[(Vec<f32>, Vec<usize>)],
    eps: f32,
    tol: f64,
    f: &Graph,
) {
    let store = ParamStore::new(&Device::Cpu, 0);
    let mut tape = Tape::new(&store);
    let leaves: Vec<Var<'_>> = inputs
        .iter()
        .map(|(x, s)| tape.leaf(Tensor::from_slice(x, s, &Device::Cpu).unwrap()))
        .collect();
    let out = f(&mut tape, &leaves).unwrap();
    let r = super::random_vec(rng, out.value().numel(), -1.0, 1.0);
    let seed = Tensor::from_slice(&r, out.shape(), &Device::Cpu).unwrap();
    let grads = tape.backward(&out, seed).unwrap();
    for (i, (x, _)) in inputs.iter().enumerate() {
        let analytic = grads
            .wrt(&leaves[i])
            .unwrap_or_else(|| panic!("{what}: no gradient for input {i}"))
            .to_vec()
            .unwrap();
        for j in 0..x.len() {
            let mut shifted = inputs.to_vec();
            shifted[i].0[j] = x[j] + eps;
            let up = loss(f, &store, &shifted, &r);
            shifted[i].0[j] = x[j] - eps;
            let down = loss(f, &store, &shifted, &r);
            let numeric = (up - down) / (2.0 * eps as f64);
            let a = analytic[j] as f64;
            assert!(
                (a - numeric).abs() <= tol * (1.0 + numeric.abs()),
                "{what}: d/d input {i}[{j}]: analytic {a}, numeric {numeric}"
            );
        }
    }
}
