//! The Winograd tile transforms of [`super`] on AVX-512, for cores that have it. The portable
//! forms fill each of a tile's pixels for 16 tiles one lane at a time (16 scalar loads, then a
//! vector read of what they stored) and write each output pixel of the untransform one lane at a
//! time with its bounds test; on the development VM's Zen 5 cores that made the two transforms as
//! long as the 16 GEMMs between them (43% of a 64 -> 64 forward at 28x28, against 47%). Here, at
//! dilation 1, a run of tiles side by side is transformed from whole rows of pixels: each row of
//! their pixels is a few contiguous vectors, whose even and odd columns a permute separates so
//! that lane s holds tile s; the untransform interleaves the two output columns back and writes
//! each output row with masked stores that clip the image. At dilations above 1 a pixel of 16
//! tiles is one masked gather and an output pixel one masked scatter whose mask is the bounds
//! test. The adds and subtracts are the portable ones in the same order on whole vectors: the
//! same bits (tested against them).
use std::arch::x86_64::{
    __m512, __m512i, __mmask16, _mm512_add_epi32, _mm512_add_ps, _mm512_alignr_epi32,
    _mm512_castps_si512, _mm512_castsi512_ps, _mm512_cmplt_epu32_mask, _mm512_mask_i32gather_ps,
    _mm512_mask_i32scatter_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_epi32,
    _mm512_maskz_loadu_ps, _mm512_mullo_epi32, _mm512_permutex2var_ps, _mm512_set1_epi32,
    _mm512_set1_ps, _mm512_setr_epi32, _mm512_setzero_ps, _mm512_sub_ps, _mm512_xor_si512,
};

use super::{Corners, TileTransform, LANES, XI};

use super::super::super::cpu_gemm_avx512::lanes as first_lanes;

/// Whether this core runs AVX-512F: the same question the GEMM asks, once.
pub(super) fn available() -> bool {
    super::super::super::cpu_gemm_avx512::available()
}

/// `i32` of an index into a plane the caller has checked holds fewer than 2^31 floats.
fn index(value: usize) -> i32 {
    i32::try_from(value).expect("a Winograd tile index fits in i32 (checked by the caller)")
}

/// `B^T` of `input_tile` on four vectors: `[d0 - d2, d1 + d2, d2 - d1, d1 - d3]`.
#[inline]
#[target_feature(enable = "avx512f")]
fn b_t(d0: __m512, d1: __m512, d2: __m512, d3: __m512) -> [__m512; 4] {
    [
        _mm512_sub_ps(d0, d2),
        _mm512_add_ps(d1, d2),
        _mm512_sub_ps(d2, d1),
        _mm512_sub_ps(d1, d3),
    ]
}

/// `A` of `output_grad_tile` on two vectors: `[g0, g0 + g1, g0 - g1, -g1]` (the negation flips
/// the sign bit, as f32's `-` does).
#[inline]
#[target_feature(enable = "avx512f")]
fn a(g0: __m512, g1: __m512) -> [__m512; 4] {
    let sign = _mm512_set1_epi32(i32::MIN);
    let minus_g1 = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(g1), sign));
    [g0, _mm512_add_ps(g0, g1), _mm512_sub_ps(g0, g1), minus_g1]
}

/// `A^T` of `output_tile` on four vectors: `[m0 + m1 + m2, m1 - m2 - m3]`, left to right.
#[inline]
#[target_feature(enable = "avx512f")]
fn a_t(m0: __m512, m1: __m512, m2: __m512, m3: __m512) -> [__m512; 2] {
    [
        _mm512_add_ps(_mm512_add_ps(m0, m1), m2),
        _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3),
    ]
}

/// `super::transform_chunks` on AVX-512: at dilation 1 from whole rows of pixels ([`runs`]),
/// above it by gathers ([`chunks`]); each point of the transform one masked store of 16 tiles
/// into `out[xi n + t]`.
///
/// Panics when a tile reaches past `src`, or `out` is too short for the points, as the portable
/// form does (which indexes every pixel).
pub(super) fn transform_chunks(
    src: &[f32],
    corners: &Corners,
    row_stride: usize,
    dil: usize,
    transform: TileTransform,
    out: &mut [f32],
    n: usize,
) {
    assert!(
        available(),
        "the AVX-512 transforms ran on a core without AVX-512F"
    );
    let side = transform.side();
    // Every pixel read is `corner + k dil row_stride + l dil` for k, l < side.
    let reach = (side - 1) * dil * (row_stride + 1);
    let tiles = corners.at.len();
    assert!(
        tiles == 0 || corners.max + reach < src.len(),
        "a Winograd tile reaches past its plane"
    );
    assert!(
        src.len() <= i32::MAX as usize,
        "a plane of 2^31 floats or more"
    );
    if tiles > 0 {
        assert!(
            out.len() >= (XI - 1) * n + tiles,
            "transformed tiles too short"
        );
    }
    // SAFETY: the core runs AVX-512F (asserted); every pixel read is at most the largest corner
    // plus `reach`, below `src.len()` (asserted), and fits i32; every store writes lanes
    // t < corners.at.len() of rows xi < 16 of `out`, inside it (asserted).
    unsafe {
        if dil == 1 {
            runs(src, corners, row_stride, transform, out, n)
        } else {
            chunks(src, &corners.at, row_stride, dil, transform, out, n)
        }
    }
}

