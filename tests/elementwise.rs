//! Every kernel of kernels/elementwise.cu against the Rust reference, on fresh random inputs of
//! edge sizes, outputs poisoned before the launch.
mod common;

use common::*;
use dalemeetslangevin::{ops, Device, Tensor};

type Unary = fn(&Tensor) -> dalemeetslangevin::Result<Tensor>;

#[test]
fn unary_kernels_match_reference() {
    let mut rng = test_rng("unary");
    let cases: &[(&str, Unary, f32, f32)] = &[
        ("copy", ops::copy, -3.0, 3.0),
        ("exp", ops::exp, -5.0, 5.0),
        ("log", ops::log, 1e-3, 10.0),
        ("elu", ops::elu, -4.0, 4.0),
        ("relu", ops::relu, -4.0, 4.0),
    ];
    for dev in kernel_devices("unary") {
        for &(name, op, lo, hi) in cases {
            for &n in EDGE_SIZES {
                let x = random_vec(&mut rng, n, lo, hi);
                let want = op(&Tensor::from_slice(&x, &[n], &Device::Cpu).unwrap())
                    .unwrap()
                    .to_vec()
                    .unwrap();
                let got = op(&Tensor::from_slice(&x, &[n], &dev).unwrap())
                    .unwrap()
                    .to_vec()
                    .unwrap();
                assert_close(&format!("{name} n={n} on {dev}"), &got, &want, 1e-6, 1e-7);
            }
        }
    }
}

#[test]
fn binary_and_affine_kernels_match_reference() {
    let mut rng = test_rng("binary");
    for dev in kernel_devices("binary") {
        for &n in EDGE_SIZES {
            let a = random_vec(&mut rng, n, -2.0, 2.0);
            let b = random_vec(&mut rng, n, -2.0, 2.0);
            let run = |d: &Device| {
                let ta = Tensor::from_slice(&a, &[n], d).unwrap();
                let tb = Tensor::from_slice(&b, &[n], d).unwrap();
                [
                    ops::add(&ta, &tb).unwrap(),
                    ops::sub(&ta, &tb).unwrap(),
                    ops::mul(&ta, &tb).unwrap(),
                    ops::axpby(0.5, &ta, -3.0, &tb).unwrap(),
                    ops::scale(&ta, 1.5, -0.25).unwrap(),
                    ops::elu_backward(&ta, &tb).unwrap(),
                ]
                .map(|t| t.to_vec().unwrap())
            };
            let (want, got) = (run(&Device::Cpu), run(&dev));
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_close(&format!("binary op {k} n={n} on {dev}"), g, w, 1e-6, 1e-6);
            }
        }
    }
}

#[test]
fn fill_writes_every_element() {
    for dev in kernel_devices("fill") {
        for &n in EDGE_SIZES {
            let mut t = Tensor::uninit(&[n], &dev).unwrap();
            ops::fill(&mut t, 2.5).unwrap();
            assert!(
                t.to_vec().unwrap().iter().all(|&v| v == 2.5),
                "fill n={n} on {dev}"
            );
        }
    }
}

#[test]
fn sum_and_mean_match_reference() {
    let mut rng = test_rng("sum");
    for dev in kernel_devices("sum") {
        for &n in EDGE_SIZES.iter().chain(&[100_003]) {
            let x = random_vec(&mut rng, n, -1.0, 1.0);
            let want: f64 = x.iter().map(|&v| v as f64).sum();
            let t = Tensor::from_slice(&x, &[n], &dev).unwrap();
            let got = ops::sum(&t).unwrap().item().unwrap() as f64;
            // f32 accumulation over n terms of magnitude <= 1.
            let tol = 1e-6 * (n as f64).sqrt() * 4.0 + 1e-6;
            assert!(
                (got - want).abs() <= tol,
                "sum n={n} on {dev}: {got} vs {want}"
            );
            let mean = ops::mean(&t).unwrap().item().unwrap() as f64;
            assert!(
                (mean - want / n as f64).abs() <= tol / n as f64 + 1e-7,
                "mean n={n} on {dev}"
            );
            // Deterministic: the same input gives the same bits.
            assert_eq!(
                ops::sum(&t).unwrap().item().unwrap().to_bits(),
                (got as f32).to_bits()
            );
        }
    }
}

#[test]
fn shape_mismatch_is_an_error() {
    let a = Tensor::zeros(&[3], &Device::Cpu).unwrap();
    let b = Tensor::zeros(&[4], &Device::Cpu).unwrap();
    let err = ops::add(&a, &b).unwrap_err().to_string();
    assert!(err.contains("[3] vs [4]"), "{err}");
}

#[test]
fn relu_keeps_nan_and_zeroes_negatives() {
    for dev in std::iter::once(Device::Cpu).chain(kernel_devices("relu_nan")) {
        let x = Tensor::from_slice(&[-2.0, -0.0, 0.5, f32::NAN, 3.0], &[5], &dev).unwrap();
        let y = ops::relu(&x).unwrap().to_vec().unwrap();
        assert_eq!(&y[..3], &[0.0, 0.0, 0.5], "on {dev}");
        assert!(
            y[3].is_nan(),
            "a NaN must pass through ReLU on {dev}, got {}",
            y[3]
        );
        assert_eq!(y[4], 3.0);
    }
}

#[test]
fn concat_channels_matches_definition() {
    let mut rng = test_rng("concat_channels");
    // (batch, per-part channels, h, w): edge sizes, one part, a 1x1 image, uneven parts.
    let cases: &[(usize, &[usize], usize, usize)] = &[
        (2, &[3, 1, 4], 5, 7),
        (1, &[2], 3, 3),
        (3, &[1, 1], 1, 1),
        (2, &[64, 96, 32], 4, 3),
    ];
    for dev in kernel_devices("concat_channels") {
        for &(batch, channels, h, w) in cases {
            let parts: Vec<Vec<f32>> = channels
                .iter()
                .map(|&c| random_vec(&mut rng, batch * c * h * w, -1.0, 1.0))
                .collect();
            let c_all: usize = channels.iter().sum();
            // torch.cat(parts, 1): channel k of the result is channel k - offset of its part.
            let mut want = Vec::with_capacity(batch * c_all * h * w);
            for b in 0..batch {
                for (part, &c) in parts.iter().zip(channels) {
                    want.extend_from_slice(&part[b * c * h * w..][..c * h * w]);
                }
            }
            for d in [Device::Cpu, dev.clone()] {
                let tensors: Vec<Tensor> = parts
                    .iter()
                    .zip(channels)
                    .map(|(v, &c)| Tensor::from_slice(v, &[batch, c, h, w], &d).unwrap())
                    .collect();
                let refs: Vec<&Tensor> = tensors.iter().collect();
                let got = ops::concat_channels(&refs).unwrap();
                assert_eq!(got.shape(), &[batch, c_all, h, w]);
                assert_eq!(got.to_vec().unwrap(), want, "{channels:?} {h}x{w} on {d}");
            }
        }
    }
}

#[test]
fn concat_channels_refuses_mismatched_parts() {
    let a = Tensor::zeros(&[2, 3, 4, 4], &Device::Cpu).unwrap();
    let b = Tensor::zeros(&[2, 3, 4, 5], &Device::Cpu).unwrap();
    let c = Tensor::zeros(&[2, 3, 4], &Device::Cpu).unwrap();
    for parts in [vec![&a, &b], vec![&a, &c], vec![&c], vec![]] {
        let e = ops::concat_channels(&parts).unwrap_err().to_string();
        assert!(e.contains("concat_channels"), "{e}");
    }
}
