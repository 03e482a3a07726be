//! The fused losses (SPEC sections 3 and 8): kernels against the CPU reference, gradients against
//! finite differences, determinism, and Theorem 4.1 (M-DSM minus M-ESM is constant in theta).
mod common;

use common::*;
use dalemeetslangevin::diffusion::analytic::{Component, LogNormalMixture};
use dalemeetslangevin::diffusion::forward::gbm_forward;
use dalemeetslangevin::diffusion::loss::{dsm_loss, mdsm_loss, mdsm_loss_at, LossWeighting};
use dalemeetslangevin::diffusion::{Parameterisation, Schedule};
use dalemeetslangevin::ops::PhiloxDraw;
use dalemeetslangevin::{rng, Device, Tensor};
use rand::rngs::StdRng;
use rand::Rng;

const COMBOS: [(LossWeighting, Parameterisation); 6] = [
    (LossWeighting::Unit, Parameterisation::H),
    (LossWeighting::Unit, Parameterisation::Stein),
    (LossWeighting::SkSquared, Parameterisation::H),
    (LossWeighting::SkSquared, Parameterisation::Stein),
    (LossWeighting::SkFourth, Parameterisation::H),
    (LossWeighting::SkFourth, Parameterisation::Stein),
];

/// Random M-DSM inputs: output, x_k, z (shape [batch, per]) and s per sample.
fn inputs(rng: &mut StdRng, batch: usize, per: usize) -> [Vec<f32>; 4] {
    let n = batch * per;
    [
        random_vec(rng, n, -3.0, 3.0),
        random_vec(rng, n, 0.3, 3.0),
        random_vec(rng, n, -2.5, 2.5),
        random_vec(rng, batch, 0.1, 1.2),
    ]
}

fn mdsm(
    d: &Device,
    v: &[Vec<f32>; 4],
    batch: usize,
    per: usize,
    w: LossWeighting,
    p: Parameterisation,
) -> (f32, Vec<f32>) {
    let t = |x: &[f32], shape: &[usize]| Tensor::from_slice(x, shape, d).unwrap();
    let r = mdsm_loss(
        &t(&v[0], &[batch, per]),
        &t(&v[1], &[batch, per]),
        &t(&v[2], &[batch, per]),
        &t(&v[3], &[batch]),
        w,
        p,
    )
    .unwrap();
    (r.loss.item().unwrap(), r.grad.to_vec().unwrap())
}

#[test]
fn mdsm_kernel_matches_reference() {
    let mut rng = test_rng("mdsm_kernel");
    for dev in kernel_devices("mdsm_loss") {
        for &(batch, per) in &[(1usize, 1usize), (2, 31), (3, 257), (7, 1000)] {
            let v = inputs(&mut rng, batch, per);
            for (w, p) in COMBOS {
                let (lw, gw) = mdsm(&Device::Cpu, &v, batch, per, w, p);
                let (lg, gg) = mdsm(&dev, &v, batch, per, w, p);
                let what = format!("mdsm {w:?} {p:?} {batch}x{per} on {dev}");
                assert_close(&format!("{what} grad"), &gg, &gw, 1e-5, 1e-6);
                assert!(
                    (lg - lw).abs() <= 1e-4 * lw.abs() + 1e-6,
                    "{what} loss {lg} vs {lw}"
                );
                // Deterministic: same input, same bits.
                assert_eq!(
                    mdsm(&dev, &v, batch, per, w, p).0.to_bits(),
                    lg.to_bits(),
                    "{what}"
                );
            }
        }
    }
}

