//! The fused softmax cross-entropy kernel and the softmax over the last axis (forward and
//! backward kernels) against the Rust reference, and the gradients of both against finite
//! differences.
mod common;

use common::*;
use dalemeetslangevin::{ops, Device, Tensor};
use rand::Rng;

fn labels(rng: &mut rand::rngs::StdRng, rows: usize, classes: usize) -> Vec<f32> {
    (0..rows)
        .map(|_| rng.random_range(0..classes) as f32)
        .collect()
}

#[test]
fn kernel_matches_reference() {
    let mut rng = test_rng("softmax_xent");
    for dev in kernel_devices("softmax_xent") {
        for &(rows, classes) in &[(1usize, 1usize), (1, 10), (7, 3), (257, 10), (33, 17)] {
            let z = random_vec(&mut rng, rows * classes, -6.0, 6.0);
            let y = labels(&mut rng, rows, classes);
            let run = |d: &Device| {
                let (l, g) = ops::softmax_cross_entropy(
                    &Tensor::from_slice(&z, &[rows, classes], d).unwrap(),
                    &Tensor::from_slice(&y, &[rows], d).unwrap(),
                )
                .unwrap();
                (l.to_vec().unwrap(), g.to_vec().unwrap())
            };
            let (want_l, want_g) = run(&Device::Cpu);
            let (got_l, got_g) = run(&dev);
            assert_close(
                &format!("loss {rows}x{classes} on {dev}"),
                &got_l,
                &want_l,
                1e-5,
                1e-6,
            );
            assert_close(
                &format!("grad {rows}x{classes} on {dev}"),
                &got_g,
                &want_g,
                1e-5,
                1e-7,
            );
        }
    }
}

#[test]
fn gradient_matches_finite_differences() {
    let mut rng = test_rng("softmax_xent_grad");
    let (rows, classes) = (4, 5);
    let z = random_vec(&mut rng, rows * classes, -2.0, 2.0);
    let y = labels(&mut rng, rows, classes);
    let cpu = Device::Cpu;
    let yt = Tensor::from_slice(&y, &[rows], &cpu).unwrap();
    let loss = |z: &[f32]| {
        let zt = Tensor::from_slice(z, &[rows, classes], &cpu).unwrap();
        ops::softmax_cross_entropy(&zt, &yt)
            .unwrap()
            .0
            .item()
            .unwrap() as f64
    };
    let (_, g) = ops::softmax_cross_entropy(
        &Tensor::from_slice(&z, &[rows, classes], &cpu).unwrap(),
        &yt,
    )
    .unwrap();
    let g = g.to_vec().unwrap();
    let eps = 1e-2;
    for i in 0..z.len() {
        let (mut zp, mut zm) = (z.clone(), z.clone());
        zp[i] += eps;
        zm[i] -= eps;
        let fd = (loss(&zp) - loss(&zm)) / (2.0 * eps as f64);
        assert!(
            (fd - g[i] as f64).abs() < 2e-3,
            "element {i}: finite difference {fd}, gradient {}",
            g[i]
        );
    }
}

#[test]
fn bad_labels_are_errors() {
    let cpu = Device::Cpu;
    let z = Tensor::zeros(&[2, 3], &cpu).unwrap();
    let y = Tensor::from_slice(&[0.0, 3.0], &[2], &cpu).unwrap();
    assert!(ops::softmax_cross_entropy(&z, &y).is_err());
    let y = Tensor::from_slice(&[0.0], &[1], &cpu).unwrap();
    assert!(ops::softmax_cross_entropy(&z, &y).is_err());
}

// ---- softmax over the last axis (ops::softmax) ----------------------------------------------

/// Rows of one element, odd lengths across the 32 lanes of a warp, many rows (not a multiple of
/// the 8 rows of a block), rows of 1024 (attention at 32x32) and 4096 in a 3-D tensor.
const ROW_SHAPES: &[&[usize]] = &[
    &[1],
    &[5, 1],
    &[3, 257],
    &[1001, 7],
    &[9, 33],
    &[4, 1024],
    &[2, 3, 4096],
];

