//! GBM forward noising (SPEC section 2) and the additive noising (SPEC 8): kernels against the
//! CPU reference, and the law of the draws.
mod common;

use common::*;
use dalemeetslangevin::diffusion::additive::{additive_forward, NoiseLevels};
use dalemeetslangevin::diffusion::forward::{draw_levels, gbm_forward, noise_batch};
use dalemeetslangevin::diffusion::{Drift, Schedule, SigmaShape};
use dalemeetslangevin::ops::PhiloxDraw;
use dalemeetslangevin::{rng, Device, Tensor};
use rand::Rng;

fn schedule() -> Schedule {
    Schedule::with_drift(SigmaShape::Geometric, 20, 0.2, 1.5, Drift::Constant(0.1)).unwrap()
}

#[test]
fn forward_kernels_match_reference() {
    let mut rng = test_rng("gbm_forward");
    let sched = schedule();
    let levels_add = NoiseLevels::paper_default();
    for dev in kernel_devices("gbm_forward") {
        for &(batch, per) in &[(1usize, 1usize), (3, 11), (5, 257), (2, 1000)] {
            let x0 = random_vec(&mut rng, batch * per, 0.5, 2.0);
            let levels: Vec<usize> = (0..batch).map(|_| rng.random_range(0..20)).collect();
            let idx: Vec<usize> = (0..batch).map(|_| rng.random_range(0..10)).collect();
            let seed = rng.random::<u64>();
            let run = |d: &Device| {
                let x = Tensor::from_slice(&x0, &[batch, per], d).unwrap();
                let (xk, z) =
                    gbm_forward(&x, &levels, &sched, PhiloxDraw::new(seed, 1, 7)).unwrap();
                let (xa, za) =
                    additive_forward(&x, &idx, &levels_add, PhiloxDraw::new(seed, 1, 7)).unwrap();
                [xk, z, xa, za].map(|t| t.to_vec().unwrap())
            };
            let (want, got) = (run(&Device::Cpu), run(&dev));
            for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_close(
                    &format!("forward output {j} {batch}x{per} on {dev}"),
                    g,
                    w,
                    2e-5,
                    2e-5,
                );
            }
        }
    }
}

#[test]
fn forward_draws_have_the_log_normal_law() {
    let sched = schedule();
    let (batch, per) = (4usize, 50_000usize);
    let levels = [1usize, 5, 12, 19];
    let x0: Vec<f32> = (0..batch).flat_map(|b| vec![0.5 + b as f32; per]).collect();
    let x = Tensor::from_vec(x0.clone(), &[batch, per], &Device::Cpu).unwrap();
    let (xk, z) = gbm_forward(
        &x,
        &levels,
        &sched,
        PhiloxDraw::new(99, rng::stream::FORWARD_NOISE, 3),
    )
    .unwrap();
    let (xk, z) = (xk.to_vec().unwrap(), z.to_vec().unwrap());
    for (b, &k) in levels.iter().enumerate() {
        let d: Vec<f64> = (b * per..(b + 1) * per)
            .map(|i| (xk[i] as f64).ln() - (x0[i] as f64).ln())
            .collect();
        let mean = d.iter().sum::<f64>() / per as f64;
        let var = d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / per as f64;
        let (m, s2) = (sched.m(k) as f64, (sched.s(k) as f64).powi(2));
        // 5 standard errors: sqrt(s^2/n) for the mean, s^2 sqrt(2/n) for the variance.
        assert!(
            (mean - m).abs() < 5.0 * (s2 / per as f64).sqrt() + 1e-6,
            "level {k}: mean {mean} vs {m}"
        );
        assert!(
            (var - s2).abs() < 5.0 * s2 * (2.0 / per as f64).sqrt() + 1e-9,
            "level {k}: var {var} vs {s2}"
        );
        // z is the normal that produced x_k.
        let i = b * per + 17;
        let want = x0[i] as f64 * (m + sched.s(k) as f64 * z[i] as f64).exp();
        assert!((xk[i] as f64 - want).abs() < 1e-4 * want);
    }
}

#[test]
fn training_levels_are_uniform_on_one_to_n_minus_one() {
    let sched = schedule();
    let levels = draw_levels(38_000, &sched, 5, 11);
    let mut counts = [0usize; 20];
    for &k in &levels {
        counts[k] += 1;
    }
    assert_eq!(counts[0], 0, "level 0 is excluded");
    // 19 levels, 2000 expected each: sd ~ 44.
    for (k, &c) in counts.iter().enumerate().skip(1) {
        assert!((c as f64 - 2000.0).abs() < 250.0, "level {k}: {c}");
    }
    let x0 = Tensor::zeros(&[6, 3], &Device::Cpu).unwrap();
    let batch = noise_batch(&x0, &sched, 5, 11).unwrap();
    assert_eq!(batch.levels, levels[..6].to_vec());
    let s = batch.s_level.to_vec().unwrap();
    for (b, &k) in batch.levels.iter().enumerate() {
        assert_eq!(s[b], sched.s(k));
    }
}

#[test]
fn mismatched_levels_are_errors() {
    let sched = schedule();
    let x = Tensor::zeros(&[3, 4], &Device::Cpu).unwrap();
    assert!(gbm_forward(&x, &[1, 2], &sched, PhiloxDraw::new(0, 1, 0)).is_err());
    assert!(gbm_forward(&x, &[1, 2, 20], &sched, PhiloxDraw::new(0, 1, 0)).is_err());
    let scalar = Tensor::scalar(1.0, &Device::Cpu).unwrap();
    assert!(gbm_forward(&scalar, &[], &sched, PhiloxDraw::new(0, 1, 0)).is_err());
}
