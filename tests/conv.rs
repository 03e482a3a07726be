//! kernels/conv.cu against the cpu reference, the cpu reference against a direct loop, and
//! finite-difference gradients of the convolution on cpu.
mod common;

use common::gradcheck::check_gradients;
use common::*;
use dalemeetslangevin::device::EmuSchedule;
use dalemeetslangevin::nn::conv::{
    conv2d, conv2d_backward_bias, conv2d_backward_data, conv2d_backward_weight,
};
use dalemeetslangevin::nn::Conv2dCfg;
use dalemeetslangevin::{Device, Tensor};

/// (batch, c_in, h, w, c_out, kernel, padding, dilation): odd sizes, channels across the 64-wide
/// tile, 1x1, dilations 2 and 4, more than one split of the weight gradient, size 1.
type Shape = (usize, usize, usize, usize, usize, usize, usize, usize);

const SHAPES: &[Shape] = &[
    (2, 3, 7, 7, 5, 3, 1, 1),
    (1, 5, 13, 11, 3, 3, 2, 2),
    (2, 4, 9, 10, 6, 3, 4, 4),
    (3, 5, 6, 5, 7, 1, 0, 1),
    (1, 1, 1, 1, 1, 1, 0, 1),
    (2, 3, 8, 8, 70, 3, 1, 1),
    (4, 2, 12, 12, 3, 3, 1, 1),
    (1, 2, 5, 6, 2, 3, 0, 1),
];

struct Case {
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    dy: Vec<f32>,
    x_shape: [usize; 4],
    w_shape: [usize; 4],
    y_shape: [usize; 4],
    cfg: Conv2dCfg,
}

fn case(
    rng: &mut rand::rngs::StdRng,
    s: (usize, usize, usize, usize, usize, usize, usize, usize),
) -> Case {
    let (n, ci, h, w, co, k, pad, dil) = s;
    let (ho, wo) = (h + 2 * pad - dil * (k - 1), w + 2 * pad - dil * (k - 1));
    Case {
        x: random_vec(rng, n * ci * h * w, -1.0, 1.0),
        w: random_vec(rng, co * ci * k * k, -1.0, 1.0),
        b: random_vec(rng, co, -1.0, 1.0),
        dy: random_vec(rng, n * co * ho * wo, -1.0, 1.0),
        x_shape: [n, ci, h, w],
        w_shape: [co, ci, k, k],
        y_shape: [n, co, ho, wo],
        cfg: Conv2dCfg {
            padding: pad,
            dilation: dil,
        },
    }
}

/// Forward (with and without bias), backward data, weight and bias on `dev`.
fn run_all(c: &Case, dev: &Device) -> [Vec<f32>; 5] {
    let x = Tensor::from_slice(&c.x, &c.x_shape, dev).unwrap();
    let w = Tensor::from_slice(&c.w, &c.w_shape, dev).unwrap();
    let b = Tensor::from_slice(&c.b, &[c.w_shape[0]], dev).unwrap();
    let dy = Tensor::from_slice(&c.dy, &c.y_shape, dev).unwrap();
    [
        conv2d(&x, &w, Some(&b), c.cfg).unwrap(),
        conv2d(&x, &w, None, c.cfg).unwrap(),
        conv2d_backward_data(&dy, &w, &c.x_shape, c.cfg).unwrap(),
        conv2d_backward_weight(&dy, &x, &c.w_shape, c.cfg).unwrap(),
        conv2d_backward_bias(&dy).unwrap(),
    ]
    .map(|t| t.to_vec().unwrap())
}

#[test]
fn conv_kernels_match_cpu_reference() {
    let mut rng = test_rng("conv_kernels");
    for dev in kernel_devices("conv_kernels") {
        for &s in SHAPES {
            let c = case(&mut rng, s);
            let (want, got) = (run_all(&c, &Device::Cpu), run_all(&c, &dev));
            let names = [
                "forward",
                "forward without bias",
                "backward data",
                "backward weight",
                "backward bias",
            ];
            for ((g, w), name) in got.iter().zip(&want).zip(names) {
                assert_close(&format!("conv {name} {s:?} on {dev}"), g, w, 1e-4, 1e-4);
            }
        }
    }
}

