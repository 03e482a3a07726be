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
