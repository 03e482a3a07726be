//! Box-Muller's logarithm and cosine (SPEC section 5), branch-free so that a loop drawing
//! normals vectorises: libm's `logf` and `cosf` were the larger part of each cpu normal, drawn one
//! element at a time (the Philox normals were 220x their memory floor).
//!
//! `ln_unit` is Cephes' `logf` (S. Moshier) on the mantissa in [sqrt(1/2), sqrt(2)); `cos_turns`
//! reduces `2 pi u` by quarter turns exactly (u has 24 bits) and evaluates Cephes' sin/cos
//! polynomials on [-pi/4, pi/4]. Both are within 2 ulp of f64 on their domains (tests below),
//! where libm is within 1: the normals differ from libm's in their last bits, as the kernels'
//! (CUDA's own `logf`/`cosf`) always did.

const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// ln 2 = LN2_HI + LN2_LO, LN2_HI exact in 9 bits so `e * LN2_HI` is exact.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// `ln(u)` for a normal float `u` in (0, 1] (Box-Muller's first uniform is at least 2^-24).
#[inline(always)]
pub(crate) fn ln_unit(u: f32) -> f32 {
    let bits = u.to_bits();
    // u = m 2^e with m in [0.5, 1).
    let e = ((bits >> 23) as i32 - 126) as f32;
    let m = f32::from_bits((bits & 0x007F_FFFF) | 0x3F00_0000);
    // Move m into [sqrt(1/2), sqrt(2)) so ln(m) is small: x = m - 1 or 2m - 1.
    let low = m < SQRT_HALF;
    let e = if low { e - 1.0 } else { e };
    let x = if low { m + m - 1.0 } else { m - 1.0 };
    let z = x * x;
    let p = 7.037_683_6e-2;
    let p = p * x - 1.151_461e-1;
    let p = p * x + 1.167_699_9e-1;
    let p = p * x - 1.242_014_1e-1;
    let p = p * x + 1.424_932_3e-1;
    let p = p * x - 1.666_805_8e-1;
    let p = p * x + 2.000_071_4e-1;
    let p = p * x - 2.499_999_4e-1;
    let p = p * x + 3.333_333e-1;
    let y = p * x * z + e * LN2_LO - 0.5 * z;
    x + y + e * LN2_HI
}

/// `cos(2 pi u)` for `u` in [0, 1] with 24 significant bits (a Philox uniform).
#[inline(always)]
pub(crate) fn cos_turns(u: f32) -> f32 {
    // u = q/4 + r, |r| <= 1/8, exactly: q/4 and u are both multiples of 2^-24.
    const ROUND_MAGIC: f32 = 12_582_912.0;
    let t = u * 4.0 + ROUND_MAGIC;
    let q = t - ROUND_MAGIC;
    let quarter = t.to_bits().wrapping_sub(ROUND_MAGIC.to_bits());
    let r = u - 0.25 * q;
    let theta = std::f32::consts::TAU * r;
    let z = theta * theta;
    let sin = ((-1.951_529_6e-4 * z + 8.332_161e-3) * z - 1.666_665_5e-1) * z * theta + theta;
    let cos = ((2.443_315_7e-5 * z - 1.388_731_6e-3) * z + 4.166_664_6e-2) * z * z - 0.5 * z + 1.0;
    // cos(theta + q pi/2) for q = 0, 1, 2, 3, 4.
    let v = if quarter & 1 == 0 { cos } else { sin };
    if quarter == 1 || quarter == 2 {
        -v
    } else {
        v
    }
}

/// The standard normal of Box-Muller from two uniforms: `u0` in (0, 1], `u1` in [0, 1).
#[inline(always)]
pub(crate) fn normal_from_uniforms(u0: f32, u1: f32) -> f32 {
    (-2.0 * ln_unit(u0)).sqrt() * cos_turns(u1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ulp::ulps;

    /// Every Philox uniform the normals can take: k 2^-24.
    fn uniforms(stride: usize) -> impl Iterator<Item = f32> {
        (0..=1u32 << 24)
            .step_by(stride)
            .map(|k| k as f32 / 16_777_216.0)
    }

    #[test]
    fn ln_is_within_two_ulp_of_f64_on_every_uniform() {
        let mut worst = (0.0, 0.0);
        for u in uniforms(7)
            .filter(|&u| u > 0.0)
            .chain([2.0f32.powi(-24), 1.0])
        {
            let e = ulps(ln_unit(u), (u as f64).ln());
            if e > worst.0 {
                worst = (e, u);
            }
        }
        assert!(worst.0 <= 2.0, "ln: {} ulp at u = {:e}", worst.0, worst.1);
        assert_eq!(ln_unit(1.0), 0.0);
    }

    /// Relative to the largest value (the error that matters for a normal: the cosine's zeros
    /// are where 2 pi u itself is rounded).
    #[test]
    fn cos_is_within_2e_7_of_f64_on_every_uniform() {
        let mut worst = (0.0, 0.0);
        for u in uniforms(5).chain([0.125, 0.25, 0.375, 0.5, 0.75, 1.0]) {
            let exact = (std::f64::consts::TAU * u as f64).cos();
            let e = (cos_turns(u) as f64 - exact).abs();
            if e > worst.0 {
                worst = (e, u);
            }
        }
        assert!(
            worst.0 <= 2e-7,
            "cos: error {:e} at u = {}",
            worst.0,
            worst.1
        );
        assert_eq!((cos_turns(0.0), cos_turns(0.5)), (1.0, -1.0));
    }
}
