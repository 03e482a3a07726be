//! Sampler step kernels and drivers (SPEC sections 4, 6, 8): kernels against the CPU reference,
//! sign preservation, the flip counter, cross-device trajectories, convergence to the data law
//! with the exact analytic score, the mirrored Langevin bias, initialisation and the additive
//! baseline.
mod common;

use common::*;
use dalemeetslangevin::diffusion::additive::{
    annealed_langevin, AnnealedLangevinConfig, NoiseLevels,
};
use dalemeetslangevin::diffusion::analytic::{
    check_sampler, log_sample_moments, mirrored_langevin,
    mirrored_langevin_stationary_log_variance, AnalyticScore, Component, LogNormalMixture,
};
use dalemeetslangevin::diffusion::samplers::{
    additive_langevin_step, class_average_init, class_means, dale_step, sample, sign_agnostic_step,
    DaleVariant, FlipCounter, LogNormalInit, PhiloxDraw, SamplerConfig, StepCoefficients, StepKind,
};
use dalemeetslangevin::diffusion::{GaussianScoreSource, Level, Schedule, SigmaShape};
use dalemeetslangevin::{Device, Result, Tensor};
use rand::Rng;

fn mixture() -> LogNormalMixture {
    LogNormalMixture::new(vec![
        Component {
            weight: 0.6,
            mean: 0.2,
            std: 0.15,
        },
        Component {
            weight: 0.4,
            mean: 0.8,
            std: 0.2,
        },
    ])
    .unwrap()
}

#[test]
fn step_kernels_match_reference() {
    let mut rng = test_rng("gbm_steps");
    for dev in kernel_devices("gbm_steps") {
        for &n in EDGE_SIZES {
            let x = random_vec(&mut rng, n, -2.0, 2.0);
            let h = random_vec(&mut rng, n, -3.0, 3.0);
            let c = StepCoefficients {
                drift: rng.random_range(-0.5..0.5),
                score: 0.3,
                noise: 0.4,
            };
            let noise = PhiloxDraw::sampler(rng.random(), rng.random());
            let run = |d: &Device| {
                let ht = Tensor::from_slice(&h, &[n], d).unwrap();
                let mut a = Tensor::from_slice(&x, &[n], d).unwrap();
                dale_step(&mut a, &ht, c, noise).unwrap();
                let mut b = Tensor::from_slice(&x, &[n], d).unwrap();
                let mut flips = FlipCounter::new(d).unwrap();
                sign_agnostic_step(&mut b, &ht, c, noise, &mut flips).unwrap();
                let mut e = Tensor::from_slice(&x, &[n], d).unwrap();
                additive_langevin_step(&mut e, &ht, 0.09, noise).unwrap();
                let count = flips.drain().unwrap();
                ([a, b, e].map(|t| t.to_vec().unwrap()), count)
            };
            let ((want, want_flips), (got, got_flips)) = (run(&Device::Cpu), run(&dev));
            for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_close(&format!("step {j} n={n} on {dev}"), g, w, 1e-5, 1e-6);
            }
            assert_eq!(got_flips, want_flips, "flips n={n} on {dev}");
        }
    }
}

#[test]
fn dale_step_never_changes_a_sign() {
    let mut rng = test_rng("dale_sign");
    for dev in kernel_devices("dale_sign") {
        let n = 777;
        let mut x0 = random_vec(&mut rng, n, -5.0, 5.0);
        x0[3] = 0.0;
        x0[4] = -0.0;
        let mut x = Tensor::from_slice(&x0, &[n], &dev).unwrap();
        for step in 0..20 {
            let h = Tensor::from_vec(random_vec(&mut rng, n, -8.0, 8.0), &[n], &dev).unwrap();
            let c = StepCoefficients::dale(1.2, 0.72, 0.05, 1.0, DaleVariant::Derived);
            dale_step(&mut x, &h, c, PhiloxDraw::sampler(1, step)).unwrap();
        }
        let x1 = x.to_vec().unwrap();
        for (i, (&a, &b)) in x0.iter().zip(&x1).enumerate() {
            assert_eq!(
                a.is_sign_negative(),
                b.is_sign_negative(),
                "element {i}: {a} -> {b} on {dev}"
            );
            assert_eq!(a == 0.0, b == 0.0, "element {i}: {a} -> {b} on {dev}");
        }
    }
}