#[test]
fn conv_kernels_have_no_races() {
    // Threads resumed in reverse order between barriers must give the same bits.
    let mut rng = test_rng("conv_races");
    let c = case(&mut rng, (2, 3, 7, 7, 5, 3, 1, 1));
    let fwd = run_all(&c, &Device::Emu(EmuSchedule::Forward));
    let rev = run_all(&c, &Device::Emu(EmuSchedule::Reverse));
    for (a, b) in fwd.iter().zip(&rev) {
        assert_eq!(a, b);
    }
}

/// The convolution written as its definition, independent of im2col.
fn direct_conv(c: &Case) -> Vec<f32> {
    let [n, ci, h, w] = c.x_shape;
    let [co, _, k, _] = c.w_shape;
    let [_, _, ho, wo] = c.y_shape;
    let (p, d) = (c.cfg.padding as isize, c.cfg.dilation as isize);
    let mut y = vec![0.0f32; n * co * ho * wo];
    for b in 0..n {
        for o in 0..co {
            for oh in 0..ho {
                for ow in 0..wo {
                    let mut acc = c.b[o] as f64;
                    for i in 0..ci {
                        for ki in 0..k {
                            for kj in 0..k {
                                let ih = oh as isize - p + ki as isize * d;
                                let iw = ow as isize - p + kj as isize * d;
                                if ih < 0 || iw < 0 || ih >= h as isize || iw >= w as isize {
                                    continue;
                                }
                                let xv = c.x[((b * ci + i) * h + ih as usize) * w + iw as usize];
                                acc += xv as f64 * c.w[((o * ci + i) * k + ki) * k + kj] as f64;
                            }
                        }
                    }
                    y[((b * co + o) * ho + oh) * wo + ow] = acc as f32;
                }
            }
        }
    }
    y
}

#[test]
fn cpu_conv_matches_definition() {
    let mut rng = test_rng("conv_definition");
    for &s in SHAPES {
        let c = case(&mut rng, s);
        let got = run_all(&c, &Device::Cpu);
        assert_close(
            &format!("cpu conv {s:?}"),
            &got[0],
            &direct_conv(&c),
            1e-5,
            1e-5,
        );
    }
}

#[test]
fn conv_gradients_match_finite_differences() {
    let mut rng = test_rng("conv_gradcheck");
    for &(n, ci, h, w, co, k, pad, dil) in &[
        (2, 2, 5, 4, 3, 3, 1, 1),
        (1, 3, 7, 6, 2, 3, 2, 2),
        (2, 2, 3, 3, 2, 1, 0, 1),
    ] {
        let cfg = Conv2dCfg {
            padding: pad,
            dilation: dil,
        };
        let inputs = vec![
            (
                random_vec(&mut rng, n * ci * h * w, -1.0, 1.0),
                vec![n, ci, h, w],
            ),
            (
                random_vec(&mut rng, co * ci * k * k, -1.0, 1.0),
                vec![co, ci, k, k],
            ),
            (random_vec(&mut rng, co, -1.0, 1.0), vec![co]),
        ];
        check_gradients("conv2d", &mut rng, &inputs, 1e-2, 2e-3, &move |tape, v| {
            tape.conv2d(&v[0], &v[1], Some(&v[2]), cfg)
        });
    }
}

#[test]
fn conv_shape_errors_are_reported() {
    let x = Tensor::zeros(&[1, 3, 4, 4], &Device::Cpu).unwrap();
    let w = Tensor::zeros(&[2, 4, 3, 3], &Device::Cpu).unwrap();
    let err = conv2d(&x, &w, None, Conv2dCfg::same(3, 1))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[1, 3, 4, 4]") && err.contains("[2, 4, 3, 3]"),
        "{err}"
    );
    let w = Tensor::zeros(&[2, 3, 3, 3], &Device::Cpu).unwrap();
    let err = conv2d(
        &x,
        &w,
        None,
        Conv2dCfg {
            padding: 0,
            dilation: 4,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("smaller than the dilated kernel"), "{err}");
}
