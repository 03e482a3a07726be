//! kernels/group_norm.cu (PyTorch's nn.GroupNorm, the DDPM++ norm) against the cpu reference in
//! both emulator schedules; what the normalisation means (per-group mean 0 and variance 1, the
//! affine map per channel); gradients by finite differences; the arguments it refuses.
mod common;

use common::gradcheck::check_gradients;
use common::*;
use dalemeetslangevin::device::EmuSchedule;
use dalemeetslangevin::ops::group_norm::{group_norm, group_norm_backward};
use dalemeetslangevin::{Device, Tensor};
use rand::rngs::StdRng;

/// DDPM++'s epsilon (`nn.GroupNorm(.., eps=1e-6)`).
const EPS: f32 = 1e-6;

/// (batch, channels, groups, trailing dimensions): odd planes; G = 1 on 1x1 planes; G = C with
/// B = 1; 5 channels per group; 150 channels per group (more than the 128 threads of a block, so
/// the group sums of dx loop); planes and groups of more values than a block has threads; a
/// [B, C, L] and a [B, C] input; an empty batch.
const SHAPES: &[(usize, usize, usize, &[usize])] = &[
    (3, 6, 2, &[5, 7]),
    (2, 4, 1, &[1, 1]),
    (1, 5, 5, &[3, 3]),
    (2, 15, 3, &[4, 5]),
    (2, 300, 2, &[2, 3]),
    (1, 8, 2, &[33, 35]),
    (2, 12, 4, &[9]),
    (3, 6, 3, &[]),
    (0, 4, 2, &[3, 3]),
];

/// x [B, C, ...] of per-channel offsets in [-2, 2] (consecutive channels at least 1 apart) plus
/// uniform noise of half-width 1/2: group means away from zero, as a network's activations
/// have, and every group spread by at least a few tenths, so rstd stays below ~10.
fn input(rng: &mut StdRng, batch: usize, channels: usize, hw: usize) -> Vec<f32> {
    random_vec(rng, batch * channels * hw, -0.5, 0.5)
        .iter()
        .enumerate()
        .map(|(i, v)| v + ((i / hw % channels * 7) % 5) as f32 - 2.0)
        .collect()
}

/// Weights of either sign, none near zero, and biases.
fn params(rng: &mut StdRng, channels: usize) -> (Vec<f32>, Vec<f32>) {
    let w = random_vec(rng, channels, 0.5, 1.5)
        .iter()
        .enumerate()
        .map(|(c, v)| if c % 2 == 0 { *v } else { -v })
        .collect();
    (w, random_vec(rng, channels, -1.0, 1.0))
}

fn shape_of(batch: usize, channels: usize, trailing: &[usize]) -> Vec<usize> {
    [batch, channels].iter().chain(trailing).copied().collect()
}

