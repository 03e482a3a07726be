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
/// 8 lanes of 64-bit products ([`avx2`]) and Box-Muller is compiled 8 wide; with AVX-512, 16
/// lanes ([`avx512`]). The arithmetic, integer and f32 without fused multiply-adds, is the same
/// every way, so the values do not depend on the machine.
pub fn fill_normals(seed: u64, stream: u32, step: u32, first: u64, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has just been found to support AVX-512F.
        return unsafe { avx512::fill_normals(seed, stream, step, first, out) };
    }
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
        normals_of_words(chunk, &w[0], &w[1]);
        at += LANES as u64;
    }
    for (j, o) in chunks.into_remainder().iter_mut().enumerate() {
        *o = normal(seed, stream, step, at + j as u64);
    }
}

/// Box-Muller on Philox's first two words, lane by lane, as [`normal`] does: a named function so
/// that it is compiled into (and vectorised as wide as) each caller's target features.
#[inline(always)]
fn normals_of_words(out: &mut [f32], w0: &[u32], w1: &[u32]) {
    for ((o, &b0), &b1) in out.iter_mut().zip(w0).zip(w1) {
        *o = normal_from_uniforms(uniform_open_closed(b0), uniform_closed_open(b1));
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

/// Philox on 16 lanes with AVX-512, the counters made in registers: building them in arrays and
/// loading those (as [`fill_normals_with`] does) was a quarter of the AVX2 path's time.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{normal, normals_of_words, M0, M1, W0, W1};

    const WIDE: usize = 16;

    /// The high and low words of `m * c` in each of the 16 u32 lanes (`m` the same in all).
    #[target_feature(enable = "avx512f")]
    fn mulhilo16(m: __m512i, c: __m512i) -> (__m512i, __m512i) {
        // Products of the even lanes, then of the odd lanes, each as eight u64.
        let even = _mm512_mul_epu32(c, m);
        let odd = _mm512_mul_epu32(_mm512_srli_epi64::<32>(c), m);
        let lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64::<32>(odd));
        let hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64::<32>(even), odd);
        (hi, lo)
    }

    /// The first two words of [`super::philox4x32_10`] on 16 counters (element low and high
    /// words; step and stream the same in every lane).
    #[target_feature(enable = "avx512f")]
    fn philox16(
        lo: __m512i,
        hi: __m512i,
        step: u32,
        stream: u32,
        [mut k0, mut k1]: [u32; 2],
    ) -> (__m512i, __m512i) {
        let (mut c0, mut c1) = (lo, hi);
        let (mut c2, mut c3) = (
            _mm512_set1_epi32(step as i32),
            _mm512_set1_epi32(stream as i32),
        );
        let (m0, m1) = (_mm512_set1_epi32(M0 as i32), _mm512_set1_epi32(M1 as i32));
        for _ in 0..10 {
            let (hi0, lo0) = mulhilo16(m0, c0);
            let (hi1, lo1) = mulhilo16(m1, c2);
            // 0x96: the three-way exclusive or.
            c0 = _mm512_ternarylogic_epi32::<0x96>(hi1, c1, _mm512_set1_epi32(k0 as i32));
            c1 = lo1;
            c2 = _mm512_ternarylogic_epi32::<0x96>(hi0, c3, _mm512_set1_epi32(k1 as i32));
            c3 = lo0;
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
        (c0, c1)
    }

    fn lanes(v: __m512i) -> [u32; WIDE] {
        // SAFETY: both types are 64 bytes and every bit pattern is a valid [u32; 16].
        unsafe { std::mem::transmute::<__m512i, [u32; WIDE]>(v) }
    }

    /// [`super::fill_normals`] compiled for AVX-512.
    #[target_feature(enable = "avx512f")]
    pub(super) fn fill_normals(seed: u64, stream: u32, step: u32, first: u64, out: &mut [f32]) {
        let key = [seed as u32, (seed >> 32) as u32];
        let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let mut chunks = out.chunks_exact_mut(WIDE);
        let mut at = first;
        for chunk in &mut chunks {
            // Elements at..at+16: low words wrap, and the lanes that wrapped carry into the high.
            let base = _mm512_set1_epi32(at as u32 as i32);
            let lo = _mm512_add_epi32(base, iota);
            let hi = _mm512_set1_epi32((at >> 32) as u32 as i32);
            let hi = _mm512_mask_add_epi32(
                hi,
                _mm512_cmplt_epu32_mask(lo, base),
                hi,
                _mm512_set1_epi32(1),
            );
            let (w0, w1) = philox16(lo, hi, step, stream, key);
            normals_of_words(chunk, &lanes(w0), &lanes(w1));
            at += WIDE as u64;
        }
        for (j, o) in chunks.into_remainder().iter_mut().enumerate() {
            *o = normal(seed, stream, step, at + j as u64);
        }
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
        let seed = 0x1234_5678_9abc;
        let n = 5 * LANES + 3;
        let check = |name: &str, fill: &dyn Fn(&mut [f32])| {
            let mut out = vec![0.0; n];
            fill(&mut out);
            for (j, &v) in out.iter().enumerate() {
                let one = normal(seed, 3, 77, first + j as u64);
                assert_eq!(v.to_bits(), one.to_bits(), "element {j}, {name}");
            }
        };
        check("dispatched", &|o| fill_normals(seed, 3, 77, first, o));
        check("portable lanes", &|o| {
            fill_normals_with(philox_lanes, seed, 3, 77, first, o)
        });
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has just been found to support it.
            check("avx2", &|o| unsafe {
                avx2::fill_normals(seed, 3, 77, first, o)
            });
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has just been found to support it.
            check("avx512", &|o| unsafe {
                avx512::fill_normals(seed, 3, 77, first, o)
            });
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