/// The 16 points `4 i + m` of `transform` on the pixels `d[k][l]` of 16 tiles (the first two
/// of each side for the output gradient): down each column l, then along each row i of the
/// result, as the portable form.
#[inline]
#[target_feature(enable = "avx512f")]
fn points(transform: TileTransform, d: &[[__m512; 4]; 4]) -> [__m512; XI] {
    let mut points = [_mm512_setzero_ps(); XI];
    match transform {
        TileTransform::Input => {
            let cols: [[__m512; 4]; 4] =
                std::array::from_fn(|l| b_t(d[0][l], d[1][l], d[2][l], d[3][l]));
            for i in 0..4 {
                let row = b_t(cols[0][i], cols[1][i], cols[2][i], cols[3][i]);
                points[4 * i..4 * i + 4].copy_from_slice(&row);
            }
        }
        TileTransform::OutputGrad => {
            let cols: [[__m512; 4]; 2] = std::array::from_fn(|l| a(d[0][l], d[1][l]));
            for i in 0..4 {
                points[4 * i..4 * i + 4].copy_from_slice(&a(cols[0][i], cols[1][i]));
            }
        }
    }
    points
}

/// Each run of tiles side by side (dilation 1), [`LANES`] tiles at a time: row k of their
/// pixels is `2 tiles + side - 2` contiguous floats (at most three vectors), and tile s's
/// columns 2s, 2s + 1 are its even and odd ones, which a permute separates; columns 2s + 2,
/// 2s + 3 the same after a shift by two floats (`valignd`).
///
/// # Safety
/// As [`transform_chunks`] asserts, with `corners.runs` covering `corners.at` and each run's
/// corners two apart.
#[target_feature(enable = "avx512f")]
unsafe fn runs(
    src: &[f32],
    corners: &Corners,
    row_stride: usize,
    transform: TileTransform,
    out: &mut [f32],
    n: usize,
) {
    let side = transform.side();
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let mut d = [[_mm512_setzero_ps(); 4]; 4];
    for run in &corners.runs {
        for t0 in run.clone().step_by(LANES) {
            let tiles = LANES.min(run.end - t0);
            let first = corners.at[t0] as usize;
            let columns = 2 * tiles + side - 2;
            for (k, d_k) in d.iter_mut().take(side).enumerate() {
                // SAFETY: columns below `columns` of row k are pixels (k, l) of the tiles
                // t0..t0 + tiles, inside `src` (the caller's assertions); masked-off lanes are
                // not read.
                // Columns past the piece's are zeros, never addressed: a pointer past `src`
                // would be out of bounds even with every lane masked off.
                let load = |x0: usize| unsafe {
                    if x0 >= columns {
                        return _mm512_setzero_ps();
                    }
                    let mask = first_lanes(columns - x0);
                    _mm512_maskz_loadu_ps(mask, src.as_ptr().add(first + k * row_stride + x0))
                };
                let (lo, hi) = (load(0), load(LANES));
                d_k[0] = _mm512_permutex2var_ps(lo, even, hi);
                d_k[1] = _mm512_permutex2var_ps(lo, odd, hi);
                if side == 4 {
                    let top = load(2 * LANES);
                    let shift = |a: __m512, b: __m512| {
                        let (a, b) = (_mm512_castps_si512(a), _mm512_castps_si512(b));
                        _mm512_castsi512_ps(_mm512_alignr_epi32::<2>(b, a))
                    };
                    let (lo, hi) = (shift(lo, hi), shift(hi, top));
                    d_k[2] = _mm512_permutex2var_ps(lo, even, hi);
                    d_k[3] = _mm512_permutex2var_ps(lo, odd, hi);
                }
            }
            let mask = first_lanes(tiles);
            for (xi, &p) in points(transform, &d).iter().enumerate() {
                // SAFETY: lanes t0 + s < corners.at.len() of row xi < 16 (asserted).
                unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(xi * n + t0), mask, p) };
            }
        }
    }
}

