//! The cpu backend's exponentials (SPEC section 9), written so the compiler vectorises the loops
//! that call them: no branches and no libm call per element. libm's `expm1f` alone was over a
//! quarter of a tiny training step, called once per activation, and libm's `expf` half of the
//! GBM steps' time once their normals were drawn 16 lanes wide.
//!
//! The ELU's two functions take `x <= 0`, the only inputs where the ELU needs an exponential (for
//! `x > 0` callers select `x` or slope 1 and discard what these return); [`exp`] takes any `x`,
//! for the GBM's `exp(m + s z)` and the sampler's log-space steps. The argument is split as
//! `x = n ln2 + r` with `n` an integer and `|r| <= ln2/2` (ln2 in two parts, Cody and Waite), and
//! `e^r - 1` is its Taylor series to `r^8` (truncation under 1e-9 relative on that interval), so
//! `expm1` keeps full relative accuracy near zero where `exp(x) - 1` would cancel. Measured
//! against f64 over [-90, 0]: at most 2 ulp (tests below). Below ln(2^-126), `exp` returns 0 (the
//! true value is subnormal, under 1.2e-38) and `expm1` returns -1 as libm does. NaN stays NaN.

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 = LN2_HI + LN2_LO, with LN2_HI exact in 8 mantissa bits so `n * LN2_HI` is exact.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 * 2^23: adding and subtracting it rounds an f32 below 2^22 to the nearest integer, and
/// the sum's low mantissa bits hold that integer.
const ROUND_MAGIC: f32 = 12_582_912.0;
/// ln(2^-126), the least x whose exponential is a normal f32.
const EXP_MIN: f32 = -87.33654;
/// Below this, e^x is under 2^-150, half the least subnormal: it rounds to 0.
const EXP_UNDERFLOW: f32 = -104.0;
/// Above ln(f32::MAX) = 88.72: e^x overflows to infinity.
const EXP_OVERFLOW: f32 = 89.0;

/// `(e^r - 1, n)` with `x = n ln2 + r`, for `EXP_MIN <= x <= 0`.
#[inline(always)]
fn reduced_expm1(x: f32) -> (f32, i32) {
    let t = x * LOG2_E + ROUND_MAGIC;
    let n_f = t - ROUND_MAGIC;
    let n = (t.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    let r = (x - n_f * LN2_HI) - n_f * LN2_LO;
    let p = 1.0 / 40_320.0;
    let p = p * r + 1.0 / 5_040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    (p * (r * r) + r, n)
}

/// 2^n for -126 <= n <= 127, built from its exponent bits.
#[inline(always)]
fn pow2(n: i32) -> f32 {
    f32::from_bits((n.wrapping_add(127) as u32) << 23)
}

/// `e^x - 1` for `x <= 0`.
#[inline(always)]
pub(crate) fn expm1_nonpositive(x: f32) -> f32 {
    // `max` would turn NaN into EXP_MIN; this comparison keeps it.
    let xc = if x < EXP_MIN { EXP_MIN } else { x };
    let (q, n) = reduced_expm1(xc);
    // For n = 0 the series itself is the answer; otherwise e^x - 1 = 2^n (q + 1) - 1, whose
    // subtraction cannot cancel (the result lies in [-1, -0.29]).
    let scaled = (q + 1.0) * pow2(n) - 1.0;
    if n == 0 {
        q
    } else {
        scaled
    }
}

/// `e^x` for `x <= 0` (0 below ln(2^-126)).
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    let xc = if x < EXP_MIN { EXP_MIN } else { x };
    let (q, n) = reduced_expm1(xc);
    let y = (q + 1.0) * pow2(n);
    if x < EXP_MIN {
        0.0
    } else {
        y
    }
}

/// `e^x` for any `x`: subnormal results rounded once (not flushed), infinity above
/// ln(f32::MAX), NaN kept.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    // `clamp` keeps NaN (unlike `max`), and NaN comes out.
    let xc = x.clamp(EXP_UNDERFLOW, EXP_OVERFLOW);
    let (q, n) = reduced_expm1(xc);
    // n lies in [-150, 128]: 2^n in two halves that are normal floats, so (q + 1) 2^half is exact
    // and the one rounding is the last product's, to a subnormal or to infinity where due.
    let half = n >> 1;
    (q + 1.0) * pow2(half) * pow2(n - half)
}