#[test]
fn group_norm_kernels_match_cpu_reference() {
    let mut rng = test_rng("group_norm_kernels");
    // The kernels sum in f32, each thread a run of at most 37 values of a group (4620 values
    // over 128 threads) and then a tree of 7 levels, so a sum is within ~44 ulp of the sum of
    // its magnitudes; the reference sums in f64. For |x| <= 2.5 and group standard deviations
    // over ~0.15, the mean is within ~7e-6 (7e-5 once multiplied by rstd <= 10 and |weight| <=
    // 1.5, y's error) and rstd within ~3e-6 relative: y to 1e-4. dx adds the group means of
    // g' and g' xhat, of the same relative error: 3e-4. dweight and dbias are sums of B P terms
    // dy xhat or dy (|dy| <= 1, |xhat| <= ~4), each term off by at most the xhat error above:
    // 2e-5 per term added. Those bounds are worst cases; the errors seen are 10-100x smaller.
    let devices = kernel_devices("group_norm_kernels");
    for &(b, c, g, trailing) in SHAPES {
        let shape = shape_of(b, c, trailing);
        let hw: usize = trailing.iter().product();
        let x = input(&mut rng, b, c, hw);
        let (w, bias) = params(&mut rng, c);
        let dy = random_vec(&mut rng, x.len(), -1.0, 1.0);
        let run = |d: &Device| {
            let xt = Tensor::from_slice(&x, &shape, d).unwrap();
            let wt = Tensor::from_slice(&w, &[c], d).unwrap();
            let bt = Tensor::from_slice(&bias, &[c], d).unwrap();
            let (y, saved) = group_norm(&xt, &wt, &bt, g, EPS).unwrap();
            let dyt = Tensor::from_slice(&dy, &shape, d).unwrap();
            let (dx, dw, db) = group_norm_backward(&dyt, &xt, &wt, &saved).unwrap();
            [y, saved.stats, dx, dw, db].map(|t| t.to_vec().unwrap())
        };
        let want = run(&Device::Cpu);
        let sum_terms = (b * hw) as f32;
        let tolerances = [
            ("output", 1e-4, 1e-4),
            ("statistics", 1e-5, 1e-5),
            ("dx", 3e-4, 3e-4),
            ("dweight", 1e-4, 2e-5 * sum_terms),
            ("dbias", 1e-4, 2e-5 * sum_terms),
        ];
        let mut forward_schedule = None;
        for dev in &devices {
            let got = run(dev);
            for (i, &(name, rtol, atol)) in tolerances.iter().enumerate() {
                let what = format!("group_norm {name} {shape:?} in {g} groups on {dev}");
                assert_close(&what, &got[i], &want[i], rtol, atol);
            }
            // Every sum runs in a fixed order: the reverse schedule (threads resumed in the
            // other order between barriers) gives the same bits as the forward one.
            let bits = got.map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
            match dev {
                Device::Emu(EmuSchedule::Forward) => forward_schedule = Some(bits),
                Device::Emu(EmuSchedule::Reverse) => assert!(
                    forward_schedule.as_ref() == Some(&bits),
                    "group_norm {shape:?} in {g} groups: the result depends on the schedule"
                ),
                _ => {}
            }
        }
    }
}

#[test]
fn group_norm_normalises_each_group_and_applies_each_channels_affine_map() {
    // With weight 1 and bias 0 each group (b, g) of channels [g C/G, (g+1) C/G) comes out with
    // mean 0 and biased variance v/(v + eps), v the group's variance: the channel offsets
    // differ, so normalising other sets of channels would fail this. The output's mean is off
    // by the error of the kernels' f32 mean of x (at most ~44 ulp of max |x|, 2.6e-6 max |x|:
    // see the test above) times rstd; its variance by that of rstd squared (~5e-6). With a
    // random weight and bias, channel c's output is that normalised value times weight[c]
    // plus bias[c] (to an ulp or two: a GPU may fuse the multiply and add).
    let mut rng = test_rng("group_norm_formula");
    for dev in std::iter::once(Device::Cpu).chain(kernel_devices("group_norm_formula")) {
        for &(b, c, g, trailing) in SHAPES {
            let shape = shape_of(b, c, trailing);
            let hw: usize = trailing.iter().product();
            let xs = input(&mut rng, b, c, hw);
            let x = Tensor::from_slice(&xs, &shape, &dev).unwrap();
            let ones = Tensor::from_vec(vec![1.0; c], &[c], &dev).unwrap();
            let zeros = Tensor::zeros(&[c], &dev).unwrap();
            let plain = group_norm(&x, &ones, &zeros, g, EPS)
                .unwrap()
                .0
                .to_vec()
                .unwrap();
            let n = c / g * hw;
            let moments = |v: &[f32]| {
                let mean = v.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
                let var = v.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
                (mean, var)
            };
            for (k, (group, xg)) in plain.chunks(n).zip(xs.chunks(n)).enumerate() {
                let ((mean, var), (_, v)) = (moments(group), moments(xg));
                let max_x = xg.iter().fold(0.0f64, |m, &x| m.max(x.abs() as f64));
                let what = format!("group {k} of {shape:?} in {g} groups on {dev}");
                let mean_tol = 4e-6 * (1.0 + max_x / v.sqrt());
                assert!(mean.abs() < mean_tol, "{what}: mean {mean}");
                let want_var = v / (v + EPS as f64);
                assert!(
                    (var - want_var).abs() < 2e-5,
                    "{what}: variance {var}, want {want_var}"
                );
            }
            let (w, bias) = params(&mut rng, c);
            let wt = Tensor::from_slice(&w, &[c], &dev).unwrap();
            let bt = Tensor::from_slice(&bias, &[c], &dev).unwrap();
            let affine = group_norm(&x, &wt, &bt, g, EPS)
                .unwrap()
                .0
                .to_vec()
                .unwrap();
            let want: Vec<f32> = plain
                .iter()
                .enumerate()
                .map(|(i, &v)| v * w[i / hw % c] + bias[i / hw % c])
                .collect();
            let what = format!("affine map per channel, {shape:?} in {g} groups on {dev}");
            assert_close(&what, &affine, &want, 1e-6, 1e-6);
        }
    }
}