/// The transform of each chunk of [`LANES`] corners with each pixel of their tiles one masked
/// gather from `src` (any dilation, any order of tiles).
///
/// # Safety
/// As [`transform_chunks`] asserts.
#[target_feature(enable = "avx512f")]
unsafe fn chunks(
    src: &[f32],
    corners: &[u32],
    row_stride: usize,
    dil: usize,
    transform: TileTransform,
    out: &mut [f32],
    n: usize,
) {
    let side = transform.side();
    let zero = _mm512_setzero_ps();
    let mut d = [[zero; 4]; 4];
    for (chunk, t0) in corners.chunks(LANES).zip((0..).step_by(LANES)) {
        let mask = first_lanes(chunk.len());
        // SAFETY: `chunk` holds the masked lanes' u32s; unmasked lanes are not read.
        let corner = unsafe { _mm512_maskz_loadu_epi32(mask, chunk.as_ptr().cast()) };
        for (k, d_k) in d.iter_mut().take(side).enumerate() {
            for (l, d_kl) in d_k.iter_mut().take(side).enumerate() {
                let at = _mm512_add_epi32(
                    corner,
                    _mm512_set1_epi32(index(k * dil * row_stride + l * dil)),
                );
                // SAFETY: the indices are inside `src` (the caller's assertions).
                *d_kl = unsafe { _mm512_mask_i32gather_ps::<4>(zero, mask, at, src.as_ptr()) };
            }
        }
        for (xi, &p) in points(transform, &d).iter().enumerate() {
            // SAFETY: lanes t0 + s < corners.len() of row xi < 16 (asserted).
            unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(xi * n + t0), mask, p) };
        }
    }
}

/// A piece of at most [`LANES`] consecutive tiles, from `t0`, and where it writes its outputs.
struct OutputPiece {
    t0: usize,
    tiles: usize,
    place: OutputPlace,
}

/// Where an [`OutputPiece`]'s outputs go in the plane.
enum OutputPlace {
    /// Tiles side by side in one row of tiles (dilation 1): output rows `i < 2` of the piece
    /// are `2 tiles` contiguous pixels from `first + i width`, one interleaving permute and one
    /// masked store per 16 of them, the masks clipping columns past the image.
    Row {
        first: usize,
        rows: [bool; 2],
        cols: [__mmask16; 2],
    },
    /// Any tiles: each tile's first output pixel as an index into the plane, and which of its
    /// rows and columns `i dil`, `l dil` (i, l < 2) lie in the image (masks of scatters).
    Scattered {
        first: __m512i,
        rows: [__mmask16; 2],
        cols: [__mmask16; 2],
    },
}

/// The pieces of `origins` (each tile's first output pixel): at dilation 1 its runs of tiles
/// side by side in a row (columns two apart), 16 at most a piece; above it chunks of 16.
#[target_feature(enable = "avx512f")]
fn output_pieces(
    (height, width, dil): (usize, usize, usize),
    origins: &[(usize, usize)],
) -> Vec<OutputPiece> {
    let limit = |v: usize| _mm512_set1_epi32(index(v));
    let mut pieces = Vec::new();
    if dil == 1 {
        let mut t0 = 0;
        for t in 1..=origins.len() {
            let (ro, co) = origins[t0];
            let side_by_side = t < origins.len() && origins[t] == (ro, co + 2 * (t - t0));
            if side_by_side && t - t0 < LANES {
                continue;
            }
            let columns = (2 * (t - t0)).min(width - co);
            pieces.push(OutputPiece {
                t0,
                tiles: t - t0,
                place: OutputPlace::Row {
                    first: ro * width + co,
                    rows: [ro < height, ro + 1 < height],
                    cols: [
                        first_lanes(columns),
                        first_lanes(columns.saturating_sub(LANES)),
                    ],
                },
            });
            t0 = t;
        }
        return pieces;
    }
    for (chunk, t0) in origins.chunks(LANES).zip((0..).step_by(LANES)) {
        let lanes = first_lanes(chunk.len());
        let (mut ro, mut co) = ([0i32; LANES], [0i32; LANES]);
        for (s, &(r, c)) in chunk.iter().enumerate() {
            (ro[s], co[s]) = (index(r), index(c));
        }
        // SAFETY: both arrays hold 16 i32s.
        let (ro, co) = unsafe {
            (
                _mm512_maskz_loadu_epi32(0xffff, ro.as_ptr()),
                _mm512_maskz_loadu_epi32(0xffff, co.as_ptr()),
            )
        };
        let inside = |v: __m512i, size: usize| -> [__mmask16; 2] {
            std::array::from_fn(|i| {
                lanes & _mm512_cmplt_epu32_mask(_mm512_add_epi32(v, limit(i * dil)), limit(size))
            })
        };
        pieces.push(OutputPiece {
            t0,
            tiles: chunk.len(),
            place: OutputPlace::Scattered {
                first: _mm512_add_epi32(_mm512_mullo_epi32(ro, limit(width)), co),
                rows: inside(ro, height),
                cols: inside(co, width),
            },
        });
    }
    pieces
}