/// The relative rounding of a row of `len`: the kernel sums each lane's len/32 terms in f32 and
/// then the 32 lanes (5 steps), at most (len/32 + 5) 2^-24 of the sum for positive terms (the
/// exponentials; the backward's |dy y|); exp, the division and the cpu's rounding of its f64 sum
/// add a few 2^-24 more. Twice that, in units of 2^-23.
fn row_rounding(len: usize) -> f32 {
    (len / 32 + 9) as f32 * 2f32.powi(-23)
}

fn softmax_rows_on(x: &[f32], shape: &[usize], dev: &Device) -> Vec<f32> {
    ops::softmax::softmax_rows(&Tensor::from_slice(x, shape, dev).unwrap())
        .unwrap()
        .to_vec()
        .unwrap()
}

fn softmax_rows_backward_on(y: &[f32], dy: &[f32], shape: &[usize], dev: &Device) -> Vec<f32> {
    let y = Tensor::from_slice(y, shape, dev).unwrap();
    let dy = Tensor::from_slice(dy, shape, dev).unwrap();
    ops::softmax::softmax_rows_backward(&y, &dy)
        .unwrap()
        .to_vec()
        .unwrap()
}

/// The backward kernel against the cpu: dx = y (dy - dot) with dot = sum(dy y) off by at most
/// row_rounding of S = sum |dy y| (see [`row_rounding`]), and the subtraction and product by
/// 2^-24 of |y| (|dy| + S) each: |error| <= row_rounding |y| (|dy| + S).
fn assert_backward_close(what: &str, got: &[f32], want: &[f32], y: &[f32], dy: &[f32], len: usize) {
    for (r, ((g, w), (y, dy))) in got
        .chunks(len)
        .zip(want.chunks(len))
        .zip(y.chunks(len).zip(dy.chunks(len)))
        .enumerate()
    {
        let s: f32 = y.iter().zip(dy).map(|(a, b)| (a * b).abs()).sum();
        for j in 0..len {
            let bound = row_rounding(len) * y[j] * (dy[j].abs() + s) + f32::MIN_POSITIVE;
            assert!(
                (g[j] - w[j]).abs() <= bound,
                "{what}: row {r} element {j}: got {}, want {}, bound {bound:e}",
                g[j],
                w[j]
            );
        }
    }
}

#[test]
fn softmax_rows_kernels_match_cpu_reference() {
    let mut rng = test_rng("softmax_rows_kernels");
    for dev in kernel_devices("softmax_rows_kernels") {
        for &shape in ROW_SHAPES {
            let len = *shape.last().unwrap();
            let n: usize = shape.iter().product();
            // Ordinary logits, and logits of +-1e4 (exp of the raw values would overflow).
            for scale in [6.0, 1e4] {
                let x = random_vec(&mut rng, n, -scale, scale);
                let want = softmax_rows_on(&x, shape, &Device::Cpu);
                let got = softmax_rows_on(&x, shape, &dev);
                let what = format!("softmax_rows {shape:?} logits +-{scale} on {dev}");
                assert_close(&what, &got, &want, row_rounding(len), f32::MIN_POSITIVE);
                let dy = random_vec(&mut rng, n, -1.0, 1.0);
                let want_dx = softmax_rows_backward_on(&want, &dy, shape, &Device::Cpu);
                let got_dx = softmax_rows_backward_on(&want, &dy, shape, &dev);
                let what = format!("softmax_rows_backward {shape:?} logits +-{scale} on {dev}");
                assert_backward_close(&what, &got_dx, &want_dx, &want, &dy, len);
            }
        }
    }
}