#[test]
fn group_norm_gradients_match_finite_differences() {
    // x uniform in [-2, 2], at least 10 values per group: group standard deviations stay above
    // ~0.5 (the third derivative grows like rstd^3 as a group's spread shrinks, see
    // common::gradcheck). Round-off: L sums ~80 outputs |y| <= ~3 at f32 error ~1e-7 each,
    // e_L <= ~2e-5, over 2 eps = 2e-2: 1e-3. Truncation: eps^2/6 |L'''| with L''' of order
    // rstd^3 |weight| <= ~12: 2e-4. tol 5e-3 covers their sum with margin.
    let mut rng = test_rng("group_norm_gradcheck");
    for &(b, c, g, trailing) in &[
        (2usize, 6usize, 3usize, &[3usize, 4usize][..]),
        (1, 4, 1, &[2, 3]),
        (2, 4, 4, &[2, 5]),
    ] {
        let hw: usize = trailing.iter().product();
        let (w, bias) = params(&mut rng, c);
        let inputs = vec![
            (
                random_vec(&mut rng, b * c * hw, -2.0, 2.0),
                shape_of(b, c, trailing),
            ),
            (w, vec![c]),
            (bias, vec![c]),
        ];
        check_gradients(
            &format!("group_norm {:?} in {g} groups", inputs[0].1),
            &mut rng,
            &inputs,
            1e-2,
            5e-3,
            &move |t, v| t.group_norm(&v[0], &v[1], &v[2], g, EPS),
        );
    }
}

#[test]
fn group_norm_refuses_bad_arguments() {
    let d = Device::Cpu;
    let x = Tensor::zeros(&[2, 6, 4, 4], &d).unwrap();
    let p6 = Tensor::zeros(&[6], &d).unwrap();
    let p4 = Tensor::zeros(&[4], &d).unwrap();
    let refused = |x: &Tensor, w: &Tensor, b: &Tensor, groups: usize, eps: f32, says: &str| {
        let e = group_norm(x, w, b, groups, eps)
            .err()
            .unwrap_or_else(|| panic!("accepted {:?} in {groups} groups", x.shape()))
            .to_string();
        assert!(e.contains("group_norm") && e.contains(says), "{e}");
    };
    refused(
        &x,
        &p6,
        &p6,
        4,
        EPS,
        "4 groups do not divide the 6 channels",
    );
    refused(&x, &p6, &p6, 0, EPS, "0 groups");
    refused(&x, &p4, &p6, 3, EPS, "weight [4] for 6 channels");
    refused(&x, &p6, &p4, 3, EPS, "bias [4] for 6 channels");
    let matrix = Tensor::zeros(&[6, 6], &d).unwrap();
    refused(&x, &matrix, &p6, 3, EPS, "weight [6, 6]");
    refused(&p6, &p6, &p6, 3, EPS, "input [6] is not [B, C, ...]");
    let empty_planes = Tensor::zeros(&[2, 6, 0, 4], &d).unwrap();
    refused(&empty_planes, &p6, &p6, 3, EPS, "[2, 6, 0, 4]");
    refused(&x, &p6, &p6, 3, -1.0, "eps");
    refused(&x, &p6, &p6, 3, f32::NAN, "eps");
    // The backward refuses statistics of another grouping and a gradient of another shape.
    let (_, mut saved) = group_norm(&x, &p6, &p6, 3, EPS).unwrap();
    let dy = Tensor::zeros(&[2, 6, 4, 5], &d).unwrap();
    let e = group_norm_backward(&dy, &x, &p6, &saved)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("group_norm_backward"), "{e}");
    saved.groups = 2;
    let e = group_norm_backward(&x, &x, &p6, &saved)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("saved statistics [2, 6]"), "{e}");
}