/// `super::output_block` on AVX-512: `y = A^T M A + bias` for the tiles whose first output
/// pixels are `origins` (16 at a time), `m` as [XI, channels, n] with points `m_stride` apart;
/// each output pixel of 16 tiles is one scatter masked by the image's bounds.
///
/// Panics when `m` is too short for the tiles' points or a plane is larger than i32 indexes.
pub(super) fn output_block(
    (height, width, dil): (usize, usize, usize),
    origins: &[(usize, usize)],
    m: &[f32],
    m_stride: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    assert!(
        available(),
        "the AVX-512 transforms ran on a core without AVX-512F"
    );
    let plane_len = height * width;
    let n = origins.len();
    assert!(
        plane_len <= i32::MAX as usize,
        "a plane of 2^31 floats or more"
    );
    let channels = y.len() / plane_len.max(1);
    if n > 0 && channels > 0 {
        assert!(
            m.len() >= (XI - 1) * m_stride + (channels - 1) * n + n,
            "transformed tiles too short"
        );
    }
    if let Some(bias) = bias {
        assert!(bias.len() >= channels, "fewer biases than channels");
    }
    // SAFETY: the core runs AVX-512F (asserted); the loads read lanes s < chunk length of point
    // xi of channel c, inside `m` (asserted); the scatters write only pixels inside the image
    // (their masks), of plane c < channels of `y`.
    unsafe { output_chunks((height, width, dil), origins, m, m_stride, bias, y) }
}

