//! The fused softmax cross-entropy kernel against the Rust reference, and its gradient against
//! finite differences.
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
