//! kernels/pool.cu against the cpu reference; the PyTorch semantics the network relies on
//! (count_include_pad, align_corners=True) by analytic values; gradients by finite differences.
mod common;

use common::gradcheck::check_gradients;
use common::*;
use dalemeetslangevin::nn::PoolCfg;
use dalemeetslangevin::ops::pool::{
    avg_pool2d, avg_pool2d_backward, max_pool2d, resize_bilinear, upsample_bilinear,
    upsample_bilinear_backward, upsample_nearest, upsample_nearest_backward,
};
use dalemeetslangevin::{Device, Tensor};

const POOLS: &[(PoolCfg, [usize; 4])] = &[
    (PoolCfg::MEAN_POOL_2X2, [2, 3, 8, 6]),
    (PoolCfg::MEAN_POOL_2X2, [1, 2, 7, 9]),
    (PoolCfg::CRP_5X5, [2, 3, 7, 7]),
    (PoolCfg::CRP_5X5, [1, 2, 13, 11]),
    (PoolCfg::CRP_5X5, [1, 1, 1, 1]),
    (PoolCfg::new(3, 1, 1).excluding_pad(), [2, 3, 7, 7]),
    (PoolCfg::new(3, 2, 1).excluding_pad(), [1, 2, 9, 6]),
    (PoolCfg::new(3, 1, 1).excluding_pad(), [1, 1, 1, 2]),
    (PoolCfg::new(3, 2, 1), [3, 2, 5, 8]),
];

/// The FID Inception's max pools (3x3 stride 2 unpadded, 3x3 stride 1 padded) and edges.
const MAX_POOLS: &[(PoolCfg, [usize; 4])] = &[
    (PoolCfg::new(3, 2, 0), [2, 3, 9, 9]),
    (PoolCfg::new(3, 2, 0), [1, 2, 8, 7]),
    (PoolCfg::new(3, 1, 1), [2, 2, 5, 6]),
    (PoolCfg::new(3, 1, 1), [1, 1, 1, 1]),
    (PoolCfg::new(2, 2, 1), [1, 3, 4, 5]),
];

/// (input [N, C, H, W], output size)
const RESIZES: &[([usize; 4], (usize, usize))] = &[
    ([2, 3, 7, 7], (14, 14)),
    ([1, 2, 13, 11], (28, 27)),
    ([2, 1, 1, 1], (3, 4)),
    ([1, 3, 5, 5], (5, 5)),
    ([1, 2, 8, 8], (3, 5)),
    ([2, 2, 4, 6], (1, 1)),
];

#[test]
fn avg_pool_kernels_match_cpu_reference() {
    let mut rng = test_rng("avg_pool_kernels");
    for dev in kernel_devices("avg_pool_kernels") {
        for &(cfg, shape) in POOLS {
            let x = random_vec(&mut rng, shape.iter().product(), -1.0, 1.0);
            let run = |d: &Device| {
                let y = avg_pool2d(&Tensor::from_slice(&x, &shape, d).unwrap(), cfg).unwrap();
                let dy = Tensor::from_slice(&x[..y.numel()], y.shape(), d).unwrap();
                let dx = avg_pool2d_backward(&dy, &shape, cfg).unwrap();
                [y.to_vec().unwrap(), dx.to_vec().unwrap()]
            };
            let (want, got) = (run(&Device::Cpu), run(&dev));
            assert_close(
                &format!("avg_pool2d {cfg:?} {shape:?} on {dev}"),
                &got[0],
                &want[0],
                1e-5,
                1e-6,
            );
            assert_close(
                &format!("avg_pool2d_backward {cfg:?} {shape:?} on {dev}"),
                &got[1],
                &want[1],
                1e-5,
                1e-6,
            );
        }
    }
}

/// (input [N, C, H, W], factor): DDPM++'s x2 on odd and 1x1 planes, a non-square plane, x3 and
/// the identity x1; more elements than one block of threads.
const NEAREST: &[([usize; 4], usize)] = &[
    ([2, 3, 7, 7], 2),
    ([1, 2, 1, 1], 2),
    ([2, 1, 5, 3], 3),
    ([1, 2, 4, 6], 1),
    ([3, 5, 14, 14], 2),
];

