//! kernels/dropout.cu against the cpu reference in both schedules (the same Philox bits, so the
//! same mask exactly), the mask's statistics, and the gradient by finite differences.
mod common;

use common::gradcheck::check_gradients;
use common::*;
use dalemeetslangevin::ops::dropout::{dropout, DropoutMask};
use dalemeetslangevin::ops::PhiloxDraw;
use dalemeetslangevin::rng::stream;
use dalemeetslangevin::{Device, Tensor};
use rand::Rng;

fn mask(seed: u64, step: u32, first: u64, p: f32) -> DropoutMask {
    DropoutMask {
        draw: PhiloxDraw::new(seed, stream::DROPOUT, step),
        first,
        p,
    }
}

#[test]
fn dropout_kernel_matches_cpu_reference_bit_for_bit() {
    let mut rng = test_rng("dropout_kernel");
    for dev in kernel_devices("dropout_kernel") {
        for &n in EDGE_SIZES {
            let x = random_vec(&mut rng, n, -2.0, 2.0);
            let m = mask(
                rng.random(),
                rng.random(),
                rng.random_range(0..1u64 << 44),
                0.1,
            );
            let run = |d: &Device| {
                let t = Tensor::from_slice(&x, &[n], d).unwrap();
                dropout(&t, m).unwrap().to_vec().unwrap()
            };
            // The same mask from the same bits and one f32 product per kept element.
            assert_close(
                &format!("dropout n={n} on {dev}"),
                &run(&dev),
                &run(&Device::Cpu),
                0.0,
                0.0,
            );
        }
    }
}

#[test]
fn dropout_keeps_one_minus_p_of_the_elements_scaled_and_differs_by_layer_and_step() {
    let n = 100_000;
    let x = Tensor::from_vec(vec![1.0; n], &[n], &Device::Cpu).unwrap();
    for p in [0.0f32, 0.1, 0.5] {
        let y = dropout(&x, mask(3, 7, 0, p)).unwrap().to_vec().unwrap();
        let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
        // Binomial: sd sqrt(p (1 - p) / n) <= 0.0016; 5 sd.
        assert!(
            (kept - (1.0 - p as f64)).abs() < 0.008,
            "p {p}: kept {kept}"
        );
        let scale = 1.0 / (1.0 - p);
        assert!(
            y.iter().all(|&v| v == 0.0 || v == scale),
            "p {p}: values are 0 or 1/(1-p)"
        );
    }
    let a = dropout(&x, mask(3, 7, 0, 0.5)).unwrap().to_vec().unwrap();
    let b = dropout(&x, mask(3, 7, 1 << 40, 0.5))
        .unwrap()
        .to_vec()
        .unwrap();
    let c = dropout(&x, mask(3, 8, 0, 0.5)).unwrap().to_vec().unwrap();
    let agree =
        |u: &[f32], v: &[f32]| u.iter().zip(v).filter(|(a, b)| a == b).count() as f64 / n as f64;
    assert!(
        (agree(&a, &b) - 0.5).abs() < 0.01,
        "another layer draws another mask"
    );
    assert!(
        (agree(&a, &c) - 0.5).abs() < 0.01,
        "another step draws another mask"
    );
    for p in [1.0, -0.1, f32::NAN] {
        let e = dropout(&x, mask(3, 7, 0, p)).unwrap_err().to_string();
        assert!(e.contains("dropout"), "{e}");
    }
}

#[test]
fn dropout_gradient_matches_finite_differences() {
    let mut rng = test_rng("dropout_gradcheck");
    let x = vec![(random_vec(&mut rng, 300, -1.0, 1.0), vec![3, 100])];
    let m = mask(rng.random(), 5, 17, 0.3);
    // Linear in x for a fixed mask: only round-off, e_L / eps.
    check_gradients("dropout", &mut rng, &x, 1e-2, 1e-3, &move |t, v| {
        let y = t.dropout(&v[0], m)?;
        t.mul(&y, &v[0])
    });
}