/// # Safety
/// As [`output_block`] asserts.
#[target_feature(enable = "avx512f")]
unsafe fn output_chunks(
    (height, width, dil): (usize, usize, usize),
    origins: &[(usize, usize)],
    m: &[f32],
    m_stride: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let plane_len = height * width;
    let n = origins.len();
    let limit = |v: usize| _mm512_set1_epi32(index(v));
    // Lanes 0..8 and 8..16 of two vectors, interleaved: a row's even and odd output columns.
    let low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    // The pieces' output positions, the same for every channel: worked out once.
    let pieces = output_pieces((height, width, dil), origins);
    for (c, plane) in y.chunks_exact_mut(plane_len).enumerate() {
        let b_c = _mm512_set1_ps(bias.map_or(0.0, |bias| bias[c]));
        let m_c = m.as_ptr().add(c * n);
        for piece in &pieces {
            let (t0, lanes) = (piece.t0, first_lanes(piece.tiles));
            // SAFETY: lanes s < tiles of point xi, inside `m` (asserted).
            let point =
                |xi: usize| unsafe { _mm512_maskz_loadu_ps(lanes, m_c.add(xi * m_stride + t0)) };
            let cols: [[__m512; 2]; 4] = std::array::from_fn(|jj| {
                a_t(point(jj), point(4 + jj), point(8 + jj), point(12 + jj))
            });
            for i in 0..2 {
                let [y0, y1] = a_t(cols[0][i], cols[1][i], cols[2][i], cols[3][i]);
                let (y0, y1) = (_mm512_add_ps(y0, b_c), _mm512_add_ps(y1, b_c));
                match piece.place {
                    OutputPlace::Row { first, rows, cols } => {
                        if !rows[i] {
                            continue;
                        }
                        let at = plane.as_mut_ptr().add(first + i * width);
                        // SAFETY: row ro + i < height; the masks keep columns co + x below
                        // width, so every pixel written is inside `plane`, and the second half
                        // is addressed only when some of its columns are (else it may lie past
                        // the plane).
                        unsafe {
                            _mm512_mask_storeu_ps(at, cols[0], _mm512_permutex2var_ps(y0, low, y1));
                            if cols[1] != 0 {
                                _mm512_mask_storeu_ps(
                                    at.add(LANES),
                                    cols[1],
                                    _mm512_permutex2var_ps(y0, high, y1),
                                );
                            }
                        }
                    }
                    OutputPlace::Scattered { first, rows, cols } => {
                        for (l, value) in [y0, y1].into_iter().enumerate() {
                            let at = _mm512_add_epi32(first, limit(i * dil * width + l * dil));
                            // SAFETY: unmasked lanes are pixels (r, col) with r < height and
                            // col < width, inside `plane`.
                            unsafe {
                                _mm512_mask_i32scatter_ps::<4>(
                                    plane.as_mut_ptr(),
                                    rows[i] & cols[l],
                                    at,
                                    value,
                                )
                            };
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut x = vec![0.0; len];
        crate::rng::fill_normals(seed, crate::rng::stream::TEST, 0, 0, &mut x);
        x
    }

    /// The gathers give the portable lanes' bits, for both transforms, dilations 1 and 3, whole
    /// and partial chunks, corners in any order.
    #[test]
    fn transform_chunks_give_the_portable_bits() {
        if !available() {
            return;
        }
        let (row_stride, rows) = (87, 19);
        let src = random(row_stride * rows, 5);
        for (transform, side) in [(TileTransform::Input, 4), (TileTransform::OutputGrad, 2)] {
            for dil in [1, 3] {
                let reach = (side - 1) * dil;
                for count in [1, 15, 16, 17, 40, 70] {
                    // Tiles in any order, and runs of tiles side by side (first pixels two
                    // apart) of every length up to and past a piece, broken where a row ends.
                    let scattered = (0..count).map(|t| {
                        let r = (t * 7 + dil) % (rows - reach);
                        let c = (t * 5 + 3) % (row_stride - reach);
                        r * row_stride + c
                    });
                    let per_row = (row_stride - reach - 1) / 2 + 1;
                    let side_by_side = (0..count).map(|t| {
                        let (r, c) = (t / per_row % (rows - reach), 2 * (t % per_row));
                        r * row_stride + c
                    });
                    for corners in [
                        Corners::new(scattered, dil),
                        Corners::new(side_by_side, dil),
                    ] {
                        let n = count + 3;
                        let mut want = vec![f32::NAN; XI * n];
                        let mut got = want.clone();
                        super::super::portable_chunks(
                            &src, &corners, row_stride, dil, transform, &mut want, n,
                        );
                        transform_chunks(&src, &corners, row_stride, dil, transform, &mut got, n);
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(
                            bits(&got),
                            bits(&want),
                            "side {side}, dil {dil}, {count} tiles"
                        );
                    }
                }
            }
        }
    }

    /// A tile that would read past its plane is refused, not gathered.
    #[test]
    fn a_tile_past_the_plane_is_refused() {
        if !available() {
            return;
        }
        let refused = std::panic::catch_unwind(|| {
            let src = vec![0.0; 30];
            let mut out = vec![0.0; XI];
            let corners = Corners::new([20].into_iter(), 1);
            transform_chunks(&src, &corners, 5, 1, TileTransform::Input, &mut out, 1);
        });
        assert!(refused.is_err());
    }

    /// The scatters give the portable untransform's bits, with and without a bias, on planes
    /// whose last tiles hang over the image (odd sizes, dilation 2), partial chunks included;
    /// pixels no tile writes stay as they were.
    #[test]
    fn output_block_gives_the_portable_bits() {
        if !available() {
            return;
        }
        use super::super::super::Conv2dCfg;
        use super::super::{output_block as portable_block, tile_origins, ConvDims, Tiling};
        for (h, w, dil) in [(7, 9, 1), (13, 5, 2), (28, 28, 1), (5, 41, 1), (3, 3, 4)] {
            let channels = 3;
            let cfg = Conv2dCfg::same(3, dil);
            let d = ConvDims::new(&[1, 2, h, w], &[channels, 2, 3, 3], cfg, "conv2d").unwrap();
            let tiling = Tiling::new(&d);
            let per_sample = tiling.per_sample();
            for tiles in [0..per_sample, 1..per_sample.min(18)] {
                let n = tiles.len();
                let m_stride = channels * n + 5;
                let m = random(XI * m_stride, 9);
                let bias = random(channels, 10);
                for bias in [None, Some(&bias[..])] {
                    let mut want = random(channels * h * w, 11);
                    let mut got = want.clone();
                    portable_block(&tiling, &m, m_stride, tiles.clone(), bias, &mut want);
                    let origins = tile_origins(&tiling, tiles.clone());
                    output_block((h, w, dil), &origins, &m, m_stride, bias, &mut got);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "{h}x{w}, dil {dil}, tiles {tiles:?}"
                    );
                }
            }
        }
    }
}
