//! Wider vectors for the cpu backend's element-wise loops. The crate is built for baseline
//! x86-64, so the loops the compiler vectorises use SSE's 4 lanes. On a core with AVX2 and FMA,
//! these maps run in a copy of the loop compiled for them (8 lanes). The arithmetic is the same
//! either way: Rust neither fuses nor reorders f32 operations on its own, so results do not
//! depend on the core. The copy is a named function the loop's body is inlined into: a closure
//! run inside a `#[target_feature]` function was not inlined there (so kept SSE), a short
//! per-element one is.

/// Whether this core runs AVX2 and FMA (the standard library caches the answer): callers with
/// their own `#[target_feature(enable = "avx2,fma")]` copy of a loop ask this first.
pub(crate) fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `out[i] = f(a[i])` over the shorter of the two.
#[inline(always)]
pub(crate) fn map1(out: &mut [f32], a: &[f32], f: &impl Fn(f32) -> f32) {
    #[inline(always)]
    fn body(out: &mut [f32], a: &[f32], f: &impl Fn(f32) -> f32) {
        out.iter_mut().zip(a).for_each(|(o, &u)| *o = f(u));
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn wide(out: &mut [f32], a: &[f32], f: &impl Fn(f32) -> f32) {
        body(out, a, f)
    }
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the core runs AVX2 and FMA.
        return unsafe { wide(out, a, f) };
    }
    body(out, a, f)
}

/// `out[i] = f(a[i], b[i])` over the shortest of the three.
#[inline(always)]
pub(crate) fn map2(out: &mut [f32], a: &[f32], b: &[f32], f: &impl Fn(f32, f32) -> f32) {
    #[inline(always)]
    fn body(out: &mut [f32], a: &[f32], b: &[f32], f: &impl Fn(f32, f32) -> f32) {
        for ((o, &u), &v) in out.iter_mut().zip(a).zip(b) {
            *o = f(u, v);
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn wide(out: &mut [f32], a: &[f32], b: &[f32], f: &impl Fn(f32, f32) -> f32) {
        body(out, a, b, f)
    }
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the core runs AVX2 and FMA.
        return unsafe { wide(out, a, b, f) };
    }
    body(out, a, b, f)
}

/// `out[i] = f(a[i], b[i], c[i])` over the shortest of the four.
#[inline(always)]
pub(crate) fn map3(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    c: &[f32],
    f: &impl Fn(f32, f32, f32) -> f32,
) {
    #[inline(always)]
    fn body(out: &mut [f32], a: &[f32], b: &[f32], c: &[f32], f: &impl Fn(f32, f32, f32) -> f32) {
        for (((o, &u), &v), &w) in out.iter_mut().zip(a).zip(b).zip(c) {
            *o = f(u, v, w);
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn wide(
        out: &mut [f32],
        a: &[f32],
        b: &[f32],
        c: &[f32],
        f: &impl Fn(f32, f32, f32) -> f32,
    ) {
        body(out, a, b, c, f)
    }
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the core runs AVX2 and FMA.
        return unsafe { wide(out, a, b, c, f) };
    }
    body(out, a, b, c, f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::cpu_exp;
    use crate::rng::{fill_normals, stream};

    /// A SiLU-like map with the operations the element-wise ops use (abs, exp, division,
    /// comparisons, a fused multiply-add).
    fn op(x: f32) -> f32 {
        let e = cpu_exp::exp_nonpositive(-x.abs());
        let s = if x >= 0.0 {
            1.0 / (1.0 + e)
        } else {
            e / (1.0 + e)
        };
        x.mul_add(s, 0.5 * e)
    }

    /// The wide copy gives the baseline's bits (this test's own loop is compiled for the
    /// baseline), on normals at several scales and the special values, over lengths that leave
    /// every vector tail.
    #[test]
    fn wide_maps_give_the_baseline_bits() {
        let mut x = vec![0.0f32; 4099];
        fill_normals(11, stream::TEST, 0, 0, &mut x);
        for (i, v) in x.iter_mut().enumerate() {
            *v *= [1e-30, 0.1, 3.0, 90.0][i % 4];
        }
        x[..6].copy_from_slice(&[f32::NAN, f32::INFINITY, -f32::INFINITY, 0.0, -0.0, 1e-45]);
        for len in [0, 1, 7, 8, 9, 31, 4099] {
            let (a, b) = (&x[..len], &x[x.len() - len..]);
            let mut got = vec![0.0; len];
            map1(&mut got, a, &op);
            let want: Vec<f32> = a.iter().map(|&v| op(v)).collect();
            assert!(got
                .iter()
                .zip(&want)
                .all(|(g, w)| g.to_bits() == w.to_bits()));
            map2(&mut got, a, b, &|u, v| op(u) * v - u / (1.0 + v.abs()));
            let want: Vec<f32> = a
                .iter()
                .zip(b)
                .map(|(&u, &v)| op(u) * v - u / (1.0 + v.abs()))
                .collect();
            assert!(got
                .iter()
                .zip(&want)
                .all(|(g, w)| g.to_bits() == w.to_bits()));
            let c = &x[(x.len() - len) / 2..][..len];
            let f3 = |u: f32, v: f32, w: f32| u * cpu_exp::exp(v - 0.5 * w) + w;
            map3(&mut got, a, b, c, &f3);
            let want: Vec<f32> = (0..len).map(|i| f3(a[i], b[i], c[i])).collect();
            assert!(got
                .iter()
                .zip(&want)
                .all(|(g, w)| g.to_bits() == w.to_bits()));
        }
    }
}
