//! kernels/conv.cu against the cpu reference, the cpu reference against a direct loop, and
//! finite-difference gradients of the convolution on cpu.
mod common;

use common::gradcheck::check_gradients;
use common::*;
use dalemeetslangevin::device::EmuSchedule;
use dalemeetslangevin::nn::{Conv2dCfg, ConvPrecision};
use dalemeetslangevin::ops::conv::{
    conv2d, conv2d_backward_bias, conv2d_backward_data, conv2d_backward_weight,
};
use dalemeetslangevin::ops::conv_precision::round_to_tf32;
use dalemeetslangevin::{Device, Tensor};

/// (batch, c_in, h, w, c_out, kernel, padding, dilation): odd sizes, channels across the 64-wide
/// tile, 1x1, dilations 2 and 4, more than one split of the weight gradient, size 1, and a
/// dilation wider than the image (some taps read nothing but padding).
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
    (2, 2, 3, 4, 3, 3, 4, 4),
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
            precision: ConvPrecision::Fp32,
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
        (1, 2, 3, 4, 2, 3, 4, 4),
    ] {
        let cfg = Conv2dCfg {
            padding: pad,
            dilation: dil,
            ..Conv2dCfg::default()
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
            ..Conv2dCfg::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("smaller than the dilated kernel"), "{err}");
}

/// Shapes for the tf32 tensor-core forward: odd sizes, K = 63 over two 32-wide slices, c_out
/// across the 64-wide tile, 1x1, size 1. Few and small: the emulator runs every lane's mma.
const TF32_SHAPES: &[Shape] = &[
    (2, 3, 7, 7, 5, 3, 1, 1),
    (1, 7, 6, 5, 9, 3, 1, 1),
    (1, 2, 9, 8, 3, 3, 2, 2),
    (3, 5, 6, 5, 7, 1, 0, 1),
    (1, 1, 1, 1, 1, 1, 0, 1),
    (2, 3, 8, 8, 70, 3, 1, 1),
];

fn forward(c: &Case, dev: &Device, precision: ConvPrecision) -> Vec<f32> {
    forward_of(&c.x, &c.w, Some(&c.b), c, dev, precision)
}

fn forward_of(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    c: &Case,
    dev: &Device,
    precision: ConvPrecision,
) -> Vec<f32> {
    let x = Tensor::from_slice(x, &c.x_shape, dev).unwrap();
    let w = Tensor::from_slice(w, &c.w_shape, dev).unwrap();
    let b = b.map(|b| Tensor::from_slice(b, &[c.w_shape[0]], dev).unwrap());
    conv2d(&x, &w, b.as_ref(), c.cfg.with_precision(precision))
        .unwrap()
        .to_vec()
        .unwrap()
}

#[test]
fn tf32_rounding_matches_cvt_rna() {
    let f = f32::from_bits;
    let cases = [
        (1.0, 1.0),
        (0.0, 0.0),
        // 0x3dcccccd rounds up to the tf32 value nearest 0.1.
        (0.1, f(0x3dcc_c000)),
        // Below half a tf32 unit (2^-11 at 1) rounds down.
        (1.0 + 2f32.powi(-12), 1.0),
        (f(0x3f80_0fff), 1.0),
        // Exactly half: away from zero (round-to-even would give 1.0).
        (1.0 + 2f32.powi(-11), 1.0 + 2f32.powi(-10)),
        (-(1.0 + 2f32.powi(-11)), -(1.0 + 2f32.powi(-10))),
        // The carry runs into the exponent.
        (f(0x3fff_ffff), 2.0),
        // Subnormals round on the same bits.
        (f(0x0000_1000), f(0x0000_2000)),
        (f(0x0000_0fff), 0.0),
        (f32::MAX, f32::INFINITY),
        (f32::NEG_INFINITY, f32::NEG_INFINITY),
    ];
    for (v, want) in cases {
        let got = round_to_tf32(v);
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "tf32({v:e}) = {got:e}, want {want:e}"
        );
    }
    assert_eq!(round_to_tf32(-0.0).to_bits(), (-0.0f32).to_bits());
    assert!(round_to_tf32(f32::NAN).is_nan());

    let mut rng = test_rng("tf32_rounding");
    for v in random_vec(&mut rng, 10_000, -1e3, 1e3) {
        let r = round_to_tf32(v);
        assert_eq!(r.to_bits() & 0x1fff, 0, "tf32({v}) = {r} keeps low bits");
        assert!((r - v).abs() <= v.abs() * 2f32.powi(-11), "tf32({v}) = {r}");
        assert_eq!(
            round_to_tf32(r),
            r,
            "tf32 rounding of {r} is not idempotent"
        );
    }
}