#[test]
fn flip_counter_matches_a_host_count() {
    let mut rng = test_rng("flips");
    for dev in [Device::Cpu].into_iter().chain(kernel_devices("flips")) {
        let n = 1500;
        let mut x0 = random_vec(&mut rng, n, -2.0, 2.0);
        x0[10] = 0.0; // already zero: never counted
        let h = random_vec(&mut rng, n, -4.0, 4.0);
        let ht = Tensor::from_slice(&h, &[n], &dev).unwrap();
        let mut flips = FlipCounter::new(&dev).unwrap();
        let mut x = Tensor::from_slice(&x0, &[n], &dev).unwrap();
        let mut want = 0u64;
        for step in 0..3 {
            let before = x.to_vec().unwrap();
            let c = StepCoefficients {
                drift: -0.4,
                score: 0.5,
                noise: 0.6,
            };
            sign_agnostic_step(&mut x, &ht, c, PhiloxDraw::sampler(9, step), &mut flips).unwrap();
            let after = x.to_vec().unwrap();
            want += before
                .iter()
                .zip(&after)
                .filter(|(&a, &b)| a != 0.0 && (b == 0.0 || (a < 0.0) != (b < 0.0)))
                .count() as u64;
        }
        let got = flips.drain().unwrap();
        assert!(want > 100, "the test must produce flips ({want})");
        assert_eq!(got, want, "on {dev}");
        assert_eq!(flips.drain().unwrap(), 0, "drain resets");
        // A factor of exactly zero sends every non-zero entry to zero: all counted.
        let nonzero_before = x.to_vec().unwrap().iter().filter(|&&v| v != 0.0).count() as u64;
        let zero = StepCoefficients {
            drift: -1.0,
            score: 0.0,
            noise: 0.0,
        };
        sign_agnostic_step(&mut x, &ht, zero, PhiloxDraw::sampler(9, 5), &mut flips).unwrap();
        assert_eq!(
            flips.drain().unwrap(),
            nonzero_before,
            "hits of zero on {dev}"
        );
        assert!(x.to_vec().unwrap().iter().all(|&v| v == 0.0));
    }
}

/// The same seed gives the same trajectory on cpu and on the kernels, to rounding.
#[test]
fn sampler_trajectory_is_the_same_on_every_device() {
    let mix = mixture();
    let sched = Schedule::constant(6, 0.8).unwrap();
    let n = 300;
    for dev in kernel_devices("trajectory") {
        for step in [
            StepKind::DaleLangevin(DaleVariant::Derived),
            StepKind::SignAgnostic,
        ] {
            let config = SamplerConfig {
                step,
                terminal_denoise_steps: 2,
                ..SamplerConfig::adls(0.05, 2, 0.9, 77)
            };
            let run = |d: &Device| {
                let k = sched.terminal_level();
                let init = mix.sample(n, sched.m(k) as f64, sched.s(k) as f64, 5, 4, 0);
                let x = Tensor::from_vec(init, &[3, n / 3], d).unwrap();
                let mut score = AnalyticScore {
                    mixture: &mix,
                    schedule: &sched,
                };
                let mut levels_seen = vec![];
                let mut progress = |p: dalemeetslangevin::diffusion::samplers::SamplerProgress| {
                    levels_seen.push(p.level)
                };
                let (x, stats) =
                    sample(&mut score, &sched, &config, x, Some(&mut progress)).unwrap();
                assert_eq!(levels_seen, vec![5, 4, 3, 2, 1]);
                (x.to_vec().unwrap(), stats)
            };
            let ((want, ws), (got, gs)) = (run(&Device::Cpu), run(&dev));
            assert_close(
                &format!("{step:?} trajectory on {dev}"),
                &got,
                &want,
                1e-4,
                1e-5,
            );
            assert_eq!(ws.steps, 12);
            assert_eq!(gs.steps, ws.steps);
            assert_eq!(gs.sign_changes, ws.sign_changes);
        }
    }
}

#[test]
fn algorithm1_with_exact_score_returns_the_data_law() {
    let mix = mixture();
    let sched = Schedule::constant(400, 0.8).unwrap();
    for kind in [
        StepKind::DaleLangevin(DaleVariant::Derived),
        StepKind::SignAgnostic,
    ] {
        let config = SamplerConfig {
            step: kind,
            ..SamplerConfig::algorithm1(sched.delta() as f32, 2024)
        };
        let r = check_sampler(&mix, &sched, &config, 20_000, &Device::Cpu).unwrap();
        eprintln!("{kind:?}: {r:?}");
        assert!(r.ks_statistic < r.ks_critical_99 * 1.5, "{kind:?}: {r:?}");
        assert!(
            (r.log_mean - r.target_log_mean).abs() < 0.01,
            "{kind:?}: {r:?}"
        );
        assert!(
            (r.log_var - r.target_log_var).abs() < 0.1 * r.target_log_var,
            "{kind:?}: {r:?}"
        );
        if kind == StepKind::SignAgnostic {
            assert!(r.stats.nonpositive_fraction < 1e-3, "{r:?}");
        }
    }
    // The supplement's drift is biased: its log-mean drifts by about -sigma^2 * t over the run.
    let supplement = SamplerConfig {
        step: StepKind::DaleLangevin(DaleVariant::Supplement),
        ..SamplerConfig::algorithm1(sched.delta() as f32, 2024)
    };
    let r = check_sampler(&mix, &sched, &supplement, 20_000, &Device::Cpu).unwrap();
    assert!(r.ks_statistic > 5.0 * r.ks_critical_99, "{r:?}");
}