/// [`mdsm`] taken at the level whose `s` is `t` per sample (SPEC 3.1).
fn mdsm_at(
    d: &Device,
    v: &[Vec<f32>; 4],
    t_level: &[f32],
    (batch, per): (usize, usize),
    w: LossWeighting,
    p: Parameterisation,
) -> (f32, Vec<f32>) {
    let t = |x: &[f32], shape: &[usize]| Tensor::from_slice(x, shape, d).unwrap();
    let (s, tl) = (t(&v[3], &[batch]), t(t_level, &[batch]));
    let r = mdsm_loss_at(
        &t(&v[0], &[batch, per]),
        &t(&v[1], &[batch, per]),
        &t(&v[2], &[batch, per]),
        (&s, &tl),
        w,
        p,
    )
    .unwrap();
    (r.loss.item().unwrap(), r.grad.to_vec().unwrap())
}

#[test]
fn mdsm_kernel_at_another_level_matches_reference() {
    let mut rng = test_rng("mdsm_kernel_at");
    for dev in kernel_devices("mdsm_loss_at") {
        for &(batch, per) in &[(1usize, 1usize), (2, 31), (5, 257)] {
            let v = inputs(&mut rng, batch, per);
            // t_b = s_{k+1} > s_b; one sample keeps t_b = s_b (the exact branch).
            let mut t_level: Vec<f32> = v[3]
                .iter()
                .map(|&s| s * rng.random_range(1.01f32..1.5))
                .collect();
            t_level[0] = v[3][0];
            for (w, p) in COMBOS {
                let shape = (batch, per);
                let (lw, gw) = mdsm_at(&Device::Cpu, &v, &t_level, shape, w, p);
                let (lg, gg) = mdsm_at(&dev, &v, &t_level, shape, w, p);
                let what = format!("mdsm_at {w:?} {p:?} {batch}x{per} on {dev}");
                assert_close(&format!("{what} grad"), &gg, &gw, 1e-5, 1e-6);
                assert!(
                    (lg - lw).abs() <= 1e-4 * lw.abs() + 1e-6,
                    "{what} loss {lg} vs {lw}"
                );
            }
        }
    }
}

/// The released code's `new_loss` (SPEC 3.1), in f64: per pixel
/// `kd sigma^2 x_k s + log(x_k/x_0) - mu kd + 1.5 sigma^2 kd` with `kd = k'/N`, squared, summed
/// over pixels, averaged over the batch.
fn released_loss(
    (score, x_k, x_0): (&[f32], &[f32], &[f32]),
    k_loss: &[usize],
    n: usize,
    sigma: f64,
) -> f64 {
    let per = score.len() / k_loss.len();
    let mu = 0.5 * sigma * sigma;
    let total: f64 = (0..score.len())
        .map(|i| {
            let kd = k_loss[i / per] as f64 / n as f64;
            let (s, xk, x0) = (score[i] as f64, x_k[i] as f64, x_0[i] as f64);
            let r =
                kd * sigma * sigma * xk * s + (xk / x0).ln() - mu * kd + 1.5 * sigma * sigma * kd;
            r * r
        })
        .sum();
    total / k_loss.len() as f64
}

#[test]
fn released_code_loss_is_twice_the_engine_loss_with_sk4_and_stein() {
    let mut rng = test_rng("released_loss");
    let (n, sigma) = (1000usize, 0.8f64);
    let schedule = Schedule::constant(n, sigma).unwrap();
    let (batch, per) = (6usize, 40usize);
    let levels: Vec<usize> = (0..batch).map(|_| rng.random_range(1..n)).collect();
    let z = random_vec(&mut rng, batch * per, -2.5, 2.5);
    let x_0 = random_vec(&mut rng, batch * per, 1.0, 2.0);
    let score = random_vec(&mut rng, batch * per, -3.0, 3.0);
    let s: Vec<f32> = levels.iter().map(|&k| schedule.s(k)).collect();
    let x_k: Vec<f32> = (0..batch * per)
        .map(|i| x_0[i] * (s[i / per] * z[i]).exp())
        .collect();
    let t = |x: &[f32], shape: &[usize]| Tensor::from_slice(x, shape, &Device::Cpu).unwrap();
    let (score_t, x_k_t, z_t) = (
        t(&score, &[batch, per]),
        t(&x_k, &[batch, per]),
        t(&z, &[batch, per]),
    );
    // The loss at the noised level, then with the loop's k + 1 offset.
    for offset in [0usize, 1] {
        let k_loss: Vec<usize> = levels.iter().map(|&k| k + offset).collect();
        let t_level: Vec<f32> = match offset {
            0 => s.clone(),
            _ => levels.iter().map(|&k| schedule.s_next(k)).collect(),
        };
        let engine = mdsm_loss_at(
            &score_t,
            &x_k_t,
            &z_t,
            (&t(&s, &[batch]), &t(&t_level, &[batch])),
            LossWeighting::SkFourth,
            Parameterisation::Stein,
        )
        .unwrap()
        .loss
        .item()
        .unwrap() as f64;
        let released = released_loss((&score, &x_k, &x_0), &k_loss, n, sigma);
        assert!(
            (2.0 * engine - released).abs() <= 1e-4 * released.abs(),
            "offset {offset}: engine 2 x {engine} vs released {released}"
        );
    }
}

