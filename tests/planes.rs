//! The per-plane and per-channel layout ops DDPM++ needs (SPEC section 11): kernels/planes.cu's
//! plane and channel biases and plane sums and elementwise.cu's channel slice against the cpu reference in both
//! schedules; the concatenation, the biases and the reshape on the tape by finite differences.
mod common;

use common::gradcheck::check_gradients;
use common::*;
use dalemeetslangevin::ops::planes::{add_channel_bias, add_plane_bias, sum_planes};
use dalemeetslangevin::ops::{concat_channels, slice_channels};
use dalemeetslangevin::{Device, Tensor};

/// [B, C, H, W]: a 1x1 plane, odd planes, planes longer than the 256 threads of a block, an
/// empty plane, and more planes than one row of blocks would need.
const SHAPES: &[[usize; 4]] = &[
    [3, 5, 7, 7],
    [2, 1, 1, 1],
    [1, 3, 17, 19],
    [2, 2, 0, 3],
    [4, 129, 2, 1],
];

fn tensor(v: &[f32], shape: &[usize], dev: &Device) -> Tensor {
    Tensor::from_slice(v, shape, dev).unwrap()
}

#[test]
fn plane_kernels_match_cpu_reference() {
    let mut rng = test_rng("plane_kernels");
    for dev in kernel_devices("plane_kernels") {
        for &shape in SHAPES {
            let x = random_vec(&mut rng, shape.iter().product(), -1.0, 1.0);
            let bias = random_vec(&mut rng, shape[0] * shape[1], -2.0, 2.0);
            let channel_bias = random_vec(&mut rng, shape[1], -2.0, 2.0);
            let run = |d: &Device| {
                let xt = tensor(&x, &shape, d);
                let y = add_plane_bias(&xt, &tensor(&bias, &shape[..2], d)).unwrap();
                let z = add_channel_bias(&xt, &tensor(&channel_bias, &shape[1..2], d)).unwrap();
                [
                    y.to_vec().unwrap(),
                    sum_planes(&xt).unwrap().to_vec().unwrap(),
                    z.to_vec().unwrap(),
                ]
            };
            let (want, got) = (run(&Device::Cpu), run(&dev));
            // The add is one rounding on both; the sums differ in order only: 16 ulp of the
            // sum of magnitudes (at most 19*17 terms of |x| <= 1) is far above that.
            assert_close(
                &format!("add_plane_bias {shape:?} on {dev}"),
                &got[0],
                &want[0],
                0.0,
                0.0,
            );
            let hw = (shape[2] * shape[3]) as f32;
            let atol = 16.0 * f32::EPSILON * hw;
            assert_close(
                &format!("sum_planes {shape:?} on {dev}"),
                &got[1],
                &want[1],
                0.0,
                atol,
            );
            assert_close(
                &format!("add_channel_bias {shape:?} on {dev}"),
                &got[2],
                &want[2],
                0.0,
                0.0,
            );
        }
    }
}

#[test]
fn plane_ops_match_their_definition_and_refuse_bad_shapes() {
    let x = tensor(
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
        &[2, 2, 1, 2],
        &Device::Cpu,
    );
    let bias = tensor(&[10.0, 20.0, 30.0, 40.0], &[2, 2], &Device::Cpu);
    let y = add_plane_bias(&x, &bias).unwrap().to_vec().unwrap();
    assert_eq!(y, [11.0, 12.0, 23.0, 24.0, 35.0, 36.0, 47.0, 48.0]);
    assert_eq!(
        sum_planes(&x).unwrap().to_vec().unwrap(),
        [3.0, 7.0, 11.0, 15.0]
    );
    let per_channel = tensor(&[10.0, 20.0], &[2], &Device::Cpu);
    let z = add_channel_bias(&x, &per_channel)
        .unwrap()
        .to_vec()
        .unwrap();
    assert_eq!(z, [11.0, 12.0, 23.0, 24.0, 15.0, 16.0, 27.0, 28.0]);
    let rows = tensor(&[1.0, 2.0, 3.0, 4.0], &[2, 2], &Device::Cpu);
    let z = add_channel_bias(&rows, &per_channel)
        .unwrap()
        .to_vec()
        .unwrap();
    assert_eq!(
        z,
        [11.0, 22.0, 13.0, 24.0],
        "a [B, C] input: one element per plane"
    );
    let e = add_channel_bias(&x, &bias).unwrap_err().to_string();
    assert!(e.contains("add_channel_bias") && e.contains("[C]"), "{e}");
    let wrong = tensor(&[1.0, 2.0], &[2], &Device::Cpu);
    let e = add_plane_bias(&x, &wrong).unwrap_err().to_string();
    assert!(e.contains("add_plane_bias") && e.contains("[B, C]"), "{e}");
    let e = sum_planes(&tensor(&[1.0], &[1], &Device::Cpu))
        .unwrap_err()
        .to_string();
    assert!(e.contains("sum_planes"), "{e}");
}