#[test]
fn discretisation_error_shrinks_with_delta_s() {
    let mix = mixture();
    let errors: Vec<f64> = [8usize, 32, 128]
        .iter()
        .map(|&levels| {
            let sched = Schedule::constant(levels, 0.8).unwrap();
            let config = SamplerConfig::algorithm1(sched.delta() as f32, 31);
            let r = check_sampler(&mix, &sched, &config, 20_000, &Device::Cpu).unwrap();
            eprintln!("levels {levels}: {r:?}");
            (r.log_var - r.target_log_var).abs() + (r.log_mean - r.target_log_mean).abs()
        })
        .collect();
    assert!(
        errors[0] > errors[1] && errors[1] > errors[2],
        "errors {errors:?}"
    );
    assert!(errors[0] > 3.0 * errors[2], "errors {errors:?}");
}

#[test]
fn mirrored_langevin_has_the_predicted_variance_inflation() {
    let (a, b) = (0.5f64, 0.5f64);
    let target = LogNormalMixture::single(a, b).unwrap();
    let n = 40_000;
    for &eta in &[0.05f32, 0.15, 0.25] {
        let x = mirrored_langevin(&target, eta, n, 40, 8, &Device::Cpu)
            .unwrap()
            .to_vec()
            .unwrap();
        let (mean, var) = log_sample_moments(&x);
        let want = mirrored_langevin_stationary_log_variance(b, eta as f64);
        assert!(
            (mean - a).abs() < 5.0 * (want / n as f64).sqrt(),
            "eta {eta}: mean {mean}"
        );
        // 5 standard errors of a variance estimate, sqrt(2/n) relative.
        assert!(
            (var - want).abs() < 5.0 * want * (2.0 / n as f64).sqrt(),
            "eta {eta}: var {var} vs {want}"
        );
        assert!(
            var > b * b * (1.0 + eta as f64 / 4.0),
            "eta {eta}: no inflation seen ({var})"
        );
    }
}

#[test]
fn log_normal_init_fits_the_terminal_law() {
    let sched = Schedule::new(SigmaShape::Geometric, 50, 0.1, 1.0).unwrap();
    let (n, c, plane) = (200usize, 2usize, 50usize);
    let (a, bs) = ([0.3f32, -0.2], [0.2f32, 0.4]);
    let data: Vec<f32> = (0..n * c * plane)
        .map(|i| {
            let ch = (i / plane) % c;
            (a[ch] + bs[ch] * dalemeetslangevin::rng::normal(1, 0, 0, i as u64)).exp()
        })
        .collect();
    let x0 = Tensor::from_vec(data, &[n, c, plane], &Device::Cpu).unwrap();
    let init = LogNormalInit::fit(&x0, &sched).unwrap();
    let k = sched.terminal_level();
    for ch in 0..c {
        let want_sigma = ((bs[ch] * bs[ch]) as f64 + (sched.s(k) as f64).powi(2)).sqrt();
        assert!(
            (init.mu[ch] as f64 - (a[ch] + sched.m(k)) as f64).abs() < 0.01,
            "{init:?}"
        );
        assert!(
            (init.sigma[ch] as f64 - want_sigma).abs() < 0.01,
            "{init:?}"
        );
    }
    let draws = init
        .sample(&[500, c, plane], 3, &Device::Cpu)
        .unwrap()
        .to_vec()
        .unwrap();
    let channel0: Vec<f32> = draws.chunks(plane).step_by(2).flatten().copied().collect();
    let (m0, v0) = log_sample_moments(&channel0);
    assert!(
        (m0 - init.mu[0] as f64).abs() < 0.02 && (v0.sqrt() - init.sigma[0] as f64).abs() < 0.02
    );
    assert_eq!(
        LogNormalInit::from_describe(&init.describe()).unwrap(),
        init
    );
    assert!(LogNormalInit::fit(&Tensor::zeros(&[2, 1, 3], &Device::Cpu).unwrap(), &sched).is_err());
}

