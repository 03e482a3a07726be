//! kernels/embedding.cu (the sinusoidal level embedding of DDPM++, SPEC section 11) against the
//! cpu reference in both schedules, and the reference against its formula in f64.
mod common;

use common::*;
use dalemeetslangevin::ops::embedding::timestep_embedding;
use dalemeetslangevin::{Device, Tensor};
use rand::Rng;

#[test]
fn embedding_kernel_matches_cpu_reference() {
    let mut rng = test_rng("embedding_kernel");
    for dev in kernel_devices("embedding_kernel") {
        // nf of ddpmpp_tiny and ddpmpp, an odd width (a zero column), the smallest width.
        for (batch, dim) in [(3, 8), (5, 128), (2, 9), (1, 4), (300, 16)] {
            let levels: Vec<f32> = (0..batch)
                .map(|_| rng.random_range(0..1000) as f32)
                .collect();
            let run = |d: &Device| {
                let k = Tensor::from_slice(&levels, &[batch], d).unwrap();
                timestep_embedding(&k, dim).unwrap().to_vec().unwrap()
            };
            // Both sides compute in f64 and round once; the device's sin/exp may differ from
            // the host's libm in the last f64 bit, which rounds to at most one f32 ulp.
            assert_close(
                &format!("embedding {batch}x{dim} on {dev}"),
                &run(&dev),
                &run(&Device::Cpu),
                2.0 * f32::EPSILON,
                2.0 * f32::EPSILON,
            );
        }
    }
}

#[test]
fn embedding_is_sin_then_cos_of_geometric_frequencies() {
    let levels = Tensor::from_slice(&[0.0, 1.0, 999.0], &[3], &Device::Cpu).unwrap();
    let dim = 9;
    let e = timestep_embedding(&levels, dim).unwrap().to_vec().unwrap();
    for (b, k) in [0.0f64, 1.0, 999.0].into_iter().enumerate() {
        for f in 0..4 {
            let w = 10000f64.powf(-(f as f64) / 3.0);
            assert!(
                (e[b * dim + f] as f64 - (k * w).sin()).abs() < 1e-7,
                "sin {b} {f}"
            );
            assert!(
                (e[b * dim + 4 + f] as f64 - (k * w).cos()).abs() < 1e-7,
                "cos {b} {f}"
            );
        }
        assert_eq!(e[b * dim + 8], 0.0, "the odd column is zero");
    }
    for dim in [0, 3] {
        let err = timestep_embedding(&levels, dim).unwrap_err().to_string();
        assert!(err.contains("timestep_embedding"), "{err}");
    }
}