#[test]
fn mdsm_gradient_matches_finite_differences() {
    let mut rng = test_rng("mdsm_fd");
    let (batch, per) = (3usize, 5usize);
    let v = inputs(&mut rng, batch, per);
    for (w, p) in COMBOS {
        let (_, grad) = mdsm(&Device::Cpu, &v, batch, per, w, p);
        for i in 0..batch * per {
            let eps = 1e-2f32;
            let mut plus = v.clone();
            plus[0][i] += eps;
            let mut minus = v.clone();
            minus[0][i] -= eps;
            let fd = (mdsm(&Device::Cpu, &plus, batch, per, w, p).0
                - mdsm(&Device::Cpu, &minus, batch, per, w, p).0)
                / (2.0 * eps);
            assert!(
                (fd - grad[i]).abs() <= 1e-2 * grad[i].abs() + 2e-3,
                "{w:?} {p:?} element {i}: fd {fd} vs {}",
                grad[i]
            );
        }
    }
}

#[test]
fn mdsm_loss_is_zero_at_the_target_and_checks_shapes() {
    let d = Device::Cpu;
    let (z, s) = ([0.5f32, -1.0, 2.0, 0.0], [0.5f32, 2.0]);
    let target: Vec<f32> = z
        .iter()
        .enumerate()
        .map(|(i, &zi)| -(1.0 + zi / s[i / 2]))
        .collect();
    let t = |x: &[f32], shape: &[usize]| Tensor::from_slice(x, shape, &d).unwrap();
    let r = mdsm_loss(
        &t(&target, &[2, 2]),
        &t(&[1.0; 4], &[2, 2]),
        &t(&z, &[2, 2]),
        &t(&s, &[2]),
        LossWeighting::Unit,
        Parameterisation::H,
    )
    .unwrap();
    assert_eq!(r.loss.item().unwrap(), 0.0);
    assert!(mdsm_loss(
        &t(&target, &[2, 2]),
        &t(&[1.0; 4], &[2, 2]),
        &t(&z, &[2, 2]),
        &t(&s[..1], &[1]),
        LossWeighting::Unit,
        Parameterisation::H
    )
    .is_err());
    assert!(mdsm_loss(
        &t(&target, &[4]),
        &t(&[1.0; 4], &[2, 2]),
        &t(&z, &[2, 2]),
        &t(&s, &[2]),
        LossWeighting::Unit,
        Parameterisation::H
    )
    .is_err());
}

fn dsm(
    d: &Device,
    out: &[f32],
    z: &[f32],
    sigma: &[f32],
    batch: usize,
    per: usize,
) -> (f32, Vec<f32>) {
    let t = |x: &[f32], shape: &[usize]| Tensor::from_slice(x, shape, d).unwrap();
    let r = dsm_loss(
        &t(out, &[batch, per]),
        &t(z, &[batch, per]),
        &t(sigma, &[batch]),
    )
    .unwrap();
    (r.loss.item().unwrap(), r.grad.to_vec().unwrap())
}

