//! Every kernel of kernels/elementwise.cu against the Rust reference, on fresh random inputs of
//! edge sizes, outputs poisoned before the launch.
mod common;

use common::gradcheck::check_gradients;
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

#[test]
fn silu_kernels_match_reference_at_every_size() {
    // The kernels do the cpu's f32 operations in the same order, with CUDA's expf (2 ulp) for
    // the cpu's exp (under 1 ulp): sigmoid within ~3 ulp, so the SiLU within ~4 ulp relative,
    // rtol 1e-6. The slope s (1 + x (1 - s)) passes through zero near x = -1.28, where the
    // relative error is unbounded but the absolute one stays a few ulp of s |x (1 - s)| <= 1.1
    // times |dy| <= 4: atol 2e-6. Empty tensors included.
    let mut rng = test_rng("silu_kernels");
    for dev in kernel_devices("silu_kernels") {
        for &n in std::iter::once(&0).chain(EDGE_SIZES) {
            let x = random_vec(&mut rng, n, -10.0, 10.0);
            let dy = random_vec(&mut rng, n, -4.0, 4.0);
            let run = |d: &Device| {
                let xt = Tensor::from_slice(&x, &[n], d).unwrap();
                let dyt = Tensor::from_slice(&dy, &[n], d).unwrap();
                [
                    ops::silu(&xt).unwrap(),
                    ops::silu_backward(&xt, &dyt).unwrap(),
                ]
                .map(|t| t.to_vec().unwrap())
            };
            let (want, got) = (run(&Device::Cpu), run(&dev));
            assert_close(
                &format!("silu n={n} on {dev}"),
                &got[0],
                &want[0],
                1e-6,
                0.0,
            );
            let what = format!("silu_backward n={n} on {dev}");
            assert_close(&what, &got[1], &want[1], 1e-6, 2e-6);
        }
    }
}

#[test]
fn silu_is_finite_at_large_inputs_and_keeps_nan() {
    // Against the f64 formula. exp(-|x|) never overflows; below x = -87 the true values are
    // under f32's normal range, where a subnormal carries fewer bits: atol is that range's edge.
    let x = [
        -100.0f32, -87.0, -30.0, -3.0, -1e-3, -0.0, 0.0, 1e-3, 0.5, 3.0, 30.0, 87.0, 100.0,
    ];
    let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
    let want_y: Vec<f32> = x
        .iter()
        .map(|&v| (v as f64 * sigmoid(v as f64)) as f32)
        .collect();
    let want_slope: Vec<f32> = x
        .iter()
        .map(|&v| {
            let (v, s) = (v as f64, sigmoid(v as f64));
            (s + v * s * (1.0 - s)) as f32
        })
        .collect();
    for dev in std::iter::once(Device::Cpu).chain(kernel_devices("silu_large")) {
        let xt = Tensor::from_slice(&x, &[x.len()], &dev).unwrap();
        let ones = Tensor::from_vec(vec![1.0; x.len()], &[x.len()], &dev).unwrap();
        let y = ops::silu(&xt).unwrap().to_vec().unwrap();
        let slope = ops::silu_backward(&xt, &ones).unwrap().to_vec().unwrap();
        let tiny = f32::MIN_POSITIVE;
        assert_close(&format!("silu on {dev}"), &y, &want_y, 1e-6, tiny);
        assert_close(
            &format!("silu slope on {dev}"),
            &slope,
            &want_slope,
            1e-6,
            tiny,
        );
        assert_eq!((y[12], slope[12]), (100.0, 1.0), "on {dev}");

        // A NaN input or upstream gradient gives NaN; the other elements stay finite.
        let xt = Tensor::from_slice(&[f32::NAN, 1.0, 2.0], &[3], &dev).unwrap();
        let dyt = Tensor::from_slice(&[1.0, f32::NAN, 1.0], &[3], &dev).unwrap();
        let y = ops::silu(&xt).unwrap().to_vec().unwrap();
        let dx = ops::silu_backward(&xt, &dyt).unwrap().to_vec().unwrap();
        assert!(
            y[0].is_nan() && y[1..].iter().all(|v| v.is_finite()),
            "{y:?} on {dev}"
        );
        assert!(
            dx[0].is_nan() && dx[1].is_nan() && dx[2].is_finite(),
            "{dx:?} on {dev}"
        );
    }
}

#[test]
fn silu_gradient_matches_finite_differences() {
    // SiLU is smooth with |silu'''| <= 0.5: truncation eps^2/6 * 0.5 ~ 1e-5 at eps = 1e-2;
    // round-off: L sums 40 outputs |y| <= 5 at ~1e-7 relative, e_L ~ 2e-5, over 2 eps: 1e-3.
    let mut rng = test_rng("silu_gradcheck");
    let inputs = vec![(random_vec(&mut rng, 40, -5.0, 5.0), vec![4, 10])];
    check_gradients("silu", &mut rng, &inputs, 1e-2, 3e-3, &|t, v| t.silu(&v[0]));
}
