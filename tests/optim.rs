//! The optimiser kernels (kernels/optim.cu) against the Rust references, and the optimisers'
//! defining properties: AdamW by a hand-computed example, EGD never changing a sign, clipping to
//! the requested norm, exact resume from exported state.
mod common;

use std::collections::BTreeMap;

use common::*;
use dalemeetslangevin::checkpoint::Checkpoint;
use dalemeetslangevin::optim::{self, AdamW, AdamWConfig, Egd, Ema, LrSchedule, ParamGrad};
use dalemeetslangevin::{Device, Tensor};
use rand::rngs::StdRng;
use rand::Rng;

/// Parameters `a` (edge size `n`) and `b` (a small matrix), and `steps` sets of gradients.
struct Problem {
    params: Vec<(String, Vec<usize>, Vec<f32>)>,
    grads: Vec<Vec<Vec<f32>>>,
}

fn problem(rng: &mut StdRng, n: usize, steps: usize, zero_fraction: f64) -> Problem {
    let shapes = [("a".to_string(), vec![n]), ("b".to_string(), vec![3, 5])];
    let params = shapes
        .iter()
        .map(|(name, shape)| {
            let len = shape.iter().product();
            let mut v = random_vec(rng, len, -2.0, 2.0);
            v.iter_mut().for_each(|x| {
                *x = if rng.random_bool(zero_fraction) {
                    0.0
                } else {
                    *x
                }
            });
            (name.clone(), shape.clone(), v)
        })
        .collect::<Vec<_>>();
    let grads = (0..steps)
        .map(|_| {
            params
                .iter()
                .map(|(_, _, v)| random_vec(rng, v.len(), -1.0, 1.0))
                .collect()
        })
        .collect();
    Problem { params, grads }
}

fn tensors(named: &[(String, Vec<usize>, Vec<f32>)], dev: &Device) -> BTreeMap<String, Tensor> {
    named
        .iter()
        .map(|(k, s, v)| (k.clone(), Tensor::from_slice(v, s, dev).unwrap()))
        .collect()
}