/// ELU with alpha = 1: `x` for `x > 0`, else `e^x - 1`.
#[inline(always)]
pub(crate) fn elu(x: f32) -> f32 {
    let e = expm1_nonpositive(if x > 0.0 { 0.0 } else { x });
    if x > 0.0 {
        x
    } else {
        e
    }
}

/// The ELU's slope: 1 for `x > 0`, else `e^x`.
#[inline(always)]
pub(crate) fn elu_slope(x: f32) -> f32 {
    let e = exp_nonpositive(if x > 0.0 { 0.0 } else { x });
    if x > 0.0 {
        1.0
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ulp::ulps;

    /// Every f32 in [lo, hi] with a stride of `stride` representations, plus the ends.
    fn sweep(lo: f32, hi: f32, stride: u32) -> impl Iterator<Item = f32> {
        // Negative floats: larger bit patterns are more negative.
        let (a, b) = (hi.to_bits(), lo.to_bits());
        (a..=b)
            .step_by(stride as usize)
            .map(f32::from_bits)
            .chain([lo, hi])
    }

    /// The largest error in ulp of `f` against `exact` over `xs`, and where.
    fn worst_ulps(
        xs: impl Iterator<Item = f32>,
        f: impl Fn(f32) -> f32,
        exact: impl Fn(f64) -> f64,
    ) -> (f64, f32) {
        xs.map(|x| (ulps(f(x), exact(x as f64)), x))
            .fold((0.0, 0.0), |w, e| if e.0 > w.0 { e } else { w })
    }

    #[test]
    fn expm1_is_within_two_ulp_of_f64_down_to_exp_min() {
        let xs = sweep(EXP_MIN, -1e-30, 97).chain(sweep(-1e-30, -f32::MIN_POSITIVE, 1 << 16));
        let (e, x) = worst_ulps(xs, expm1_nonpositive, f64::exp_m1);
        assert!(e <= 2.0, "expm1: {e} ulp at x = {x:e}");
    }

    #[test]
    fn exp_is_within_two_ulp_of_f64_down_to_exp_min() {
        let (e, x) = worst_ulps(sweep(EXP_MIN, -1e-30, 97), exp_nonpositive, f64::exp);
        assert!(e <= 2.0, "exp: {e} ulp at x = {x:e}");
    }

    #[test]
    fn exp_is_within_two_ulp_of_f64_on_every_sign() {
        let negative = sweep(EXP_MIN, -1e-30, 97);
        let positive = sweep(-88.72, -1e-30, 97).map(|x| -x);
        let (e, x) = worst_ulps(negative.chain(positive), exp, f64::exp);
        assert!(e <= 2.0, "exp: {e} ulp at x = {x:e}");
    }

    #[test]
    fn exp_rounds_subnormals_and_overflows_to_infinity() {
        // Subnormal results: within one least subnormal of f64's, rounded once.
        let least = f32::from_bits(1) as f64;
        for x in sweep(-104.5, EXP_MIN, 7) {
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            assert!(
                (got - want).abs() <= least,
                "exp({x:e}) = {got:e}, want {want:e}"
            );
        }
        assert_eq!(exp(-104.0), 0.0);
        assert_eq!(exp(-103.9), f32::from_bits(1));
        assert!(exp(-90.0) > 0.0 && exp(-90.0) < f32::MIN_POSITIVE);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(88.8), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(88.72).is_finite());
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-0.0), 1.0);
    }

    #[test]
    fn edges_flush_saturate_and_keep_nan() {
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(expm1_nonpositive(0.0), 0.0);
        assert_eq!(exp_nonpositive(-100.0), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert_eq!(expm1_nonpositive(-100.0), -1.0);
        assert_eq!(expm1_nonpositive(f32::NEG_INFINITY), -1.0);
        assert_eq!(expm1_nonpositive(f32::MIN), -1.0);
        assert!(expm1_nonpositive(f32::NAN).is_nan());
        assert!(exp_nonpositive(f32::NAN).is_nan());
        assert!(elu(f32::NAN).is_nan() && elu_slope(f32::NAN).is_nan());
    }

    #[test]
    fn elu_and_slope_select_the_positive_side() {
        for x in [1e-30, 0.5, 3.0, 1e30, f32::INFINITY] {
            assert_eq!(elu(x), x);
            assert_eq!(elu_slope(x), 1.0);
        }
        for x in [-1e-3f32, -0.5, -3.0, -20.0] {
            assert!(ulps(elu(x), (x as f64).exp_m1()) <= 2.0);
            assert!(ulps(elu_slope(x), (x as f64).exp()) <= 2.0);
        }
    }
}