#[test]
fn dsm_kernel_matches_reference_and_finite_differences() {
    let mut rng = test_rng("dsm");
    for dev in kernel_devices("dsm_loss") {
        for &(batch, per) in &[(1usize, 1usize), (3, 33), (4, 1000)] {
            let out = random_vec(&mut rng, batch * per, -3.0, 3.0);
            let z = random_vec(&mut rng, batch * per, -2.0, 2.0);
            let sigma = random_vec(&mut rng, batch, 0.01, 1.0);
            let (lw, gw) = dsm(&Device::Cpu, &out, &z, &sigma, batch, per);
            let (lg, gg) = dsm(&dev, &out, &z, &sigma, batch, per);
            assert_close(
                &format!("dsm grad {batch}x{per} on {dev}"),
                &gg,
                &gw,
                1e-5,
                1e-6,
            );
            assert!(
                (lg - lw).abs() <= 1e-4 * lw.abs() + 1e-6,
                "dsm loss {lg} vs {lw}"
            );
        }
    }
    let (batch, per) = (2usize, 4usize);
    let out = random_vec(&mut rng, 8, -1.0, 1.0);
    let z = random_vec(&mut rng, 8, -1.0, 1.0);
    let sigma = [0.5f32, 1.5];
    let (_, grad) = dsm(&Device::Cpu, &out, &z, &sigma, batch, per);
    for i in 0..8 {
        let eps = 1e-2f32;
        let mut p = out.clone();
        p[i] += eps;
        let mut m = out.clone();
        m[i] -= eps;
        let fd = (dsm(&Device::Cpu, &p, &z, &sigma, batch, per).0
            - dsm(&Device::Cpu, &m, &z, &sigma, batch, per).0)
            / (2.0 * eps);
        assert!(
            (fd - grad[i]).abs() <= 1e-2 * grad[i].abs() + 1e-3,
            "dsm element {i}: {fd} vs {}",
            grad[i]
        );
    }
}