/// Runs `step` once per gradient set on `dev`; returns the final parameters by name.
fn run(
    pb: &Problem,
    dev: &Device,
    mut step: impl FnMut(&mut [ParamGrad<'_>]),
) -> BTreeMap<String, Vec<f32>> {
    let mut params = tensors(&pb.params, dev);
    for g in &pb.grads {
        let named: Vec<_> = pb
            .params
            .iter()
            .zip(g)
            .map(|((k, s, _), v)| (k.clone(), s.clone(), v.clone()))
            .collect();
        let grads = tensors(&named, dev);
        let mut pairs = optim::pair_by_name(&mut params, &grads).unwrap();
        step(&mut pairs);
    }
    params
        .into_iter()
        .map(|(k, t)| (k, t.to_vec().unwrap()))
        .collect()
}

fn assert_all_close(
    what: &str,
    got: &BTreeMap<String, Vec<f32>>,
    want: &BTreeMap<String, Vec<f32>>,
) {
    for (k, w) in want {
        assert_close(&format!("{what} '{k}'"), &got[k], w, 1e-5, 1e-6);
    }
}

#[test]
fn adamw_kernel_matches_reference() {
    let mut rng = test_rng("adamw_kernel");
    let config = AdamWConfig {
        schedule: LrSchedule::new(0.05, 2),
        weight_decay: 0.1,
        ..AdamWConfig::new(0.05)
    };
    for dev in kernel_devices("adamw_kernel") {
        for &n in EDGE_SIZES {
            let pb = problem(&mut rng, n, 3, 0.0);
            let go = |d: &Device| {
                let mut opt = AdamW::new(config);
                let params = run(&pb, d, |p| opt.step(p, 0.7).unwrap());
                let mut state = Checkpoint::new();
                opt.export_to(&mut state).unwrap();
                (params, state.tensors)
            };
            let (want, want_state) = go(&Device::Cpu);
            let (got, got_state) = go(&dev);
            assert_all_close(&format!("adamw n={n} on {dev}"), &got, &want);
            for (k, (_, w)) in &want_state {
                assert_close(
                    &format!("adamw state {k} on {dev}"),
                    &got_state[k].1,
                    w,
                    1e-5,
                    1e-7,
                );
            }
        }
    }
}

#[test]
fn egd_kernel_matches_reference() {
    let mut rng = test_rng("egd_kernel");
    for dev in kernel_devices("egd_kernel") {
        for &n in EDGE_SIZES {
            // A tenth of the weights start at exactly zero, to exercise the additive rule.
            let pb = problem(&mut rng, n, 3, 0.1);
            let go = |d: &Device| {
                let mut opt = Egd::new(LrSchedule::new(0.3, 1));
                run(&pb, d, |p| opt.step(p, 0.9).unwrap())
            };
            assert_all_close(&format!("egd n={n} on {dev}"), &go(&dev), &go(&Device::Cpu));
        }
    }
}

#[test]
fn egd_never_changes_a_sign() {
    let mut rng = test_rng("egd_sign");
    for dev in std::iter::once(Device::Cpu).chain(kernel_devices("egd_sign")) {
        for _ in 0..5 {
            let n = 500;
            let start: Vec<f32> = (0..n)
                .map(|_| {
                    let magnitude = 10f32.powf(rng.random_range(-30.0..30.0));
                    if rng.random_bool(0.5) {
                        magnitude
                    } else {
                        -magnitude
                    }
                })
                .collect();
            let mut p = Tensor::from_slice(&start, &[n], &dev).unwrap();
            let mut opt = Egd::new(LrSchedule::new(rng.random_range(0.1..100.0), 0));
            for _ in 0..20 {
                // Gradients over many orders of magnitude, so steps overflow and underflow.
                let g: Vec<f32> = (0..n)
                    .map(|_| rng.random_range(-1.0..1.0) * 10f32.powf(rng.random_range(-3.0..6.0)))
                    .collect();
                let g = Tensor::from_slice(&g, &[n], &dev).unwrap();
                opt.step(
                    &mut [ParamGrad {
                        name: "p",
                        param: &mut p,
                        grad: &g,
                    }],
                    1.0,
                )
                .unwrap();
            }
            for (i, (&a, &b)) in start.iter().zip(&p.to_vec().unwrap()).enumerate() {
                assert!(
                    b != 0.0 && b.is_finite() && a.signum() == b.signum(),
                    "element {i} on {dev}: {a} became {b}"
                );
            }
        }
    }
}

#[test]
fn egd_moves_exact_zeros_additively_then_multiplicatively() {
    let mut p = Tensor::from_slice(&[0.0, 0.0], &[2], &Device::Cpu).unwrap();
    let g = Tensor::from_slice(&[2.0, -4.0], &[2], &Device::Cpu).unwrap();
    let mut opt = Egd::new(LrSchedule::new(0.25, 0));
    let mut step = |p: &mut Tensor| {
        opt.step(
            &mut [ParamGrad {
                name: "p",
                param: p,
                grad: &g,
            }],
            1.0,
        )
        .unwrap()
    };
    step(&mut p);
    // Additive: -0.25 * 2 = -0.5 and -0.25 * -4 = 1.
    assert_eq!(p.to_vec().unwrap(), vec![-0.5, 1.0]);
    step(&mut p);
    // Multiplicative from there: -0.5 * exp(0.25 * 2), 1 * exp(-0.25 * -4).
    let want = [-0.5 * 0.5f32.exp(), 1.0f32.exp()];
    assert_close("egd after zero", &p.to_vec().unwrap(), &want, 1e-6, 0.0);
}

#[test]
fn adamw_matches_hand_computed_two_steps() {
    // One weight, lr 0.1, betas (0.9, 0.999), eps 1e-8, weight decay 0.1, gradients 0.5 then -1.
    // Step 1: theta = 1 * (1 - 0.01) = 0.99; m = 0.05, v = 0.00025; m_hat = 0.05 / 0.1 = 0.5,
    //   v_hat = 0.00025 / 0.001 = 0.25; theta = 0.99 - 0.1 * 0.5 / 0.5 = 0.89.
    // Step 2: theta = 0.89 * 0.99 = 0.8811; m = 0.045 - 0.1 = -0.055,
    //   v = 0.999 * 0.00025 + 0.001 = 0.00124975; m_hat = -0.055 / 0.19 = -0.28947368,
    //   v_hat = 0.00124975 / 0.001999 = 0.62518759, sqrt = 0.79068805;
    //   theta = 0.8811 + 0.1 * 0.28947368 / 0.79068805 = 0.91771035.
    let config = AdamWConfig {
        weight_decay: 0.1,
        ..AdamWConfig::new(0.1)
    };
    let mut opt = AdamW::new(config);
    let mut p = Tensor::from_slice(&[1.0], &[1], &Device::Cpu).unwrap();
    let mut after = Vec::new();
    for g in [0.5, -1.0] {
        let g = Tensor::from_slice(&[g], &[1], &Device::Cpu).unwrap();
        opt.step(
            &mut [ParamGrad {
                name: "w",
                param: &mut p,
                grad: &g,
            }],
            1.0,
        )
        .unwrap();
        after.push(p.item().unwrap());
    }
    assert_close("adamw two steps", &after, &[0.89, 0.917_710_3], 2e-6, 0.0);
    assert_eq!(opt.steps_taken(), 2);
}

#[test]
fn warmup_rises_linearly_then_holds() {
    let w = LrSchedule::new(1e-3, 4);
    let lrs: Vec<f32> = (0..6).map(|s| w.lr(s)).collect();
    assert_close(
        "warm-up",
        &lrs,
        &[2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3],
        1e-6,
        0.0,
    );
    assert_eq!(LrSchedule::new(0.5, 0).lr(0), 0.5);
}

#[test]
fn cosine_decay_falls_from_the_peak_to_the_final_rate_then_holds() {
    // Warm-up over 2 steps, then half a cosine over steps 2..10 from 1.0 to 0.1: step 2 takes
    // the peak, step 10 the final rate.
    let s = LrSchedule::new(1.0, 2).with_cosine(10, 0.1);
    let lrs: Vec<f32> = (0..13).map(|k| s.lr(k)).collect();
    let cosine = |p: f64| (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())) as f32;
    let mut want = vec![0.5, 1.0];
    want.extend((0..8).map(|i| cosine(i as f64 / 8.0)));
    want.extend([0.1, 0.1, 0.1]);
    assert_close("cosine", &lrs, &want, 1e-7, 0.0);
    assert!(
        (s.lr(6) - 0.55).abs() < 1e-6,
        "half way: the mean of peak and final"
    );
    assert!(lrs.windows(2).skip(1).all(|w| w[1] <= w[0]), "{lrs:?}");
    // Without a warm-up the first step takes the peak rate.
    assert_eq!(LrSchedule::new(0.3, 0).with_cosine(4, 0.0).lr(0), 0.3);
}

#[test]
fn ema_warmup_shortens_the_first_averages() {
    let plain = Ema::new(0.999, false);
    let warm = Ema::new(0.999, true);
    assert_eq!(plain.decay_at(1), 0.999);
    // (1 + n) / (10 + n): 2/11 after the first step, 0.5 after the eighth, capped at the decay.
    assert!((warm.decay_at(1) - 2.0 / 11.0).abs() < 1e-7);
    assert!((warm.decay_at(8) - 0.5).abs() < 1e-7);
    assert_eq!(warm.decay_at(100_000), 0.999);
    // The update uses it: after steps 1 and 2 the average is 3/12 of the first weights.
    let mut ema = Ema::new(0.999, true);
    let one = Tensor::from_slice(&[1.0], &[1], &Device::Cpu).unwrap();
    let zero = Tensor::from_slice(&[0.0], &[1], &Device::Cpu).unwrap();
    ema.update([("w", &one)], 1).unwrap();
    ema.update([("w", &zero)], 2).unwrap();
    let got = ema.weights()["w"].to_vec().unwrap()[0];
    assert!((got - 0.25).abs() < 1e-7, "{got}");
}

#[test]
fn ema_kernel_matches_reference() {
    let mut rng = test_rng("ema_kernel");
    for dev in kernel_devices("ema_kernel") {
        for &n in EDGE_SIZES {
            let ws: Vec<Vec<f32>> = (0..3).map(|_| random_vec(&mut rng, n, -1.0, 1.0)).collect();
            let go = |d: &Device| {
                let mut ema = Ema::new(0.9, false);
                for (step, w) in (1..).zip(&ws) {
                    let t = Tensor::from_slice(w, &[n], d).unwrap();
                    ema.update([("w", &t)], step).unwrap();
                }
                ema.weights()["w"].to_vec().unwrap()
            };
            let want: Vec<f32> = (0..n)
                .map(|i| 0.9 * (0.9 * ws[0][i] + 0.1 * ws[1][i]) + 0.1 * ws[2][i])
                .collect();
            assert_close(
                &format!("ema n={n} on cpu"),
                &go(&Device::Cpu),
                &want,
                1e-6,
                1e-7,
            );
            assert_close(&format!("ema n={n} on {dev}"), &go(&dev), &want, 1e-6, 1e-7);
        }
    }
}

#[test]
fn global_norm_matches_reference_and_is_deterministic() {
    let mut rng = test_rng("global_norm");
    for dev in kernel_devices("global_norm") {
        for &n in EDGE_SIZES.iter().chain(&[70_001]) {
            let parts = [
                random_vec(&mut rng, n, -1.0, 1.0),
                random_vec(&mut rng, 7, -3.0, 3.0),
            ];
            let want = parts
                .iter()
                .flatten()
                .map(|&v| v as f64 * v as f64)
                .sum::<f64>()
                .sqrt();
            let ts: Vec<Tensor> = parts
                .iter()
                .map(|p| Tensor::from_slice(p, &[p.len()], &dev).unwrap())
                .collect();
            let refs: Vec<&Tensor> = ts.iter().collect();
            let got = optim::global_norm(&refs).unwrap();
            assert!(
                (got as f64 - want).abs() <= 1e-5 * want,
                "global norm n={n} on {dev}: {got} vs {want}"
            );
            assert_eq!(optim::global_norm(&refs).unwrap().to_bits(), got.to_bits());
        }
    }
}

#[test]
fn clipping_scales_to_the_maximum_norm() {
    let mut rng = test_rng("clip");
    for dev in kernel_devices("clip") {
        for &n in &[1usize, 257, 1000] {
            let a = random_vec(&mut rng, n, -1.0, 1.0);
            let b = random_vec(&mut rng, 33, -1.0, 1.0);
            let mut ta = Tensor::from_slice(&a, &[n], &dev).unwrap();
            let mut tb = Tensor::from_slice(&b, &[33], &dev).unwrap();
            let norm = optim::global_norm(&[&ta, &tb]).unwrap();

            // Above the norm: nothing changes.
            let before = optim::clip_grad_norm(&mut [&mut ta, &mut tb], norm * 2.0).unwrap();
            assert_eq!(before, norm);
            assert_eq!(ta.to_vec().unwrap(), a);

            // Below: every gradient scaled by the same factor, to the requested norm.
            let max = norm / 4.0;
            optim::clip_grad_norm(&mut [&mut ta, &mut tb], max).unwrap();
            let after = optim::global_norm(&[&ta, &tb]).unwrap();
            assert!(
                (after - max).abs() <= 1e-5 * max,
                "n={n} on {dev}: {after} vs {max}"
            );
            let scaled: Vec<f32> = a.iter().map(|v| v * max / norm).collect();
            assert_close(
                &format!("clipped n={n} on {dev}"),
                &ta.to_vec().unwrap(),
                &scaled,
                1e-5,
                1e-7,
            );
        }
    }
    assert_eq!(optim::clip_factor(10.0, 1.0), 0.1);
    assert_eq!(optim::clip_factor(0.5, 1.0), 1.0);
}

#[test]
fn resume_from_exported_state_is_exact() {
    let mut rng = test_rng("resume");
    let pb = problem(&mut rng, 40, 4, 0.0);
    let dev = Device::Cpu;
    let config = AdamWConfig {
        schedule: LrSchedule::new(0.01, 3),
        ..AdamWConfig::new(0.01)
    };
    let mut params = tensors(&pb.params, &dev);
    let grads: Vec<_> = pb
        .grads
        .iter()
        .map(|g| {
            let named: Vec<_> = pb
                .params
                .iter()
                .zip(g)
                .map(|((k, s, _), v)| (k.clone(), s.clone(), v.clone()))
                .collect();
            tensors(&named, &dev)
        })
        .collect();
    let mut opt = AdamW::new(config);
    // With the warm-up, the averages depend on the step number, which the resumed EMA must
    // continue from.
    let mut ema = Ema::new(0.99, true);
    let step = |opt: &mut AdamW, ema: &mut Ema, params: &mut BTreeMap<String, Tensor>, i: usize| {
        opt.step(&mut optim::pair_by_name(params, &grads[i]).unwrap(), 1.0)
            .unwrap();
        ema.update(params.iter().map(|(k, t)| (k.as_str(), t)), i as u64 + 1)
            .unwrap();
    };
    for i in 0..2 {
        step(&mut opt, &mut ema, &mut params, i);
    }
    let dir = tempdir("resume");
    let path = dir.join("ckpt.safetensors");
    let mut ckpt = Checkpoint::new();
    for (k, t) in &params {
        ckpt.put_tensor(k.clone(), t).unwrap();
    }
    opt.export_to(&mut ckpt).unwrap();
    ema.export_to(&mut ckpt).unwrap();
    ckpt.save(&path).unwrap();

    let loaded = Checkpoint::load(&path).unwrap();
    let mut params2: BTreeMap<String, Tensor> = params
        .iter()
        .map(|(k, t)| (k.clone(), loaded.tensor(k, t.shape(), &dev).unwrap()))
        .collect();
    let mut opt2 = AdamW::new(config);
    opt2.import_from(&loaded, &dev).unwrap();
    let mut ema2 = Ema::new(0.99, true);
    ema2.import_from(&loaded, &dev).unwrap();
    for i in 2..4 {
        step(&mut opt, &mut ema, &mut params, i);
        step(&mut opt2, &mut ema2, &mut params2, i);
    }
    for (k, t) in &params {
        assert_eq!(
            t.to_vec().unwrap(),
            params2[k].to_vec().unwrap(),
            "param {k}"
        );
        assert_eq!(
            ema.weights()[k].to_vec().unwrap(),
            ema2.weights()[k].to_vec().unwrap(),
            "ema {k}"
        );
    }
    assert_eq!(opt2.steps_taken(), 4);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn pairing_reports_missing_and_mismatched_gradients() {
    let dev = Device::Cpu;
    let mut params = BTreeMap::from([("w".to_string(), Tensor::zeros(&[2], &dev).unwrap())]);
    let none = BTreeMap::new();
    let err = optim::pair_by_name(&mut params, &none)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("'w' has no gradient"), "{err}");
    let wrong = BTreeMap::from([("w".to_string(), Tensor::zeros(&[3], &dev).unwrap())]);
    let err = optim::pair_by_name(&mut params, &wrong)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("'w'") && err.contains("[2] vs [3]"), "{err}");
}

#[test]
fn signed_log_normal_init_has_no_zeros_and_both_signs() {
    let t = optim::signed_log_normal_init(&[4000], -2.0, 0.5, 11, &Device::Cpu).unwrap();
    let v = t.to_vec().unwrap();
    let negatives = v.iter().filter(|&&x| x < 0.0).count();
    assert!(v.iter().all(|&x| x != 0.0));
    // Binomial(4000, 1/2): standard deviation ~32.
    assert!(
        (negatives as i64 - 2000).abs() < 160,
        "{negatives} negative"
    );
    let mean_log = v.iter().map(|x| x.abs().ln() as f64).sum::<f64>() / v.len() as f64;
    // Standard error 0.5 / sqrt(4000) ~ 0.008.
    assert!(
        (mean_log + 2.0).abs() < 0.04,
        "mean log magnitude {mean_log}"
    );
}