#[test]
fn conv_tf32_kernel_matches_tf32_reference() {
    let mut rng = test_rng("conv_tf32");
    for dev in kernel_devices("conv_tf32") {
        for &s in TF32_SHAPES {
            let c = case(&mut rng, s);
            let got = forward(&c, &dev, ConvPrecision::Tf32);
            // The same rounded operands and fp32 sums in another order.
            let want = forward(&c, &Device::Cpu, ConvPrecision::Tf32);
            assert_close(
                &format!("tf32 conv {s:?} on {dev}"),
                &got,
                &want,
                1e-5,
                1e-5,
            );
            // Against fp32: each product is off by at most 2^-10 of its size (two operands each
            // within 2^-11), so |error| <= 2^-10 sum |w x|, plus fp32 rounding.
            let fp32 = forward(&c, &Device::Cpu, ConvPrecision::Fp32);
            let abs = |v: &[f32]| v.iter().map(|e| e.abs()).collect::<Vec<_>>();
            let magnitude = forward_of(
                &abs(&c.x),
                &abs(&c.w),
                None,
                &c,
                &Device::Cpu,
                ConvPrecision::Fp32,
            );
            for (i, ((&g, &f), &m)) in got.iter().zip(&fp32).zip(&magnitude).enumerate() {
                let bound = m * 2f32.powi(-10) + 1e-5 * (1.0 + f.abs());
                assert!(
                    (g - f).abs() <= bound,
                    "tf32 conv {s:?} on {dev}: element {i}: {g} vs fp32 {f}, bound {bound}"
                );
            }
            // In aggregate, against the size of the sums, sum |w x| + |b| (not of the outputs,
            // which the bias can cancel to near zero): the bound above summed in squares gives
            // |err| <= 2^-10 |size| plus fp32 rounding, a few ulp of the size.
            let size_of_sums = forward_of(
                &abs(&c.x),
                &abs(&c.w),
                Some(&abs(&c.b)),
                &c,
                &Device::Cpu,
                ConvPrecision::Fp32,
            );
            let (err, size) = got
                .iter()
                .zip(&fp32)
                .zip(&size_of_sums)
                .fold((0.0, 0.0), |(e, n), ((&g, &f), &m)| {
                    (e + ((g - f) as f64).powi(2), n + (m as f64).powi(2))
                });
            let relative = (err / size.max(f64::MIN_POSITIVE)).sqrt();
            assert!(
                relative <= 2f64.powi(-10) + 1e-5,
                "tf32 conv {s:?} on {dev}: error {relative:e} of the sums' size vs fp32"
            );
        }
    }
}

#[test]
fn conv_tf32_kernel_has_no_races() {
    let mut rng = test_rng("conv_tf32_races");
    let c = case(&mut rng, (2, 3, 7, 7, 5, 3, 1, 1));
    let fwd = forward(&c, &Device::Emu(EmuSchedule::Forward), ConvPrecision::Tf32);
    let rev = forward(&c, &Device::Emu(EmuSchedule::Reverse), ConvPrecision::Tf32);
    assert_eq!(fwd, rev);
}

#[test]
fn conv_precision_defaults_to_fp32_and_is_named_as_stored() {
    // Every constructor of a convolution's settings, and so every layer, starts in fp32.
    assert_eq!(Conv2dCfg::default().precision, ConvPrecision::Fp32);
    assert_eq!(Conv2dCfg::same(3, 2).precision, ConvPrecision::Fp32);
    assert_eq!(ConvPrecision::default(), ConvPrecision::Fp32);
    let mut rng = test_rng("conv_default_precision");
    let c = case(&mut rng, (2, 3, 7, 7, 5, 3, 1, 1));
    let x = Tensor::from_slice(&c.x, &c.x_shape, &Device::Cpu).unwrap();
    let w = Tensor::from_slice(&c.w, &c.w_shape, &Device::Cpu).unwrap();
    let cfg = Conv2dCfg::same(3, 1);
    let got = conv2d(&x, &w, None, cfg).unwrap().to_vec().unwrap();
    let tf32 = conv2d(&x, &w, None, cfg.with_precision(ConvPrecision::Tf32))
        .unwrap()
        .to_vec()
        .unwrap();
    let fp32 = forward_of(&c.x, &c.w, None, &c, &Device::Cpu, ConvPrecision::Fp32);
    assert_eq!(got, fp32);
    assert_ne!(got, tf32, "the precision in the settings is not honoured");

    // The names checkpoints store.
    assert_eq!(ConvPrecision::Tf32.name(), "tf32");
    assert_eq!(ConvPrecision::parse("tf32").unwrap(), ConvPrecision::Tf32);
    assert_eq!(ConvPrecision::parse("fp32").unwrap(), ConvPrecision::Fp32);
    let err = ConvPrecision::parse("bf16").unwrap_err().to_string();
    assert!(
        err.contains("convolution precision") && err.contains("bf16"),
        "{err}"
    );
}

/// One backward pass of `c` on two operands in a precision: [`backward_data_of`] (dy, w) or
/// [`backward_weight_of`] (dy, x).
type BackwardPass = fn(&[f32], &[f32], &Case, &Device, ConvPrecision) -> Vec<f32>;

