//! For the unit tests of the cpu backend's vectorised maths (`ops/cpu_exp.rs`,
//! `rng/box_muller.rs`): how far an f32 result is from the exact value.

/// Distance from `exact` in units in the last place of the f32 nearest to it.
pub(crate) fn ulps(got: f32, exact: f64) -> f64 {
    let nearest = exact as f32;
    let ulp = (f32::from_bits(nearest.abs().to_bits() + 1) - nearest.abs()) as f64;
    (got as f64 - exact).abs() / ulp
}