#[test]
fn nearest_upsample_kernels_match_cpu_reference() {
    let mut rng = test_rng("nearest_kernels");
    for dev in kernel_devices("nearest_kernels") {
        for &(shape, factor) in NEAREST {
            let x = random_vec(&mut rng, shape.iter().product(), -1.0, 1.0);
            let dy = random_vec(&mut rng, x.len() * factor * factor, -1.0, 1.0);
            let run = |d: &Device| {
                let y =
                    upsample_nearest(&Tensor::from_slice(&x, &shape, d).unwrap(), factor).unwrap();
                let dy = Tensor::from_slice(&dy, y.shape(), d).unwrap();
                let dx = upsample_nearest_backward(&dy, &shape, factor).unwrap();
                [y.to_vec().unwrap(), dx.to_vec().unwrap()]
            };
            let (want, got) = (run(&Device::Cpu), run(&dev));
            // Copies are exact; the backward sums the f^2 gradients in the same order on both.
            let what = format!("upsample_nearest {shape:?} x{factor} on {dev}");
            assert_close(&what, &got[0], &want[0], 0.0, 0.0);
            assert_close(&format!("{what} backward"), &got[1], &want[1], 0.0, 0.0);
        }
    }
}

#[test]
fn nearest_upsample_copies_each_pixel_into_a_square() {
    let x =
        Tensor::from_slice(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[1, 1, 2, 3], &Device::Cpu).unwrap();
    let y = upsample_nearest(&x, 2).unwrap();
    assert_eq!(y.shape(), [1, 1, 4, 6]);
    #[rustfmt::skip]
    let want = [
        1.0, 1.0, 2.0, 2.0, 3.0, 3.0,
        1.0, 1.0, 2.0, 2.0, 3.0, 3.0,
        4.0, 4.0, 5.0, 5.0, 6.0, 6.0,
        4.0, 4.0, 5.0, 5.0, 6.0, 6.0,
    ];
    assert_eq!(y.to_vec().unwrap(), want);
    let dx = upsample_nearest_backward(&y, x.shape(), 2).unwrap();
    assert_eq!(dx.to_vec().unwrap(), [4.0, 8.0, 12.0, 16.0, 20.0, 24.0]);
    for bad in [0, usize::MAX / 4] {
        let err = upsample_nearest(&x, bad).unwrap_err().to_string();
        assert!(err.contains("upsample_nearest"), "{err}");
    }
    let err = upsample_nearest_backward(&x, &[1, 1, 2, 3], 2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("output gradient"), "{err}");
}

#[test]
fn upsample_kernels_match_cpu_reference() {
    let mut rng = test_rng("upsample_kernels");
    for dev in kernel_devices("upsample_kernels") {
        for &(shape, size) in RESIZES {
            let x = random_vec(&mut rng, shape.iter().product(), -1.0, 1.0);
            let dy = random_vec(&mut rng, shape[0] * shape[1] * size.0 * size.1, -1.0, 1.0);
            let run = |d: &Device| {
                let y =
                    upsample_bilinear(&Tensor::from_slice(&x, &shape, d).unwrap(), size).unwrap();
                let dy = Tensor::from_slice(&dy, y.shape(), d).unwrap();
                let dx = upsample_bilinear_backward(&dy, &shape).unwrap();
                [y.to_vec().unwrap(), dx.to_vec().unwrap()]
            };
            let (want, got) = (run(&Device::Cpu), run(&dev));
            assert_close(
                &format!("upsample {shape:?}->{size:?} on {dev}"),
                &got[0],
                &want[0],
                1e-5,
                1e-6,
            );
            assert_close(
                &format!("upsample backward {shape:?}->{size:?} on {dev}"),
                &got[1],
                &want[1],
                1e-5,
                1e-5,
            );
        }
    }
}

/// PyTorch's max_pool2d written out: the largest in-bounds value of each window.
fn direct_max_pool(x: &[f32], [n, c, h, w]: [usize; 4], cfg: PoolCfg) -> Vec<f32> {
    let (ho, wo) = (
        (h + 2 * cfg.padding - cfg.kernel) / cfg.stride + 1,
        (w + 2 * cfg.padding - cfg.kernel) / cfg.stride + 1,
    );
    let mut y = Vec::new();
    for p in 0..n * c {
        for oh in 0..ho {
            for ow in 0..wo {
                let mut best = f32::NEG_INFINITY;
                for ki in 0..cfg.kernel {
                    for kj in 0..cfg.kernel {
                        let (ih, iw) = (oh * cfg.stride + ki, ow * cfg.stride + kj);
                        let (ih, iw) = (ih.wrapping_sub(cfg.padding), iw.wrapping_sub(cfg.padding));
                        if ih < h && iw < w {
                            best = best.max(x[(p * h + ih) * w + iw]);
                        }
                    }
                }
                y.push(best);
            }
        }
    }
    y
}