#[test]
fn softmax_rows_are_distributions_even_for_huge_logits() {
    let mut rng = test_rng("softmax_rows_huge");
    let (rows, len) = (6, 300);
    let mut x = random_vec(&mut rng, rows * len, -1e4, 1e4);
    // A row of one value repeated: uniform.
    x[..len].fill(1e4);
    for dev in std::iter::once(Device::Cpu).chain(kernel_devices("softmax_rows_huge")) {
        let y = softmax_rows_on(&x, &[rows, len], &dev);
        for (r, row) in y.chunks(len).enumerate() {
            let sum: f64 = row.iter().map(|&v| v as f64).sum();
            assert!(
                row.iter().all(|v| v.is_finite() && *v >= 0.0) && (sum - 1.0).abs() < 1e-5,
                "row {r} on {dev}: sum {sum}"
            );
        }
        assert!(
            y[..len].iter().all(|&v| v == 1.0 / len as f32),
            "uniform row on {dev}"
        );
    }
}

#[test]
fn softmax_rows_nan_poisons_its_row_only() {
    let mut rng = test_rng("softmax_rows_nan");
    let (rows, len) = (5, 70);
    let mut x = random_vec(&mut rng, rows * len, -3.0, 3.0);
    x[2 * len + 41] = f32::NAN;
    let want = softmax_rows_on(&x, &[rows, len], &Device::Cpu);
    for dev in std::iter::once(Device::Cpu).chain(kernel_devices("softmax_rows_nan")) {
        let y = softmax_rows_on(&x, &[rows, len], &dev);
        for (r, (row, want_row)) in y.chunks(len).zip(want.chunks(len)).enumerate() {
            if r == 2 {
                assert!(row.iter().all(|v| v.is_nan()), "row {r} on {dev}: {row:?}");
            } else {
                let what = format!("finite row {r} on {dev}");
                assert_close(&what, row, want_row, row_rounding(len), f32::MIN_POSITIVE);
            }
        }
    }
}

#[test]
fn softmax_rows_gradients_match_finite_differences() {
    // Truncation eps^2/6 |L'''| with |L'''| of order 1 (bounded by the softmax's third
    // derivatives, the weights r within [-1, 1]): under 2e-5 at eps = 1e-2; round-off 1e-7
    // sum |y| / eps, under 1e-4 for these rows.
    let mut rng = test_rng("softmax_rows_gradcheck");
    for shape in [vec![3, 5], vec![2, 2, 7], vec![4, 1]] {
        let inputs = vec![(
            random_vec(&mut rng, shape.iter().product(), -2.0, 2.0),
            shape.clone(),
        )];
        common::gradcheck::check_gradients(
            &format!("softmax_rows {shape:?}"),
            &mut rng,
            &inputs,
            1e-2,
            1e-3,
            &|t, v| t.softmax_rows(&v[0]),
        );
    }
}

#[test]
fn softmax_rows_refuses_shapes_without_a_last_axis() {
    let cpu = Device::Cpu;
    let scalar = Tensor::scalar(1.0, &cpu).unwrap();
    let err = ops::softmax::softmax_rows(&scalar).unwrap_err().to_string();
    assert!(
        err.contains("softmax_rows") && err.contains("last axis"),
        "{err}"
    );
    let empty_rows = Tensor::zeros(&[3, 0], &cpu).unwrap();
    assert!(ops::softmax::softmax_rows(&empty_rows).is_err());
    // No rows at all is fine: nothing to do.
    let no_rows = Tensor::zeros(&[0, 4], &cpu).unwrap();
    assert_eq!(
        ops::softmax::softmax_rows(&no_rows).unwrap().shape(),
        &[0, 4]
    );
    let (y, dy) = (
        Tensor::zeros(&[2, 3], &cpu).unwrap(),
        Tensor::zeros(&[3, 2], &cpu).unwrap(),
    );
    let err = ops::softmax::softmax_rows_backward(&y, &dy)
        .unwrap_err()
        .to_string();
    assert!(err.contains("softmax_rows_backward"), "{err}");
    let emu = Device::Emu(dalemeetslangevin::device::EmuSchedule::Forward);
    let dy_emu = Tensor::zeros(&[2, 3], &emu).unwrap();
    assert!(ops::softmax::softmax_rows_backward(&y, &dy_emu).is_err());
}
