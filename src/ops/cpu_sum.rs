//! f64 sums of f32 rows on the cpu backend, in eight interleaved lanes added in a fixed order at
//! the end: the loop vectorises, where one running sum waits on every addition (four cycles a
//! term). The order depends on the row's length alone, never on threads, so results stay
//! deterministic. Used by the normalisations' statistics and the softmax's denominators.

/// `sum_i term(a[i], b[i])` in f64 over the shorter of `a` and `b`.
#[inline(always)]
pub(crate) fn lane_sum(a: &[f32], b: &[f32], term: impl Fn(f32, f32) -> f64) -> f64 {
    const LANES: usize = 8;
    let mut lanes = [0.0f64; LANES];
    let (a8, b8) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f64 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(&u, &v)| term(u, v))
        .sum();
    for (ca, cb) in a8.zip(b8) {
        for l in 0..LANES {
            lanes[l] += term(ca[l], cb[l]);
        }
    }
    lanes.iter().sum::<f64>() + tail
}

/// `sum_i term(a[i])` in f64.
#[inline(always)]
pub(crate) fn lane_sum_of(a: &[f32], term: impl Fn(f32) -> f64) -> f64 {
    lane_sum(a, a, |v, _| term(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_sums_equal_plain_f64_sums_of_every_length() {
        // Small integers: every partial sum is exact, so any order gives the same value.
        for n in 0..40 {
            let a: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| (i % 5) as f32).collect();
            let plain: f64 = a.iter().zip(&b).map(|(&u, &v)| (u * v) as f64).sum();
            assert_eq!(lane_sum(&a, &b, |u, v| (u * v) as f64), plain, "n = {n}");
            let plain: f64 = a.iter().map(|&u| u as f64).sum();
            assert_eq!(lane_sum_of(&a, |u| u as f64), plain, "n = {n}");
        }
    }
}
