//! kernels/norm.cu (conditional instance norm++) against the cpu reference; the ncsn formula's
//! properties; gradients by finite differences.
mod common;

use common::gradcheck::check_gradients;
use common::*;
use dalemeetslangevin::ops::norm::{
    cond_instance_norm_pp, cond_instance_norm_pp_backward, cond_instance_norm_pp_elu,
};
use dalemeetslangevin::ops::{elu, elu_backward};
use dalemeetslangevin::{Device, Tensor};
use rand::rngs::StdRng;
use rand::Rng;

/// (batch, channels, h, w, n_classes): odd planes, a 1x1 plane, more channels than the 128
/// threads of a block, more samples than classes (rows hit twice).
const SHAPES: &[(usize, usize, usize, usize, usize)] = &[
    (3, 5, 7, 7, 4),
    (2, 2, 13, 11, 3),
    (5, 3, 1, 1, 2),
    (1, 130, 2, 3, 3),
];

fn levels(rng: &mut StdRng, n: usize, classes: usize) -> Vec<f32> {
    (0..n)
        .map(|_| rng.random_range(0..classes) as f32)
        .collect()
}

fn embed(rng: &mut StdRng, classes: usize, c: usize) -> Vec<f32> {
    random_vec(rng, classes * 3 * c, -1.5, 1.5)
}

/// The plain norm, or the norm with its ELU fused.
fn forward_of(elu: bool) -> NormForward {
    if elu {
        cond_instance_norm_pp_elu
    } else {
        cond_instance_norm_pp
    }
}

type NormForward =
    fn(
        &Tensor,
        &Tensor,
        &Tensor,
    ) -> dalemeetslangevin::Result<(Tensor, dalemeetslangevin::ops::norm::CinPpSaved)>;

#[test]
fn cin_pp_kernels_match_cpu_reference() {
    let mut rng = test_rng("cin_pp_kernels");
    for dev in kernel_devices("cin_pp_kernels") {
        for (&(n, c, h, w, k), fused) in SHAPES.iter().flat_map(|s| [(s, false), (s, true)]) {
            let shape = [n, c, h, w];
            // A per-channel offset so the channel means differ.
            let x: Vec<f32> = random_vec(&mut rng, n * c * h * w, -1.0, 1.0)
                .iter()
                .enumerate()
                .map(|(i, v)| v * 2.0 + (i / (h * w) % c) as f32 * 0.3)
                .collect();
            let (l, e) = (levels(&mut rng, n, k), embed(&mut rng, k, c));
            let dy = random_vec(&mut rng, x.len(), -1.0, 1.0);
            let run = |d: &Device| {
                let xt = Tensor::from_slice(&x, &shape, d).unwrap();
                let lt = Tensor::from_slice(&l, &[n], d).unwrap();
                let et = Tensor::from_slice(&e, &[k, 3 * c], d).unwrap();
                let (y, saved) = forward_of(fused)(&xt, &lt, &et).unwrap();
                let dyt = Tensor::from_slice(&dy, &shape, d).unwrap();
                let (dx, de) = cond_instance_norm_pp_backward(&dyt, &xt, &lt, &et, &saved).unwrap();
                [y, saved.stats, dx, de].map(|t| t.to_vec().unwrap())
            };
            let (want, got) = (run(&Device::Cpu), run(&dev));
            for (i, name) in ["output", "statistics", "dx", "d embed"].iter().enumerate() {
                assert_close(
                    &format!(
                        "cin++ (elu fused: {fused}) {name} {:?} on {dev}",
                        (n, c, h, w, k)
                    ),
                    &got[i],
                    &want[i],
                    2e-4,
                    2e-4,
                );
            }
        }
    }
}

#[test]
fn fused_elu_equals_the_norm_then_the_elu() {
    // On the cpu the fused op does the same f32 operations on each element as the two ops in
    // sequence, so forward and backward agree to the bit; the kernels agree with the cpu above.
    let mut rng = test_rng("cin_pp_elu_fusion");
    let mut saw_negative = false;
    for &(n, c, h, w, k) in SHAPES {
        let d = Device::Cpu;
        let shape = [n, c, h, w];
        let x =
            Tensor::from_vec(random_vec(&mut rng, n * c * h * w, -2.0, 2.0), &shape, &d).unwrap();
        let l = Tensor::from_vec(levels(&mut rng, n, k), &[n], &d).unwrap();
        let e = Tensor::from_vec(embed(&mut rng, k, c), &[k, 3 * c], &d).unwrap();
        let dy = Tensor::from_vec(random_vec(&mut rng, x.numel(), -1.0, 1.0), &shape, &d).unwrap();
        let (pre, saved) = cond_instance_norm_pp(&x, &l, &e).unwrap();
        let two_ops_y = elu(&pre).unwrap();
        let dpre = elu_backward(&pre, &dy).unwrap();
        let two_ops = cond_instance_norm_pp_backward(&dpre, &x, &l, &e, &saved).unwrap();
        let (fused_y, fused_saved) = cond_instance_norm_pp_elu(&x, &l, &e).unwrap();
        let fused = cond_instance_norm_pp_backward(&dy, &x, &l, &e, &fused_saved).unwrap();
        let v = |t: &Tensor| t.to_vec().unwrap();
        assert_eq!(v(&fused_y), v(&two_ops_y), "output {shape:?}");
        assert_eq!(v(&fused.0), v(&two_ops.0), "dx {shape:?}");
        assert_eq!(v(&fused.1), v(&two_ops.1), "d embed {shape:?}");
        saw_negative |= v(&fused_y).iter().any(|&y| y < 0.0);
    }
    // A 1x1 plane can come out all positive; over all shapes the ELU's negative side is reached.
    assert!(
        saw_negative,
        "no negative output: the ELU's exp branch went untested"
    );
}