#[test]
fn max_pool_matches_definition_and_kernels_match_cpu() {
    let mut rng = test_rng("max_pool");
    let devices = kernel_devices("max_pool");
    for &(cfg, shape) in MAX_POOLS {
        let x = random_vec(&mut rng, shape.iter().product(), -1.0, 1.0);
        let want = direct_max_pool(&x, shape, cfg);
        for dev in std::iter::once(Device::Cpu).chain(devices.iter().cloned()) {
            let y = max_pool2d(&Tensor::from_slice(&x, &shape, &dev).unwrap(), cfg).unwrap();
            assert_eq!(
                y.to_vec().unwrap(),
                want,
                "max_pool2d {cfg:?} {shape:?} on {dev}"
            );
        }
    }
}

#[test]
fn max_pool_propagates_nan() {
    // PyTorch: a NaN anywhere in a window is that window's maximum.
    let mut x = vec![0.0f32; 25];
    x[12] = f32::NAN;
    for dev in std::iter::once(Device::Cpu).chain(kernel_devices("max_pool_nan")) {
        let y = max_pool2d(
            &Tensor::from_slice(&x, &[1, 1, 5, 5], &dev).unwrap(),
            PoolCfg::new(3, 2, 0),
        )
        .unwrap()
        .to_vec()
        .unwrap();
        assert!(
            y.iter().all(|v| v.is_nan()),
            "every window holds the NaN on {dev}: {y:?}"
        );
    }
}

#[test]
fn excluding_pad_averages_in_bounds_pixels_only() {
    // count_include_pad=False: an all-ones image averages to exactly 1 everywhere, corners too;
    // with the default the corner of a 3x3 window over padding is 4/9.
    let x = Tensor::from_vec(vec![1.0; 30], &[1, 1, 5, 6], &Device::Cpu).unwrap();
    let cfg = PoolCfg::new(3, 1, 1);
    let y = avg_pool2d(&x, cfg.excluding_pad())
        .unwrap()
        .to_vec()
        .unwrap();
    assert!(y.iter().all(|&v| v == 1.0), "{y:?}");
    let y = avg_pool2d(&x, cfg).unwrap().to_vec().unwrap();
    assert!((y[0] - 4.0 / 9.0).abs() < 1e-6, "corner {}", y[0]);
}

/// (input [N, C, H, W], output size) of the align_corners=False resize: the FID Inception's
/// 28 -> 299 and 32 -> 299, downsizing, identity and 1-pixel edges.
const HALF_PIXEL_RESIZES: &[([usize; 4], (usize, usize))] = &[
    ([1, 3, 28, 28], (299, 299)),
    ([2, 1, 32, 32], (299, 299)),
    ([1, 2, 13, 11], (5, 7)),
    ([1, 3, 5, 5], (5, 5)),
    ([2, 1, 1, 1], (3, 4)),
    ([1, 2, 6, 4], (1, 1)),
];

#[test]
fn resize_kernels_match_cpu_reference() {
    let mut rng = test_rng("resize_kernels");
    for dev in kernel_devices("resize_kernels") {
        for &(shape, size) in HALF_PIXEL_RESIZES {
            let x = random_vec(&mut rng, shape.iter().product(), -1.0, 1.0);
            let run = |d: &Device| {
                resize_bilinear(&Tensor::from_slice(&x, &shape, d).unwrap(), size)
                    .unwrap()
                    .to_vec()
                    .unwrap()
            };
            let label = format!("resize {shape:?}->{size:?} on {dev}");
            assert_close(&label, &run(&dev), &run(&Device::Cpu), 1e-5, 1e-6);
        }
    }
}

#[test]
fn resize_samples_at_half_pixel_centres() {
    // align_corners=False: output o samples at s = (o + 0.5) h / ho - 0.5, clamped to [0, h-1],
    // so a ramp x[i][j] = 2i - 3j becomes 2 s_i - 3 s_j exactly where no clamping happens and
    // the edge value where it does.
    let (h, w, ho, wo) = (5usize, 4usize, 13usize, 7usize);
    let x: Vec<f32> = (0..h * w)
        .map(|k| 2.0 * (k / w) as f32 - 3.0 * (k % w) as f32)
        .collect();
    let y = resize_bilinear(
        &Tensor::from_vec(x, &[1, 1, h, w], &Device::Cpu).unwrap(),
        (ho, wo),
    )
    .unwrap()
    .to_vec()
    .unwrap();
    let at = |o: usize, size: usize, size_out: usize| {
        ((o as f64 + 0.5) * size as f64 / size_out as f64 - 0.5).clamp(0.0, (size - 1) as f64)
    };
    for o in 0..ho {
        for p in 0..wo {
            let want = 2.0 * at(o, h, ho) - 3.0 * at(p, w, wo);
            let got = y[o * wo + p] as f64;
            assert!((got - want).abs() < 1e-4, "({o},{p}): {got} vs {want}");
        }
    }
}