#[test]
fn class_average_init_pushes_class_means_forward() {
    let sched = Schedule::constant(10, 0.5).unwrap();
    let data = vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
    let x = Tensor::from_vec(data, &[4, 2], &Device::Cpu).unwrap();
    let means = class_means(&x, &[0, 1, 0, 1], 2).unwrap();
    assert_eq!(means.to_vec().unwrap(), vec![3.0, 4.0, 5.0, 6.0]);
    assert!(
        class_means(&x, &[0, 0, 0, 0], 2).is_err(),
        "an empty class is an error"
    );
    let classes = [1usize, 0, 1];
    let want = class_average_init(&means, &classes, &sched, 4)
        .unwrap()
        .to_vec()
        .unwrap();
    let k = sched.terminal_level();
    for (i, &v) in want.iter().enumerate() {
        let mean = means.to_vec().unwrap()[classes[i / 2] * 2 + i % 2];
        let z = dalemeetslangevin::rng::normal(
            4,
            dalemeetslangevin::rng::stream::SAMPLER_INIT,
            0,
            i as u64,
        );
        assert!((v - mean * (sched.m(k) + sched.s(k) * z).exp()).abs() < 1e-5 * v);
    }
    for dev in kernel_devices("class_average_init") {
        let got = class_average_init(&means.to_device(&dev).unwrap(), &classes, &sched, 4).unwrap();
        assert_close(
            &format!("class average on {dev}"),
            &got.to_vec().unwrap(),
            &want,
            1e-5,
            1e-6,
        );
    }
}

/// The Stein score of N(a, b^2) smoothed by N(0, sigma_i^2).
struct GaussianTarget<'a> {
    a: f32,
    b: f32,
    levels: &'a NoiseLevels,
}

impl GaussianScoreSource for GaussianTarget<'_> {
    fn s(&mut self, x: &Tensor, level: Level<'_>) -> Result<Tensor> {
        let var = self.b * self.b + self.levels.sigma(level.k).powi(2);
        let s = x.to_vec()?.iter().map(|&v| -(v - self.a) / var).collect();
        Tensor::from_vec(s, x.shape(), x.device())
    }
}

#[test]
fn annealed_langevin_reaches_the_smoothed_target() {
    let levels = NoiseLevels::new(SigmaShape::Geometric, 6, 1.0, 0.05).unwrap();
    let (a, b) = (2.0f32, 0.5f32);
    let n = 20_000;
    let init: Vec<f32> = (0..n)
        .map(|i| 3.0 * dalemeetslangevin::rng::normal(2, 4, 0, i as u64))
        .collect();
    let x = Tensor::from_vec(init, &[n], &Device::Cpu).unwrap();
    let config = AnnealedLangevinConfig {
        steps_per_level: 300,
        eps: 5e-3,
        seed: 6,
        graphs: true,
    };
    let mut levels_done = 0;
    let mut progress = |_: usize| levels_done += 1;
    let out = annealed_langevin(
        &mut GaussianTarget {
            a,
            b,
            levels: &levels,
        },
        &levels,
        &config,
        x,
        Some(&mut progress),
    )
    .unwrap()
    .0
    .to_vec()
    .unwrap();
    assert_eq!(levels_done, 6);
    let mean = out.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let var = out.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
    let want_var = (b * b) as f64 + 0.05f64.powi(2);
    assert!((mean - a as f64).abs() < 0.02, "mean {mean}");
    assert!(
        (var - want_var).abs() < 0.06 * want_var,
        "var {var} vs {want_var}"
    );
}

#[test]
fn invalid_sampler_configs_are_errors() {
    let sched = Schedule::constant(4, 0.8).unwrap();
    let mix = mixture();
    let x = Tensor::from_vec(vec![1.0; 4], &[4], &Device::Cpu).unwrap();
    let mut score = AnalyticScore {
        mixture: &mix,
        schedule: &sched,
    };
    for bad in [
        SamplerConfig::algorithm1(0.0, 1),
        SamplerConfig::adls(0.01, 0, 1.0, 1),
        SamplerConfig::asams(0.01, 1, -1.0, 1),
    ] {
        assert!(sample(
            &mut score,
            &sched,
            &bad,
            x.to_device(&Device::Cpu).unwrap(),
            None
        )
        .is_err());
    }
    assert!(mirrored_langevin(&mix, -1.0, 4, 1, 0, &Device::Cpu).is_err());
    assert!(LogNormalMixture::parse("1:0:0").is_err());
    assert_eq!(
        LogNormalMixture::parse("1:0.5:0.2,3:1:0.1")
            .unwrap()
            .components()[1]
            .weight,
        0.75
    );
}
