//! Philox4x32-10 and Box-Muller normals, bit for bit the functions in kernels/common.cuh.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = a as u64 * b as u64;
    ((p >> 32) as u32, p as u32)
}

/// The Philox4x32 bijection with 10 rounds (Salmon et al., "Parallel random numbers: as easy as
/// 1, 2, 3", SC'11).
pub fn philox4x32_10(mut ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let [mut k0, mut k1] = key;
    for _ in 0..10 {
        let (hi0, lo0) = mulhilo(M0, ctr[0]);
        let (hi1, lo1) = mulhilo(M1, ctr[2]);
        ctr = [hi1 ^ ctr[1] ^ k0, lo1, hi0 ^ ctr[3] ^ k1, lo0];
        k0 = k0.wrapping_add(W0);
        k1 = k1.wrapping_add(W1);
    }
    ctr
}

/// The four random words for (seed, stream, step, element): key = seed, counter =
/// (element lo, element hi, step, stream).
pub fn philox_bits(seed: u64, stream: u32, step: u32, element: u64) -> [u32; 4] {
    philox4x32_10(
        [element as u32, (element >> 32) as u32, step, stream],
        [seed as u32, (seed >> 32) as u32],
    )
}

/// Uniform in (0, 1] from the top 24 bits.
pub fn uniform_open_closed(bits: u32) -> f32 {
    ((bits >> 8) + 1) as f32 * (1.0 / 16_777_216.0)
}

/// Uniform in [0, 1) from the top 24 bits.
pub fn uniform_closed_open(bits: u32) -> f32 {
    (bits >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// The standard normal for (seed, stream, step, element), by Box-Muller on the first two words.
pub fn normal(seed: u64, stream: u32, step: u32, element: u64) -> f32 {
    let b = philox_bits(seed, stream, step, element);
    let u0 = uniform_open_closed(b[0]);
    let u1 = uniform_closed_open(b[1]);
    (-2.0f32 * u0.ln()).sqrt() * (std::f32::consts::TAU * u1).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Known-answer vectors published with Random123 (kat_vectors, philox4x32 with 10 rounds).
    #[test]
    fn philox_known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn normals_have_unit_moments() {
        let n = 200_000u64;
        let (mut s1, mut s2) = (0f64, 0f64);
        for i in 0..n {
            let z = normal(7, 0, 0, i) as f64;
            s1 += z;
            s2 += z * z;
        }
        let mean = s1 / n as f64;
        let var = s2 / n as f64 - mean * mean;
        // Standard errors: 1/sqrt(n) ~ 0.0022 for the mean, sqrt(2/n) ~ 0.0032 for the variance.
        assert!(mean.abs() < 0.012, "mean {mean}");
        assert!((var - 1.0).abs() < 0.016, "variance {var}");
    }
}