#[test]
fn crp_pool_counts_padding() {
    // nn.AvgPool2d(5, 1, 2) divides by 25 everywhere: a corner of an all-ones 6x6 sees 3x3 ones.
    let x = Tensor::from_vec(vec![1.0; 36], &[1, 1, 6, 6], &Device::Cpu).unwrap();
    let y = avg_pool2d(&x, PoolCfg::CRP_5X5).unwrap().to_vec().unwrap();
    assert_eq!(y.len(), 36);
    assert!((y[0] - 9.0 / 25.0).abs() < 1e-6, "corner {}", y[0]);
    assert!((y[1] - 12.0 / 25.0).abs() < 1e-6, "edge {}", y[1]);
    assert!((y[2 * 6 + 2] - 1.0).abs() < 1e-6, "centre {}", y[14]);
}

#[test]
fn mean_pool_is_mean_of_four_subsamples() {
    // ncsn: (x[::2, ::2] + x[1::2, ::2] + x[::2, 1::2] + x[1::2, 1::2]) / 4
    let mut rng = test_rng("mean_pool");
    let x = random_vec(&mut rng, 2 * 6 * 4, -1.0, 1.0);
    let y = avg_pool2d(
        &Tensor::from_slice(&x, &[2, 1, 6, 4], &Device::Cpu).unwrap(),
        PoolCfg::MEAN_POOL_2X2,
    )
    .unwrap()
    .to_vec()
    .unwrap();
    for p in 0..2 {
        for i in 0..3 {
            for j in 0..2 {
                let at = |a: usize, b: usize| x[p * 24 + (2 * i + a) * 4 + 2 * j + b];
                let want = (at(0, 0) + at(1, 0) + at(0, 1) + at(1, 1)) / 4.0;
                assert!((y[p * 6 + i * 2 + j] - want).abs() < 1e-6);
            }
        }
    }
}

#[test]
fn bilinear_aligns_corners() {
    // With align_corners=True a linear ramp stays the same ramp, corners included:
    // x[i][j] = 2i - 3j gives y[o][p] = 2 o (h-1)/(ho-1) - 3 p (w-1)/(wo-1).
    let (h, w, ho, wo) = (5usize, 4usize, 13usize, 7usize);
    let x: Vec<f32> = (0..h * w)
        .map(|k| 2.0 * (k / w) as f32 - 3.0 * (k % w) as f32)
        .collect();
    let y = upsample_bilinear(
        &Tensor::from_vec(x, &[1, 1, h, w], &Device::Cpu).unwrap(),
        (ho, wo),
    )
    .unwrap()
    .to_vec()
    .unwrap();
    for o in 0..ho {
        for p in 0..wo {
            let want = 2.0 * o as f32 * (h - 1) as f32 / (ho - 1) as f32
                - 3.0 * p as f32 * (w - 1) as f32 / (wo - 1) as f32;
            assert!(
                (y[o * wo + p] - want).abs() < 1e-4,
                "({o},{p}): {} vs {want}",
                y[o * wo + p]
            );
        }
    }
}

#[test]
fn pool_and_upsample_gradients_match_finite_differences() {
    let mut rng = test_rng("pool_gradcheck");
    for &(cfg, shape) in &POOLS[..7] {
        let x = vec![(
            random_vec(&mut rng, shape.iter().product(), -1.0, 1.0),
            shape.to_vec(),
        )];
        check_gradients("avg_pool2d", &mut rng, &x, 1e-2, 1e-3, &move |t, v| {
            t.avg_pool2d(&v[0], cfg)
        });
    }
    for &(shape, size) in RESIZES {
        let x = vec![(
            random_vec(&mut rng, shape.iter().product(), -1.0, 1.0),
            shape.to_vec(),
        )];
        check_gradients(
            "upsample_bilinear",
            &mut rng,
            &x,
            1e-2,
            1e-3,
            &move |t, v| t.upsample_bilinear(&v[0], size),
        );
    }
    for &(shape, factor) in NEAREST {
        let x = vec![(
            random_vec(&mut rng, shape.iter().product(), -1.0, 1.0),
            shape.to_vec(),
        )];
        check_gradients(
            "upsample_nearest",
            &mut rng,
            &x,
            1e-2,
            1e-3,
            &move |t, v| t.upsample_nearest(&v[0], factor),
        );
    }
}