fn backward_data_of(
    dy: &[f32],
    w: &[f32],
    c: &Case,
    dev: &Device,
    precision: ConvPrecision,
) -> Vec<f32> {
    let dy = Tensor::from_slice(dy, &c.y_shape, dev).unwrap();
    let w = Tensor::from_slice(w, &c.w_shape, dev).unwrap();
    conv2d_backward_data(&dy, &w, &c.x_shape, c.cfg.with_precision(precision))
        .unwrap()
        .to_vec()
        .unwrap()
}

fn backward_weight_of(
    dy: &[f32],
    x: &[f32],
    c: &Case,
    dev: &Device,
    precision: ConvPrecision,
) -> Vec<f32> {
    let dy = Tensor::from_slice(dy, &c.y_shape, dev).unwrap();
    let x = Tensor::from_slice(x, &c.x_shape, dev).unwrap();
    conv2d_backward_weight(&dy, &x, &c.w_shape, c.cfg.with_precision(precision))
        .unwrap()
        .to_vec()
        .unwrap()
}

/// The tf32 `pass` on `dev` against the cpu's tf32 reference (the same rounded operands, fp32
/// sums in another order) and against fp32 element by element: each product is off by at most
/// 2^-10 of its size, so |error| <= 2^-10 sum |a b| plus fp32 rounding, as for the forward pass.
fn check_tf32_backward(
    what: &str,
    pass: BackwardPass,
    (a, b): (&[f32], &[f32]),
    c: &Case,
    dev: &Device,
) {
    let got = pass(a, b, c, dev, ConvPrecision::Tf32);
    let want = pass(a, b, c, &Device::Cpu, ConvPrecision::Tf32);
    assert_close(&format!("{what} on {dev}"), &got, &want, 1e-5, 1e-5);
    let fp32 = pass(a, b, c, &Device::Cpu, ConvPrecision::Fp32);
    let abs = |v: &[f32]| v.iter().map(|e| e.abs()).collect::<Vec<_>>();
    let magnitude = pass(&abs(a), &abs(b), c, &Device::Cpu, ConvPrecision::Fp32);
    for (i, ((&g, &f), &m)) in got.iter().zip(&fp32).zip(&magnitude).enumerate() {
        let bound = m * 2f32.powi(-10) + 1e-5 * (1.0 + f.abs());
        assert!(
            (g - f).abs() <= bound,
            "{what} on {dev}: element {i}: {g} vs fp32 {f}, bound {bound}"
        );
    }
}

/// The tf32 `pass` gives the same bits in both emulator schedules.
fn check_tf32_backward_has_no_races(
    test: &str,
    pass: BackwardPass,
    operands: fn(&Case) -> (&[f32], &[f32]),
) {
    let mut rng = test_rng(test);
    let c = case(&mut rng, (2, 3, 7, 7, 5, 3, 1, 1));
    let (a, b) = operands(&c);
    let run = |schedule| pass(a, b, &c, &Device::Emu(schedule), ConvPrecision::Tf32);
    assert_eq!(run(EmuSchedule::Forward), run(EmuSchedule::Reverse));
}

#[test]
fn conv_tf32_backward_data_kernel_matches_tf32_reference() {
    // The backward-data GEMM (M = C_in, K = C_out taps) on the tensor-core tile: the same
    // shapes as the forward, whose C_in and C_out now play each other's part.
    let mut rng = test_rng("conv_tf32_bwd_data");
    for dev in kernel_devices("conv_tf32_bwd_data") {
        for &s in TF32_SHAPES {
            let c = case(&mut rng, s);
            let what = format!("tf32 conv backward data {s:?}");
            check_tf32_backward(&what, backward_data_of, (&c.dy, &c.w), &c, &dev);
        }
    }
}

#[test]
fn conv_tf32_backward_data_kernel_has_no_races() {
    check_tf32_backward_has_no_races("conv_tf32_bwd_data_races", backward_data_of, |c| {
        (&c.dy, &c.w)
    });
}

#[test]
fn conv_tf32_backward_weight_kernel_matches_tf32_reference() {
    // The split-K backward-weight GEMM (K = batch x output pixels) on the tensor-core tile. The
    // 10x10 batch of 4 has K = 400 in 2 splits of 208 (src/ops/conv.rs weight_grad_splits): the
    // first split ends halfway through a 32-wide k slice, the second at K.
    let mut rng = test_rng("conv_tf32_bwd_weight");
    let shapes = TF32_SHAPES.iter().chain(&[(4, 2, 10, 10, 3, 3, 1, 1)]);
    for dev in kernel_devices("conv_tf32_bwd_weight") {
        for &s in shapes.clone() {
            let c = case(&mut rng, s);
            let what = format!("tf32 conv backward weight {s:?}");
            check_tf32_backward(&what, backward_weight_of, (&c.dy, &c.x), &c, &dev);
        }
    }
}

#[test]
fn conv_tf32_backward_weight_kernel_has_no_races() {
    check_tf32_backward_has_no_races("conv_tf32_bwd_weight_races", backward_weight_of, |c| {
        (&c.dy, &c.x)
    });
}