#[test]
fn cin_pp_follows_ncsn_formula() {
    // gamma = 1, alpha = 0, beta = 0: every plane has mean 0 and biased variance var/(var+eps).
    // gamma = 1, alpha = 1, beta = 0: plane means are u_c, whose UNBIASED variance over channels
    // is v/(v + eps), about 1.
    let mut rng = test_rng("cin_pp_formula");
    let (n, c, hw) = (2usize, 6usize, 25usize);
    let x: Vec<f32> = random_vec(&mut rng, n * c * hw, -1.0, 1.0)
        .iter()
        .enumerate()
        .map(|(i, v)| v * (1.0 + (i / hw) as f32) + (i / hw) as f32)
        .collect();
    let xt = Tensor::from_slice(&x, &[n, c, 5, 5], &Device::Cpu).unwrap();
    let lt = Tensor::from_slice(&[0.0, 0.0], &[n], &Device::Cpu).unwrap();
    for alpha in [0.0f32, 1.0] {
        let e: Vec<f32> = (0..3 * c).map(|j| [1.0, alpha, 0.0][j / c]).collect();
        let et = Tensor::from_slice(&e, &[1, 3 * c], &Device::Cpu).unwrap();
        let y = cond_instance_norm_pp(&xt, &lt, &et)
            .unwrap()
            .0
            .to_vec()
            .unwrap();
        for s in 0..n {
            let means: Vec<f64> = (0..c)
                .map(|ch| {
                    y[(s * c + ch) * hw..][..hw]
                        .iter()
                        .map(|&v| v as f64)
                        .sum::<f64>()
                        / hw as f64
                })
                .collect();
            for (ch, &m) in means.iter().enumerate() {
                let plane = &y[(s * c + ch) * hw..][..hw];
                let var = plane.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / hw as f64;
                assert!((var - 1.0).abs() < 1e-3, "plane variance {var}");
                if alpha == 0.0 {
                    assert!(m.abs() < 1e-5, "plane mean {m}");
                }
            }
            if alpha == 1.0 {
                let mm = means.iter().sum::<f64>() / c as f64;
                let unbiased = means.iter().map(|m| (m - mm).powi(2)).sum::<f64>() / (c - 1) as f64;
                assert!(
                    (unbiased - 1.0).abs() < 1e-3,
                    "unbiased variance of u {unbiased}"
                );
            }
        }
    }
}

#[test]
fn cin_pp_gradients_match_finite_differences() {
    let mut rng = test_rng("cin_pp_gradcheck");
    for &(n, c, h, w, k) in &[(3usize, 4usize, 3usize, 4usize, 2usize), (2, 2, 5, 5, 3)] {
        let l = Tensor::from_vec(levels(&mut rng, n, k), &[n], &Device::Cpu).unwrap();
        let inputs = vec![
            (
                random_vec(&mut rng, n * c * h * w, -2.0, 2.0),
                vec![n, c, h, w],
            ),
            (embed(&mut rng, k, c), vec![k, 3 * c]),
        ];
        let l_values = l.to_vec().unwrap();
        for fused in [false, true] {
            let l_values = l_values.clone();
            check_gradients(
                &format!("cond_instance_norm_pp (elu fused: {fused})"),
                &mut rng,
                &inputs,
                1e-2,
                1e-2,
                &move |t, v| {
                    let lv = t.constant(Tensor::from_slice(&l_values, &[n], &Device::Cpu)?);
                    if fused {
                        t.cond_instance_norm_pp_elu(&v[0], &lv, &v[1])
                    } else {
                        t.cond_instance_norm_pp(&v[0], &lv, &v[1])
                    }
                },
            );
        }
    }
}

#[test]
fn cin_pp_rejects_bad_shapes_and_levels() {
    let d = Device::Cpu;
    let x = Tensor::zeros(&[2, 3, 4, 4], &d).unwrap();
    let l = Tensor::from_slice(&[0.0, 5.0], &[2], &d).unwrap();
    let bad_embed = Tensor::zeros(&[2, 6], &d).unwrap();
    assert!(cond_instance_norm_pp(&x, &l, &bad_embed).is_err());
    let one_channel = Tensor::zeros(&[2, 1, 4, 4], &d).unwrap();
    assert!(cond_instance_norm_pp(&one_channel, &l, &Tensor::zeros(&[2, 3], &d).unwrap()).is_err());
    // Level 5 of 2 classes: that sample's output is NaN, the other's is not.
    let embed = Tensor::zeros(&[2, 9], &d).unwrap();
    for dev in std::iter::once(Device::Cpu).chain(kernel_devices("cin_pp_bad_levels")) {
        let (x, l, e) = (
            x.to_device(&dev).unwrap(),
            l.to_device(&dev).unwrap(),
            embed.to_device(&dev).unwrap(),
        );
        let y = cond_instance_norm_pp(&x, &l, &e)
            .unwrap()
            .0
            .to_vec()
            .unwrap();
        assert!(
            y[..48].iter().all(|v| v.is_finite()) && y[48..].iter().all(|v| v.is_nan()),
            "on {dev}"
        );
    }
}
