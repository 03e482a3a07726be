//! Philox4x32-10 and Box-Muller normals: the Philox words bit for bit those of
//! kernels/common.cuh, the normals equal up to the last bits of the logarithm and cosine
//! (`box_muller.rs`).
use super::box_muller::normal_from_uniforms;

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

#[inline(always)]
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
#[inline(always)]
pub fn uniform_open_closed(bits: u32) -> f32 {
    ((bits >> 8) + 1) as f32 * (1.0 / 16_777_216.0)
}

/// Uniform in [0, 1) from the top 24 bits.
#[inline(always)]
pub fn uniform_closed_open(bits: u32) -> f32 {
    (bits >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// The standard normal for (seed, stream, step, element), by Box-Muller on the first two words.
pub fn normal(seed: u64, stream: u32, step: u32, element: u64) -> f32 {
    let b = philox_bits(seed, stream, step, element);
    normal_from_uniforms(uniform_open_closed(b[0]), uniform_closed_open(b[1]))
}

/// Counters drawn together by [`fill_normals`].
const LANES: usize = 8;

/// [`philox4x32_10`] on [`LANES`] counters at once (`c[word][lane]`), written lane by lane so
/// the compiler keeps the lanes in vector registers.
#[inline(always)]
fn philox_lanes(mut c: [[u32; LANES]; 4], [mut k0, mut k1]: [u32; 2]) -> [[u32; LANES]; 4] {
    for _ in 0..10 {
        let mut next = [[0u32; LANES]; 4];
        for l in 0..LANES {
            let (hi0, lo0) = mulhilo(M0, c[0][l]);
            let (hi1, lo1) = mulhilo(M1, c[2][l]);
            next[0][l] = hi1 ^ c[1][l] ^ k0;
            next[1][l] = lo1;
            next[2][l] = hi0 ^ c[3][l] ^ k1;
            next[3][l] = lo0;
        }
        c = next;
        k0 = k0.wrapping_add(W0);
        k1 = k1.wrapping_add(W1);
    }
    c
}

/// `out[j] = normal(seed, stream, step, first + j)`, [`LANES`] elements at a time (the same
/// values as [`normal`], which computes them one by one). With AVX2 the Philox rounds run on
/// 8 lanes of 64-bit products ([`avx2`]) and Box-Muller is compiled 8 wide; the arithmetic,
/// integer and f32 without fused multiply-adds, is the same either way, so the values do not
/// depend on the machine.
pub fn fill_normals(seed: u64, stream: u32, step: u32, first: u64, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has just been found to support AVX2.
        return unsafe { avx2::fill_normals(seed, stream, step, first, out) };
    }
    fill_normals_with(philox_lanes, seed, stream, step, first, out)
}

/// The body of [`fill_normals`], with the lanes' Philox function given.
#[inline(always)]
fn fill_normals_with(
    philox: impl Fn([[u32; LANES]; 4], [u32; 2]) -> [[u32; LANES]; 4],
    seed: u64,
    stream: u32,
    step: u32,
    first: u64,
    out: &mut [f32],
) {
    let key = [seed as u32, (seed >> 32) as u32];
    let mut chunks = out.chunks_exact_mut(LANES);
    let mut at = first;
    for chunk in &mut chunks {
        let elements: [u64; LANES] = std::array::from_fn(|l| at + l as u64);
        let c = [
            elements.map(|e| e as u32),
            elements.map(|e| (e >> 32) as u32),
            [step; LANES],
            [stream; LANES],
        ];
        let w = philox(c, key);
        for (l, o) in chunk.iter_mut().enumerate() {
            *o = normal_from_uniforms(uniform_open_closed(w[0][l]), uniform_closed_open(w[1][l]));
        }
        at += LANES as u64;
    }
    for (j, o) in chunks.into_remainder().iter_mut().enumerate() {
        *o = normal(seed, stream, step, at + j as u64);
    }
}

/// Philox on 8 lanes with AVX2: the compiler does not vectorise the 32x32->64-bit products of
/// [`philox_lanes`] by itself.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{fill_normals_with, LANES, M0, M1, W0, W1};

    /// The high and low words of `m * c` in each of the 8 u32 lanes (`m` the same in all).
    #[target_feature(enable = "avx2")]
    fn mulhilo8(m: __m256i, c: __m256i) -> (__m256i, __m256i) {
        // Products of the even lanes, then of the odd lanes, each as four u64.
        let even = _mm256_mul_epu32(c, m);
        let odd = _mm256_mul_epu32(_mm256_srli_epi64::<32>(c), m);
        let lo = _mm256_blend_epi32::<0b1010_1010>(even, _mm256_slli_epi64::<32>(odd));
        let hi = _mm256_blend_epi32::<0b1010_1010>(_mm256_srli_epi64::<32>(even), odd);
        (hi, lo)
    }

    fn lanes(v: __m256i) -> [u32; LANES] {
        // SAFETY: both types are 32 bytes and every bit pattern is a valid [u32; 8].
        unsafe { std::mem::transmute::<__m256i, [u32; LANES]>(v) }
    }

    /// [`super::philox4x32_10`] on 8 counters, `c[word][lane]`.
    #[target_feature(enable = "avx2")]
    fn philox8(c: [[u32; LANES]; 4], [mut k0, mut k1]: [u32; 2]) -> [[u32; LANES]; 4] {
        let load = |w: [u32; LANES]| {
            let w = w.map(|v| v as i32);
            _mm256_setr_epi32(w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7])
        };
        let [mut c0, mut c1, mut c2, mut c3] = c.map(load);
        let (m0, m1) = (_mm256_set1_epi32(M0 as i32), _mm256_set1_epi32(M1 as i32));
        for _ in 0..10 {
            let (hi0, lo0) = mulhilo8(m0, c0);
            let (hi1, lo1) = mulhilo8(m1, c2);
            c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(k0 as i32));
            c1 = lo1;
            c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(k1 as i32));
            c3 = lo0;
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
        [lanes(c0), lanes(c1), lanes(c2), lanes(c3)]
    }

    /// [`super::fill_normals`] compiled for AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) fn fill_normals(seed: u64, stream: u32, step: u32, first: u64, out: &mut [f32]) {
        // The closure inherits this function's target features.
        fill_normals_with(|c, key| philox8(c, key), seed, stream, step, first, out)
    }
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
    fn lanes_give_the_normals_of_one_by_one() {
        // Counters across the 2^32 boundary of the low word, and a remainder after the lanes.
        let first = (1u64 << 32) - 5;
        let mut out = vec![0.0; 3 * LANES + 3];
        // The dispatched path (AVX2 where present) and the portable lanes.
        let mut portable = out.clone();
        fill_normals(0x1234_5678_9abc, 3, 77, first, &mut out);
        fill_normals_with(philox_lanes, 0x1234_5678_9abc, 3, 77, first, &mut portable);
        for (j, (&v, &p)) in out.iter().zip(&portable).enumerate() {
            let one = normal(0x1234_5678_9abc, 3, 77, first + j as u64);
            assert_eq!(v.to_bits(), one.to_bits(), "element {j}");
            assert_eq!(p.to_bits(), one.to_bits(), "element {j}, portable lanes");
        }
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