#[test]
fn channel_slices_invert_the_concatenation_on_every_device() {
    let mut rng = test_rng("slice_channels");
    let (a, b) = ([2, 3, 5, 7], [2, 130, 5, 7]);
    let xa = random_vec(&mut rng, a.iter().product(), -1.0, 1.0);
    let xb = random_vec(&mut rng, b.iter().product(), -1.0, 1.0);
    let mut devices = kernel_devices("slice_channels");
    devices.push(Device::Cpu);
    for dev in devices {
        let cat = concat_channels(&[&tensor(&xa, &a, &dev), &tensor(&xb, &b, &dev)]).unwrap();
        let first = slice_channels(&cat, 0, 3).unwrap();
        let second = slice_channels(&cat, 3, 130).unwrap();
        assert_eq!(first.shape(), a);
        assert_close(
            &format!("first part on {dev}"),
            &first.to_vec().unwrap(),
            &xa,
            0.0,
            0.0,
        );
        assert_close(
            &format!("second part on {dev}"),
            &second.to_vec().unwrap(),
            &xb,
            0.0,
            0.0,
        );
        let middle = slice_channels(&cat, 2, 0).unwrap();
        assert_eq!(middle.shape(), [2, 0, 5, 7]);
        for (offset, len) in [(0, 134), (133, 2), (usize::MAX, 2)] {
            let e = slice_channels(&cat, offset, len).unwrap_err().to_string();
            assert!(e.contains("slice_channels"), "{e}");
        }
    }
}

#[test]
fn concatenation_and_plane_bias_gradients_match_finite_differences() {
    let mut rng = test_rng("planes_gradcheck");
    let parts = vec![
        (
            random_vec(&mut rng, 2 * 3 * 4 * 5, -1.0, 1.0),
            vec![2, 3, 4, 5],
        ),
        (
            random_vec(&mut rng, 2 * 2 * 4 * 5, -1.0, 1.0),
            vec![2, 2, 4, 5],
        ),
        (random_vec(&mut rng, 2 * 4 * 5, -1.0, 1.0), vec![2, 1, 4, 5]),
    ];
    // Linear graphs: only round-off, e_L / eps with e_L ~ 1e-6 here.
    check_gradients("concat_channels", &mut rng, &parts, 1e-2, 1e-3, &|t, v| {
        t.concat_channels(&[&v[0], &v[1], &v[2]])
    });
    let inputs = vec![
        (
            random_vec(&mut rng, 3 * 4 * 3 * 2, -1.0, 1.0),
            vec![3, 4, 3, 2],
        ),
        (random_vec(&mut rng, 3 * 4, -1.0, 1.0), vec![3, 4]),
    ];
    // A product after the bias, so the bias's gradient depends on x (not only on r).
    check_gradients("add_plane_bias", &mut rng, &inputs, 1e-2, 1e-3, &|t, v| {
        let y = t.add_plane_bias(&v[0], &v[1])?;
        t.mul(&y, &v[0])
    });
    let inputs = vec![
        (
            random_vec(&mut rng, 3 * 4 * 3 * 2, -1.0, 1.0),
            vec![3, 4, 3, 2],
        ),
        (random_vec(&mut rng, 4, -1.0, 1.0), vec![4]),
    ];
    // The channel bias, then a reshape to [B, C*H*W] and back through another product.
    check_gradients(
        "add_channel_bias",
        &mut rng,
        &inputs,
        1e-2,
        1e-3,
        &|t, v| {
            let y = t.add_channel_bias(&v[0], &v[1])?;
            let y = t.reshape(&y, &[3, 24])?;
            let x = t.reshape(&v[0], &[3, 24])?;
            t.mul(&y, &x)
        },
    );
}
