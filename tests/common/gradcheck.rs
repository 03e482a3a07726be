//! Finite-difference gradient checks of computations built on a tape (cpu backend).
//!
//! Central differences D(eps) = (L(x + eps) - L(x - eps)) / 2 eps approximate dL/dx with two
//! errors: truncation, eps^2/6 |L'''|, and round-off, about e_L / eps where e_L is the float32
//! error of one evaluation of L. The tolerances of the callers are sized from these two terms
//! (each caller says how for its graph). Two things make the truncation term unbounded, and the
//! check guards against both rather than widening its tolerance:
//! - a point within eps of which L is not smooth (ELU's second derivative jumps at 0, so a step
//!   across it leaves an O(eps) error, not O(eps^2)): callers name the values at which their
//!   graph is not smooth (`Kinks`); an element whose step moves any of them across zero is
//!   differenced with the step halved, up to eps/8 (which multiplies the round-off term by up to
//!   8: callers' tolerances allow for it), and skipped if even that crosses; at most three
//!   quarters of each input may be skipped, so the check keeps its teeth (an input whose every
//!   element moves one value across zero is a sign that the inputs sit on the kink);
//! - a near-singular normalisation (a standard deviation close to zero makes L''' grow like
//!   1/std^3): callers draw inputs whose statistics stay away from it.
use dalemeetslangevin::autograd::{ParamStore, Tape, Var};
use dalemeetslangevin::{Device, Result, Tensor};
use rand::rngs::StdRng;

/// A computation from leaf inputs to one output.
pub type Graph = dyn for<'p> Fn(&mut Tape<'p>, &[Var<'p>]) -> Result<Var<'p>>;

/// The values at which a graph is not smooth: it is smooth wherever none of them crosses zero
/// (for a graph with ELUs, the ELU inputs).
pub type Kinks = dyn for<'p> Fn(&mut Tape<'p>, &[Var<'p>]) -> Result<Vec<Var<'p>>>;

type Inputs = [(Vec<f32>, Vec<usize>)];

fn constants<'p>(tape: &Tape<'p>, inputs: &Inputs) -> Vec<Var<'p>> {
    inputs
        .iter()
        .map(|(x, s)| tape.constant(Tensor::from_slice(x, s, &Device::Cpu).unwrap()))
        .collect()
}

/// L = sum(r * f(inputs)) in f64, on an inference tape.
fn loss(f: &Graph, store: &ParamStore, inputs: &Inputs, r: &[f32]) -> f64 {
    let mut tape = Tape::inference(store);
    let vars = constants(&tape, inputs);
    let y = f(&mut tape, &vars).unwrap().value().to_vec().unwrap();
    y.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// The sign of every kink value at `inputs`.
fn kink_signs(kinks: &Kinks, store: &ParamStore, inputs: &Inputs) -> Vec<bool> {
    let mut tape = Tape::inference(store);
    let vars = constants(&tape, inputs);
    let values = kinks(&mut tape, &vars).unwrap();
    values
        .iter()
        .flat_map(|v| v.value().to_vec().unwrap())
        .map(|v| v > 0.0)
        .collect()
}

/// Checks the tape's gradient of L = sum(r * f(inputs)) (r random) with respect to every input
/// against central differences with step `eps`, element by element:
/// |analytic - numeric| <= tol * (1 + |numeric|). For a graph that is smooth everywhere.
pub fn check_gradients(
    what: &str,
    rng: &mut StdRng,
    inputs: &Inputs,
    eps: f32,
    tol: f64,
    f: &Graph,
) {
    check_gradients_with_kinks(what, rng, inputs, eps, tol, f, &|_, _| Ok(Vec::new()));
}

/// [`check_gradients`] for a graph that is not smooth where a value of `kinks` is zero (see the
/// module doc for how steps across such a point are handled).
pub fn check_gradients_with_kinks(
    what: &str,
    rng: &mut StdRng,
    inputs: &Inputs,
    eps: f32,
    tol: f64,
    f: &Graph,
    kinks: &Kinks,
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
    let signs = kink_signs(kinks, &store, inputs);
    let (mut worst, mut skipped_all) = (0.0f64, 0);
    for (i, (x, _)) in inputs.iter().enumerate() {
        let analytic = grads
            .wrt(&leaves[i])
            .unwrap_or_else(|| panic!("{what}: no gradient for input {i}"))
            .to_vec()
            .unwrap();
        let mut skipped = 0;
        for j in 0..x.len() {
            // The step, halved up to three times while it crosses a kink.
            let mut shifted = inputs.to_vec();
            let mut side = |delta: f32| {
                shifted[i].0[j] = x[j] + delta;
                let smooth = kink_signs(kinks, &store, &shifted) == signs;
                (loss(f, &store, &shifted, &r), smooth)
            };
            let numeric = [eps, eps / 2.0, eps / 4.0, eps / 8.0]
                .into_iter()
                .find_map(|e| match (side(e), side(-e)) {
                    ((up, true), (down, true)) => Some((up - down) / (2.0 * e as f64)),
                    _ => None,
                });
            let Some(numeric) = numeric else {
                skipped += 1;
                continue;
            };
            let a = analytic[j] as f64;
            worst = worst.max((a - numeric).abs() / (1.0 + numeric.abs()));
            assert!(
                (a - numeric).abs() <= tol * (1.0 + numeric.abs()),
                "{what}: d/d input {i}[{j}]: analytic {a}, numeric {numeric}"
            );
        }
        assert!(
            4 * skipped <= 3 * x.len(),
            "{what}: input {i}: {skipped} of {} elements step across a kink; draw inputs further from it",
            x.len()
        );
        skipped_all += skipped;
    }
    // The margin, for judging a tolerance over many seeds (scripts/stress-tests keeps the log).
    eprintln!(
        "{what}: worst |analytic - numeric| / (1 + |numeric|) = {worst:.2e}, tolerance {tol:.0e}; \
         {skipped_all} elements skipped at kinks"
    );
}