/// Theorem 4.1: with common random numbers, L_DSM(theta) - L_ESM(theta) is one constant for all
/// theta (within Monte Carlo error), while L_ESM itself varies with theta.
#[test]
fn mdsm_minus_mesm_is_constant_in_theta() {
    let mixture = LogNormalMixture::new(vec![
        Component {
            weight: 0.6,
            mean: 0.2,
            std: 0.15,
        },
        Component {
            weight: 0.4,
            mean: 0.8,
            std: 0.25,
        },
    ])
    .unwrap();
    let sched = Schedule::constant(100, 0.8).unwrap();
    let n = 200_000usize;
    let d = Device::Cpu;
    for &k in &[30usize, 70] {
        let x0 = mixture.sample_data(n, 3, rng::stream::TEST, k as u32);
        let x0 = Tensor::from_vec(x0, &[n, 1], &d).unwrap();
        let (xk, z) = gbm_forward(
            &x0,
            &vec![k; n],
            &sched,
            PhiloxDraw::new(11, rng::stream::FORWARD_NOISE, 0),
        )
        .unwrap();
        let s_level = Tensor::from_vec(vec![sched.s(k); n], &[n], &d).unwrap();
        let (m, s) = (sched.m(k) as f64, sched.s(k) as f64);
        let xs = xk.to_vec().unwrap();
        let (zs, true_h): (Vec<f64>, Vec<f64>) = (
            z.to_vec().unwrap().iter().map(|&v| v as f64).collect(),
            xs.iter().map(|&x| mixture.h(x as f64, m, s)).collect(),
        );
        // h_theta(x) = -(1 + (log x - a) / b): a log-normal's score, with theta = (a, b).
        let model = |a: f64, b: f64| -> Vec<f64> {
            xs.iter()
                .map(|&x| -(1.0 + ((x as f64).ln() - a) / b))
                .collect()
        };
        let thetas = [(0.5, 0.7), (0.3, 0.4), (0.9, 1.5), (0.0, 0.5)];
        let mut gaps = vec![];
        let mut esms = vec![];
        let h0 = model(thetas[0].0, thetas[0].1);
        for &(a, b) in &thetas {
            let h = model(a, b);
            let out = Tensor::from_vec(h.iter().map(|&v| v as f32).collect(), &[n, 1], &d).unwrap();
            let dsm = mdsm_loss(
                &out,
                &xk,
                &z,
                &s_level,
                LossWeighting::Unit,
                Parameterisation::H,
            )
            .unwrap();
            let esm = h
                .iter()
                .zip(&true_h)
                .map(|(hv, t)| 0.5 * (hv - t).powi(2))
                .sum::<f64>()
                / n as f64;
            let gap = dsm.loss.item().unwrap() as f64 - esm;
            // The gap's theta-dependent part is mean[(h - h0) (h_true - target)], mean zero by the
            // theorem; its standard error sets the tolerance.
            let terms: Vec<f64> = (0..n)
                .map(|i| (h[i] - h0[i]) * (true_h[i] + 1.0 + zs[i] / s))
                .collect();
            let mean = terms.iter().sum::<f64>() / n as f64;
            let se = (terms.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / n as f64 / n as f64)
                .sqrt();
            gaps.push((gap, se));
            esms.push(esm);
        }
        for (j, &(gap, se)) in gaps.iter().enumerate() {
            // f32 loss accumulation adds ~1e-6 relative; 4.5 standard errors of Monte Carlo.
            let tol = 4.5 * se + 2e-5 * gap.abs() + 1e-6;
            assert!(
                (gap - gaps[0].0).abs() <= tol,
                "level {k} theta {:?}: gap {gap} vs {} (tol {tol})",
                thetas[j],
                gaps[0].0
            );
        }
        let spread = esms.iter().cloned().fold(f64::MIN, f64::max)
            - esms.iter().cloned().fold(f64::MAX, f64::min);
        assert!(
            spread > 100.0 * gaps.iter().map(|g| g.1).fold(0.0, f64::max),
            "ESM must vary with theta: {esms:?}"
        );
    }
}

#[test]
fn weighting_and_parameterisation_parse() {
    assert_eq!(LossWeighting::parse("unit").unwrap(), LossWeighting::Unit);
    assert_eq!(
        LossWeighting::parse("sk2").unwrap(),
        LossWeighting::SkSquared
    );
    assert!(LossWeighting::parse("x").is_err());
    assert_eq!(
        Parameterisation::parse("stein").unwrap(),
        Parameterisation::Stein
    );
    assert!(Parameterisation::parse("s").is_err());
}

/// The emulator's race check (docs/DESIGN.md section 2): threads resumed in reverse order between
/// barriers must give the same bits.
#[test]
fn fused_loss_kernels_have_no_races() {
    use dalemeetslangevin::device::EmuSchedule;
    let mut rng = test_rng("loss_races");
    let (batch, per) = (5usize, 413usize);
    let v = inputs(&mut rng, batch, per);
    for (w, p) in COMBOS {
        let fwd = mdsm(&Device::Emu(EmuSchedule::Forward), &v, batch, per, w, p);
        let rev = mdsm(&Device::Emu(EmuSchedule::Reverse), &v, batch, per, w, p);
        assert_eq!(fwd.0.to_bits(), rev.0.to_bits(), "{w:?} {p:?}");
        assert_eq!(fwd.1, rev.1, "{w:?} {p:?}");
    }
    let sigma = &v[3];
    let fwd = dsm(
        &Device::Emu(EmuSchedule::Forward),
        &v[0],
        &v[2],
        sigma,
        batch,
        per,
    );
    let rev = dsm(
        &Device::Emu(EmuSchedule::Reverse),
        &v[0],
        &v[2],
        sigma,
        batch,
        per,
    );
    assert_eq!(fwd.0.to_bits(), rev.0.to_bits());
}
