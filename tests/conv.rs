//! kernels/conv.cu against the cpu reference, the cpu reference against a direct loop, and
//! finite-difference gradients of the convolution on cpu.
mod common;

use common::gradcheck::check_gradients;
use common::*;
use dalemeetslangevin::device::EmuSchedule;
use dalemeetslangevin::nn::{Conv2dCfg, ConvPrecision};
use dalemeetslangevin::ops;
use dalemeetslangevin::ops::conv::{
    conv2d, conv2d_add, conv2d_backward_bias, conv2d_backward_data, conv2d_backward_weight,
};
use dalemeetslangevin::ops::conv_precision::{round_to_bf16, round_to_tf32};
use dalemeetslangevin::{Device, Tensor};

/// One convolution: x [batch, c_in, h, w], w [c_out, c_in, kernel[0], kernel[1]], PyTorch's
/// `stride`, `padding=(ph, pw)` and `dilation`.
#[derive(Clone, Copy, Debug)]
struct Shape {
    batch: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    kernel: [usize; 2],
    padding: [usize; 2],
    stride: usize,
    dilation: usize,
}

/// (batch, c_in, h, w, c_out, kernel, padding, dilation): a square kernel at stride 1, the same
/// padding on both axes.
const fn square(s: (usize, usize, usize, usize, usize, usize, usize, usize)) -> Shape {
    let (batch, c_in, h, w, c_out, k, pad, dilation) = s;
    Shape {
        batch,
        c_in,
        h,
        w,
        c_out,
        kernel: [k, k],
        padding: [pad, pad],
        stride: 1,
        dilation,
    }
}

impl Shape {
    const fn kernel(self, kh: usize, kw: usize) -> Self {
        Self {
            kernel: [kh, kw],
            ..self
        }
    }
    const fn padding(self, ph: usize, pw: usize) -> Self {
        Self {
            padding: [ph, pw],
            ..self
        }
    }
    const fn stride(self, stride: usize) -> Self {
        Self { stride, ..self }
    }

    /// The output's height and width by PyTorch's formula.
    fn out_size(&self) -> [usize; 2] {
        let out = |size: usize, pad: usize, k: usize| {
            (size + 2 * pad - self.dilation * (k - 1) - 1) / self.stride + 1
        };
        [
            out(self.h, self.padding[0], self.kernel[0]),
            out(self.w, self.padding[1], self.kernel[1]),
        ]
    }

    fn cfg(&self) -> Conv2dCfg {
        Conv2dCfg {
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            precision: ConvPrecision::Fp32,
        }
    }
}

/// Odd sizes, channels across the 64-wide tile, 1x1, dilations 2 and 4, more than one split of
/// the weight gradient, size 1, and a dilation wider than the image (some taps read nothing but
/// padding). The cpu runs the dilation-4 ones over regions of constant valid taps
/// (src/ops/conv/regions.rs), whose unit tests take more edge shapes against im2col.
const SHAPES: &[Shape] = &[
    square((2, 3, 7, 7, 5, 3, 1, 1)),
    square((1, 5, 13, 11, 3, 3, 2, 2)),
    square((2, 4, 9, 10, 6, 3, 4, 4)),
    square((3, 5, 6, 5, 7, 1, 0, 1)),
    square((1, 1, 1, 1, 1, 1, 0, 1)),
    square((2, 3, 8, 8, 70, 3, 1, 1)),
    square((4, 2, 12, 12, 3, 3, 1, 1)),
    square((1, 2, 5, 6, 2, 3, 0, 1)),
    square((2, 2, 3, 4, 3, 3, 4, 4)),
];

/// 3x3 "same" convolutions with channels enough that the cpu runs them by Winograd's
/// F(2x2, 3x3) (src/ops/conv/winograd.rs: `c_in c_out >= 32 (c_in + c_out)`, dilation 1 or 2):
/// odd sizes (a last tile of one output), more input than output channels and the reverse, the
/// least channels it takes, a single pixel, and dilation 2 (classes of unequal length; its
/// weight gradient runs im2col). Dilation 4 is tested against im2col in the module's unit tests.
const WINOGRAD_SHAPES: &[Shape] = &[
    square((2, 80, 7, 7, 81, 3, 1, 1)),
    square((1, 96, 5, 6, 80, 3, 1, 1)),
    square((2, 80, 4, 3, 128, 3, 1, 1)),
    square((1, 64, 6, 5, 64, 3, 1, 1)),
    square((1, 80, 1, 1, 80, 3, 1, 1)),
    square((2, 72, 9, 7, 72, 3, 2, 2)),
];

/// The convolutions of an InceptionV3 the shapes above lack: stride 2, 1x7 and 7x1 kernels with
/// padding on one axis only.
const STRIDED_SHAPES: &[Shape] = &[
    // 3x3 at stride 2 without padding, odd and even sizes (no output reads the last of the 8
    // rows), then with padding 1.
    square((2, 3, 9, 9, 4, 3, 0, 1)).stride(2),
    square((2, 3, 8, 7, 4, 3, 0, 1)).stride(2),
    square((1, 2, 8, 8, 3, 3, 1, 1)).stride(2),
    // padding=(0, 3) and (3, 0): "same" size at stride 1 (the cpu's one-run path) ...
    square((2, 4, 6, 9, 5, 1, 0, 1)).kernel(1, 7).padding(0, 3),
    square((2, 4, 9, 6, 5, 1, 0, 1)).kernel(7, 1).padding(3, 0),
    // ... padding on the other axis, so the output is narrower or wider than the input (for a
    // 1x1, no longer the input itself) ...
    square((1, 3, 9, 5, 4, 1, 0, 1)).kernel(7, 1).padding(0, 3),
    square((2, 3, 4, 5, 3, 1, 0, 1)).padding(0, 1),
    // ... and at stride 2.
    square((2, 3, 9, 10, 4, 1, 0, 1))
        .kernel(1, 7)
        .padding(0, 3)
        .stride(2),
    square((1, 3, 10, 9, 4, 1, 0, 1))
        .kernel(7, 1)
        .padding(3, 0)
        .stride(2),
    // Stride 2 with dilation 2; a 1x1 at stride 2 (not the input itself, as at stride 1).
    square((2, 3, 11, 10, 5, 3, 2, 2)).stride(2),
    square((2, 4, 7, 8, 3, 1, 0, 1)).stride(2),
    // One column, as wide as its output at stride 2 (not the cpu's stride-1 one-run path).
    square((2, 3, 5, 1, 4, 3, 1, 1)).stride(2),
    // Channels across the 64-wide tile; 4 x 17 x 17 output pixels, several weight-gradient
    // splits.
    square((1, 3, 9, 9, 70, 3, 1, 1)).stride(2),
    square((4, 2, 33, 33, 3, 3, 1, 1)).stride(2),
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

fn case(rng: &mut rand::rngs::StdRng, s: Shape) -> Case {
    let ([kh, kw], [ho, wo]) = (s.kernel, s.out_size());
    let (n, ci, co) = (s.batch, s.c_in, s.c_out);
    Case {
        x: random_vec(rng, n * ci * s.h * s.w, -1.0, 1.0),
        w: random_vec(rng, co * ci * kh * kw, -1.0, 1.0),
        b: random_vec(rng, co, -1.0, 1.0),
        dy: random_vec(rng, n * co * ho * wo, -1.0, 1.0),
        x_shape: [n, ci, s.h, s.w],
        w_shape: [co, ci, kh, kw],
        y_shape: [n, co, ho, wo],
        cfg: s.cfg(),
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

/// Each output's sum of |products| in every pass of [`run_all`]: the passes are linear in each
/// operand, so running them on the absolute values sums |a| |b| (in f32, whose rounding is
/// negligible here: no terms cancel).
fn magnitudes(c: &Case) -> [Vec<f32>; 5] {
    let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect();
    let c = Case {
        x: abs(&c.x),
        w: abs(&c.w),
        b: abs(&c.b),
        dy: abs(&c.dy),
        ..*c
    };
    run_all(&c, &Device::Cpu)
}

/// Every pass of every shape on the emulator (both schedules) and cuda against the cpu.
fn check_kernels_match_cpu(test: &str, shapes: &[Shape]) {
    let mut rng = test_rng(test);
    for dev in kernel_devices(test) {
        for &s in shapes {
            let c = case(&mut rng, s);
            let (want, got) = (run_all(&c, &Device::Cpu), run_all(&c, &dev));
            let names = [
                "forward",
                "forward without bias",
                "backward data",
                "backward weight",
                "backward bias",
            ];
            let magnitude = magnitudes(&c);
            for (((g, w), m), name) in got.iter().zip(&want).zip(&magnitude).zip(names) {
                let what = format!("conv {name} {s:?} on {dev}");
                assert_within(&what, g, w, m, 2.0 * FP32_REORDER_TOL);
            }
        }
    }
}

#[test]
fn conv_kernels_match_cpu_reference() {
    check_kernels_match_cpu("conv_kernels", SHAPES);
}

#[test]
fn winograd_shapes_kernels_match_cpu_reference() {
    check_kernels_match_cpu("conv_winograd_kernels", WINOGRAD_SHAPES);
}

#[test]
fn strided_conv_kernels_match_cpu_reference() {
    check_kernels_match_cpu("conv_strided_kernels", STRIDED_SHAPES);
}

/// Threads resumed in reverse order between barriers must give the same bits.
fn check_kernels_have_no_races(test: &str, s: Shape) {
    let mut rng = test_rng(test);
    let c = case(&mut rng, s);
    let fwd = run_all(&c, &Device::Emu(EmuSchedule::Forward));
    let rev = run_all(&c, &Device::Emu(EmuSchedule::Reverse));
    for (a, b) in fwd.iter().zip(&rev) {
        assert_eq!(a, b, "{s:?}");
    }
}

#[test]
fn conv_kernels_have_no_races() {
    check_kernels_have_no_races("conv_races", square((2, 3, 7, 7, 5, 3, 1, 1)));
}

/// A stride-2 1x7 convolution with padding=(0, 3): the strided backward-data gather.
const STRIDED_RACE_SHAPE: Shape = square((2, 3, 9, 10, 5, 1, 0, 1))
    .kernel(1, 7)
    .padding(0, 3)
    .stride(2);

#[test]
fn strided_conv_kernels_have_no_races() {
    check_kernels_have_no_races("conv_strided_races", STRIDED_RACE_SHAPE);
}

/// The convolution written as its definition (PyTorch's formula), independent of im2col, and
/// each output's sum |x| |w| + |bias|: the size its rounding errors scale with.
fn direct_conv(c: &Case) -> (Vec<f32>, Vec<f32>) {
    let [n, ci, h, w] = c.x_shape;
    let [co, _, kh, kw] = c.w_shape;
    let [_, _, ho, wo] = c.y_shape;
    let [ph, pw] = c.cfg.padding.map(|p| p as isize);
    let (s, d) = (c.cfg.stride as isize, c.cfg.dilation as isize);
    let mut y = vec![0.0f32; n * co * ho * wo];
    let mut magnitude = vec![0.0f32; y.len()];
    for b in 0..n {
        for o in 0..co {
            for oh in 0..ho {
                for ow in 0..wo {
                    let mut acc = c.b[o] as f64;
                    let mut size = c.b[o].abs() as f64;
                    for i in 0..ci {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let ih = oh as isize * s - ph + ki as isize * d;
                                let iw = ow as isize * s - pw + kj as isize * d;
                                if ih < 0 || iw < 0 || ih >= h as isize || iw >= w as isize {
                                    continue;
                                }
                                let xv = c.x[((b * ci + i) * h + ih as usize) * w + iw as usize];
                                let product =
                                    xv as f64 * c.w[((o * ci + i) * kh + ki) * kw + kj] as f64;
                                acc += product;
                                size += product.abs();
                            }
                        }
                    }
                    let at = ((b * co + o) * ho + oh) * wo + ow;
                    y[at] = acc as f32;
                    magnitude[at] = size as f32;
                }
            }
        }
    }
    (y, magnitude)
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// How far an fp32 convolution may be from the f64 definition, in units of each output's
/// sum |x| |w| + |bias|. Measured over 40 runs of every shape here: at most 2 ULP, for im2col and
/// Winograd alike; a lost tap moves an output by about 1/(c_in k_h k_w) of it (1e-3 at 80
/// channels), hundreds of times more. A fixed tolerance failed by chance on outputs that cancel.
const FP32_REORDER_TOL: f32 = 16.0 * ULP;

/// The cpu forward against [`direct_conv`], and its backward passes against the forward: the
/// forward without bias is linear in x and in w, so with dx and dw its adjoints,
/// <dy, y> = <dx, x> = <dw, w>.
fn check_cpu_matches_definition(test: &str, shapes: &[Shape]) {
    let mut rng = test_rng(test);
    for &s in shapes {
        let c = case(&mut rng, s);
        let [y, y_no_bias, dx, dw, _] = run_all(&c, &Device::Cpu);
        let (want_y, magnitude) = direct_conv(&c);
        assert_within(
            &format!("cpu conv {s:?}"),
            &y,
            &want_y,
            &magnitude,
            FP32_REORDER_TOL,
        );
        let want = dot(&c.dy, &y_no_bias);
        // Each pass rounds its sums to f32 (a relative error of about 1e-6 of |dy| |y| at
        // these depths); a lost or misplaced tap moves the sum by far more.
        let tol = 1e-5 * (1.0 + dot(&c.dy, &c.dy).sqrt() * dot(&y_no_bias, &y_no_bias).sqrt());
        for (name, got) in [
            ("backward data", dot(&dx, &c.x)),
            ("backward weight", dot(&dw, &c.w)),
        ] {
            assert!(
                (got - want).abs() <= tol,
                "cpu conv {name} {s:?}: <grad, input> {got} vs <dy, y> {want}"
            );
        }
    }
}

#[test]
fn cpu_conv_matches_definition() {
    check_cpu_matches_definition("conv_definition", SHAPES);
}

#[test]
fn winograd_cpu_conv_matches_definition() {
    check_cpu_matches_definition("conv_winograd_definition", WINOGRAD_SHAPES);
}

#[test]
fn strided_cpu_conv_matches_definition() {
    check_cpu_matches_definition("conv_strided_definition", STRIDED_SHAPES);
}

/// Central differences of the cpu convolution (with bias) through the tape.
fn check_conv_gradients(test: &str, shapes: &[Shape]) {
    let mut rng = test_rng(test);
    for &s in shapes {
        let [kh, kw] = s.kernel;
        let (n, ci, co) = (s.batch, s.c_in, s.c_out);
        let inputs = vec![
            (
                random_vec(&mut rng, n * ci * s.h * s.w, -1.0, 1.0),
                vec![n, ci, s.h, s.w],
            ),
            (
                random_vec(&mut rng, co * ci * kh * kw, -1.0, 1.0),
                vec![co, ci, kh, kw],
            ),
            (random_vec(&mut rng, co, -1.0, 1.0), vec![co]),
        ];
        let cfg = s.cfg();
        check_gradients("conv2d", &mut rng, &inputs, 1e-2, 2e-3, &move |tape, v| {
            tape.conv2d(&v[0], &v[1], Some(&v[2]), cfg)
        });
    }
}

#[test]
fn conv_gradients_match_finite_differences() {
    check_conv_gradients(
        "conv_gradcheck",
        &[
            square((2, 2, 5, 4, 3, 3, 1, 1)),
            square((1, 3, 7, 6, 2, 3, 2, 2)),
            square((2, 2, 3, 3, 2, 1, 0, 1)),
            square((1, 2, 3, 4, 2, 3, 4, 4)),
        ],
    );
}

#[test]
fn strided_conv_gradients_match_finite_differences() {
    check_conv_gradients(
        "conv_strided_gradcheck",
        &[
            square((2, 2, 7, 6, 3, 3, 1, 1)).stride(2),
            square((2, 2, 9, 8, 2, 3, 0, 1)).stride(2),
            square((1, 2, 5, 9, 2, 1, 0, 1))
                .kernel(1, 7)
                .padding(0, 3)
                .stride(2),
            square((1, 2, 9, 5, 2, 1, 0, 1))
                .kernel(7, 1)
                .padding(3, 0)
                .stride(2),
            square((1, 2, 8, 7, 2, 3, 2, 2)).stride(2),
        ],
    );
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
            dilation: 4,
            ..Conv2dCfg::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("smaller than the dilated kernel"), "{err}");
}

#[test]
fn empty_batches_and_channels_are_errors_on_every_pass_and_device() {
    // Not a panic (the cpu's weight gradient divided the batch into groups of none) nor a kernel
    // reading index -1 (the gathers clamp to the last sample, row or column).
    let devices = [Device::Cpu, Device::Emu(EmuSchedule::Forward)];
    let shapes = [
        ([0, 64, 5, 5], [64, 64, 3, 3]),
        ([2, 0, 5, 5], [4, 0, 3, 3]),
        ([2, 32, 5, 5], [0, 32, 3, 3]),
    ];
    for dev in &devices {
        for (x_shape, w_shape) in shapes {
            for precision in [
                ConvPrecision::Fp32,
                ConvPrecision::Tf32,
                ConvPrecision::Bf16,
            ] {
                let cfg = Conv2dCfg::same(3, 1).with_precision(precision);
                let x = Tensor::zeros(&x_shape, dev).unwrap();
                let w = Tensor::zeros(&w_shape, dev).unwrap();
                let y_shape = [x_shape[0], w_shape[0], 5, 5];
                let dy = Tensor::zeros(&y_shape, dev).unwrap();
                let errors = [
                    conv2d(&x, &w, None, cfg).map(|_| ()),
                    conv2d_backward_data(&dy, &w, &x_shape, cfg).map(|_| ()),
                    conv2d_backward_weight(&dy, &x, &w_shape, cfg).map(|_| ()),
                ];
                for e in errors {
                    let e = e.unwrap_err().to_string();
                    assert!(
                        e.contains("empty axis"),
                        "{x_shape:?} {w_shape:?} on {dev}: {e}"
                    );
                }
            }
        }
    }
}

#[test]
fn strided_conv_shape_errors_are_reported() {
    let x = Tensor::zeros(&[1, 3, 4, 4], &Device::Cpu).unwrap();
    let w = Tensor::zeros(&[2, 3, 3, 3], &Device::Cpu).unwrap();
    for cfg in [
        Conv2dCfg::same(3, 1).with_stride(0),
        Conv2dCfg {
            dilation: 0,
            ..Conv2dCfg::default()
        },
    ] {
        let err = conv2d(&x, &w, None, cfg).unwrap_err().to_string();
        assert!(
            err.contains("stride and dilation must be at least 1"),
            "{err}"
        );
    }
    // A 1x7 kernel on 4 columns needs padding 2 on the column axis, whatever the stride; padding
    // on the row axis does not help.
    let w = Tensor::zeros(&[2, 3, 1, 7], &Device::Cpu).unwrap();
    for cfg in [
        Conv2dCfg::padded(0, 1),
        Conv2dCfg::padded(3, 0),
        Conv2dCfg::padded(0, 1).with_stride(2),
    ] {
        let err = conv2d(&x, &w, None, cfg).unwrap_err().to_string();
        assert!(err.contains("smaller than the dilated kernel"), "{err}");
    }
    let y = conv2d(&x, &w, None, Conv2dCfg::padded(0, 2)).unwrap();
    assert_eq!(y.shape(), [1, 2, 4, 2]);
    // The backward passes check the same settings.
    let dy = Tensor::zeros(&[1, 2, 4, 2], &Device::Cpu).unwrap();
    let bad = Conv2dCfg::padded(0, 2).with_stride(0);
    assert!(conv2d_backward_data(&dy, &w, x.shape(), bad).is_err());
    assert!(conv2d_backward_weight(&dy, &x, w.shape(), bad).is_err());
}

#[test]
fn strided_conv_output_size_is_pytorchs() {
    // PyTorch rounds (size + 2 pad - dil (k - 1) - 1) / stride down: InceptionV3's stride-2
    // 3x3 convolutions take 299 to 149, 35 to 17 and 17 to 8; padding=(0, 3) keeps a 1x7's
    // 17x17 at stride 1 and halves it, rounded up, at stride 2.
    let size = |h: usize, w: usize, k: [usize; 2], cfg: Conv2dCfg| {
        let x = Tensor::zeros(&[1, 1, h, w], &Device::Cpu).unwrap();
        let w = Tensor::zeros(&[1, 1, k[0], k[1]], &Device::Cpu).unwrap();
        conv2d(&x, &w, None, cfg).unwrap().shape()[2..].to_vec()
    };
    let s2 = Conv2dCfg::default().with_stride(2);
    assert_eq!(size(299, 299, [3, 3], s2), [149, 149]);
    assert_eq!(size(35, 35, [3, 3], s2), [17, 17]);
    assert_eq!(size(17, 17, [3, 3], s2), [8, 8]);
    assert_eq!(size(8, 7, [3, 3], s2), [3, 3]);
    assert_eq!(size(17, 17, [1, 7], Conv2dCfg::padded(0, 3)), [17, 17]);
    assert_eq!(size(17, 17, [7, 1], Conv2dCfg::padded(3, 0)), [17, 17]);
    assert_eq!(
        size(17, 17, [1, 7], Conv2dCfg::padded(0, 3).with_stride(2)),
        [9, 9]
    );
    let d2 = Conv2dCfg {
        dilation: 2,
        ..Conv2dCfg::padded(2, 1).with_stride(2)
    };
    assert_eq!(size(11, 10, [3, 3], d2), [6, 4]);
}

#[test]
fn conv_cfg_constructors_name_pytorchs_arguments() {
    let cfg = |stride, padding, dilation| Conv2dCfg {
        stride,
        padding,
        dilation,
        precision: ConvPrecision::Fp32,
    };
    assert_eq!(Conv2dCfg::default(), cfg(1, [0, 0], 1));
    assert_eq!(Conv2dCfg::same(3, 2), cfg(1, [2, 2], 2));
    assert_eq!(Conv2dCfg::same(1, 1), cfg(1, [0, 0], 1));
    assert_eq!(Conv2dCfg::padded(0, 3), cfg(1, [0, 3], 1));
    assert_eq!(Conv2dCfg::padded(3, 0).with_stride(2), cfg(2, [3, 0], 1));
    assert_eq!(
        Conv2dCfg::padded(0, 3)
            .with_stride(2)
            .with_precision(ConvPrecision::Tf32),
        Conv2dCfg {
            precision: ConvPrecision::Tf32,
            ..cfg(2, [0, 3], 1)
        }
    );
}

/// Shapes for the tensor-core forward (tf32 and bf16): odd sizes, K = 63 over two 32-wide slices, c_out
/// across the 64-wide tile, 1x1, size 1. Few and small: the emulator runs every lane's mma.
const MMA_SHAPES: &[Shape] = &[
    square((2, 3, 7, 7, 5, 3, 1, 1)),
    square((1, 7, 6, 5, 9, 3, 1, 1)),
    square((1, 2, 9, 8, 3, 3, 2, 2)),
    square((3, 5, 6, 5, 7, 1, 0, 1)),
    square((1, 1, 1, 1, 1, 1, 0, 1)),
    square((2, 3, 8, 8, 70, 3, 1, 1)),
];

/// Shapes for the channel-slice forward (input channels a multiple of 32, weights reordered
/// tap-major, 64 x 128 tiles): part of a column tile, two column tiles, c_out across the 64-row
/// tile with dilation 2, a 1x1, and the InceptionV3's stride 2 and 1x7.
const MMA_CHANNEL_SLICE_SHAPES: &[Shape] = &[
    square((2, 32, 5, 6, 9, 3, 1, 1)),
    square((3, 32, 8, 8, 4, 3, 1, 1)),
    square((1, 64, 5, 4, 70, 3, 2, 2)),
    square((2, 32, 3, 5, 3, 1, 0, 1)),
    square((1, 32, 9, 7, 6, 3, 1, 1)).stride(2),
    square((1, 32, 6, 9, 5, 1, 0, 1)).kernel(1, 7).padding(0, 3),
];

/// Shapes for the channel-slice backward data (output channels a multiple of 32, stride 1):
/// part of a column tile, two column tiles, c_in across the 64-row tile with dilation 2, no
/// padding (taps reaching past both edges of dy), a 1x1 and a 1x7.
const MMA_BACKWARD_CHANNEL_SLICE_SHAPES: &[Shape] = &[
    square((2, 5, 5, 6, 32, 3, 1, 1)),
    square((3, 4, 8, 8, 32, 3, 1, 1)),
    square((1, 70, 5, 4, 64, 3, 2, 2)),
    square((1, 3, 6, 7, 32, 3, 0, 1)),
    square((2, 3, 3, 5, 32, 1, 0, 1)),
    square((1, 5, 6, 9, 32, 1, 0, 1)).kernel(1, 7).padding(0, 3),
];

/// Shapes for the channel-slice backward weight (input channels a multiple of 64): c_out
/// across the 64-row tile, dilation 2, stride 2, a 1x1 and a 1x7, and K = 2 x 16 x 16 = 512 in two
/// splits of 256 (src/ops/conv.rs weight_grad_splits), the second split reaching K.
const MMA_BACKWARD_WEIGHT_CHANNEL_SLICE_SHAPES: &[Shape] = &[
    square((2, 64, 5, 6, 3, 3, 1, 1)),
    square((1, 64, 5, 4, 70, 3, 2, 2)),
    square((1, 64, 9, 7, 4, 3, 1, 1)).stride(2),
    square((2, 128, 3, 5, 2, 1, 0, 1)),
    square((1, 64, 6, 9, 3, 1, 0, 1)).kernel(1, 7).padding(0, 3),
    square((2, 64, 16, 16, 2, 3, 1, 1)),
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
    check_rounding_cases("tf32", round_to_tf32, &cases);

    check_random_rounding("tf32", round_to_tf32, 13);
}

/// `round` gives each case's wanted bits, keeps the sign of zero and NaN.
fn check_rounding_cases(name: &str, round: fn(f32) -> f32, cases: &[(f32, f32)]) {
    for &(v, want) in cases {
        let got = round(v);
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "{name}({v:e}) = {got:e}, want {want:e}"
        );
    }
    assert_eq!(round(-0.0).to_bits(), (-0.0f32).to_bits(), "{name}(-0)");
    assert!(round(f32::NAN).is_nan(), "{name}(NaN)");
}

/// `round` drops the low `dropped` of fp32's 23 mantissa bits, is within half a unit of the last
/// kept bit of each of 10,000 random values, and is idempotent.
fn check_random_rounding(name: &str, round: fn(f32) -> f32, dropped: i32) {
    let mut rng = test_rng(&format!("{name}_rounding"));
    for v in random_vec(&mut rng, 10_000, -1e3, 1e3) {
        let r = round(v);
        assert_eq!(
            r.to_bits() & ((1 << dropped) - 1),
            0,
            "{name}({v}) = {r} keeps low bits"
        );
        assert!(
            (r - v).abs() <= v.abs() * 2f32.powi(dropped - 24),
            "{name}({v}) = {r}"
        );
        assert_eq!(round(r), r, "{name} rounding of {r} is not idempotent");
    }
}

#[test]
fn bf16_rounding_matches_cvt_rn() {
    let f = f32::from_bits;
    let cases = [
        (1.0, 1.0),
        (0.0, 0.0),
        // 0x3dcccccd rounds up to the bf16 value nearest 0.1.
        (0.1, f(0x3dcd_0000)),
        // Below half a bf16 unit (2^-8 at 1) rounds down, above it up.
        (f(0x3f80_7fff), 1.0),
        (f(0x3f80_8001), f(0x3f81_0000)),
        // Exactly half: to the even neighbour, down from 1 (even), up from 1 + 2^-7 (odd).
        (f(0x3f80_8000), 1.0),
        (f(0x3f81_8000), f(0x3f82_0000)),
        (f(0xbf81_8000), f(0xbf82_0000)),
        // The carry runs into the exponent.
        (f(0x3fff_ffff), 2.0),
        // Subnormals round on the same bits.
        (f(0x0000_8001), f(0x0001_0000)),
        (f(0x0000_8000), 0.0),
        (f32::MAX, f32::INFINITY),
        (f32::NEG_INFINITY, f32::NEG_INFINITY),
    ];
    check_rounding_cases("bf16", round_to_bf16, &cases);
    assert!(
        round_to_bf16(f(0x7f80_0001)).is_nan(),
        "a NaN whose payload is below the cut"
    );

    // The `half` crate's conversion, an independent implementation of the same rounding.
    let half = |v: f32| half::bf16::from_f32(v).to_f32();
    for (v, _) in cases {
        assert_eq!(round_to_bf16(v).to_bits(), half(v).to_bits(), "{v:e}");
    }
    let mut rng = test_rng("bf16_vs_half");
    for v in random_vec(&mut rng, 10_000, -1e3, 1e3) {
        let (ours, theirs) = (round_to_bf16(v), half(v));
        assert_eq!(
            ours.to_bits(),
            theirs.to_bits(),
            "bf16({v:e}) vs the half crate's"
        );
    }
    check_random_rounding("bf16", round_to_bf16, 16);
}

/// The tensor-core precisions the kernels are checked in.
const MMA_PRECISIONS: [ConvPrecision; 2] = [ConvPrecision::Tf32, ConvPrecision::Bf16];

/// The forward of `c` on `dev` in a tensor-core `precision` against the cpu's reference in it
/// and against fp32, element by element and in aggregate.
fn check_mma_forward(what: &str, c: &Case, dev: &Device, precision: ConvPrecision) {
    let got = forward(c, dev, precision);
    let abs = |v: &[f32]| v.iter().map(|e| e.abs()).collect::<Vec<_>>();
    // The same rounded operands and fp32 sums in another order: within a few ulp of the size
    // of the sums, sum |w x| + |b|.
    let want = forward(c, &Device::Cpu, precision);
    let size_of_sums = forward_of(
        &abs(&c.x),
        &abs(&c.w),
        Some(&abs(&c.b)),
        c,
        &Device::Cpu,
        ConvPrecision::Fp32,
    );
    let what = format!("{precision} {what} on {dev}");
    assert_within(&what, &got, &want, &size_of_sums, MMA_REORDER_TOL);
    // Against fp32: each product is off by at most product_rounding of its size, so
    // |error| <= product_rounding sum |w x|, plus fp32 rounding.
    let rounding = product_rounding(precision);
    let fp32 = forward(c, &Device::Cpu, ConvPrecision::Fp32);
    let magnitude = forward_of(
        &abs(&c.x),
        &abs(&c.w),
        None,
        c,
        &Device::Cpu,
        ConvPrecision::Fp32,
    );
    for (i, ((&g, &f), &m)) in got.iter().zip(&fp32).zip(&magnitude).enumerate() {
        let bound = m * rounding + 1e-5 * (1.0 + f.abs());
        assert!(
            (g - f).abs() <= bound,
            "{what}: element {i}: {g} vs fp32 {f}, bound {bound}"
        );
    }
    // In aggregate, against the size of the sums, sum |w x| + |b| (not of the outputs, which
    // the bias can cancel to near zero): the bound above summed in squares gives
    // |err| <= product_rounding |size| plus fp32 rounding, a few ulp of the size.
    let (err, size) = got
        .iter()
        .zip(&fp32)
        .zip(&size_of_sums)
        .fold((0.0, 0.0), |(e, n), ((&g, &f), &m)| {
            (e + ((g - f) as f64).powi(2), n + (m as f64).powi(2))
        });
    let relative = (err / size.max(f64::MIN_POSITIVE)).sqrt();
    assert!(
        relative <= rounding as f64 + 1e-5,
        "{what}: error {relative:e} of the sums' size vs fp32"
    );
}

#[test]
fn conv_tensor_core_kernels_match_their_reference() {
    // The general kernel's shapes, then the channel-slice form's, in tf32 and bf16.
    let mut rng = test_rng("conv_mma");
    for dev in kernel_devices("conv_mma") {
        for precision in MMA_PRECISIONS {
            for &s in MMA_SHAPES.iter().chain(MMA_CHANNEL_SLICE_SHAPES) {
                let c = case(&mut rng, s);
                check_mma_forward(&format!("conv {s:?}"), &c, &dev, precision);
            }
        }
    }
}

#[test]
fn conv_tensor_core_kernels_have_no_races() {
    let mut rng = test_rng("conv_mma_races");
    // The general forward, then the channel-slice forward (and its weight reordering).
    for precision in MMA_PRECISIONS {
        for s in [
            square((2, 3, 7, 7, 5, 3, 1, 1)),
            square((2, 32, 5, 6, 9, 3, 1, 1)),
        ] {
            let c = case(&mut rng, s);
            let fwd = forward(&c, &Device::Emu(EmuSchedule::Forward), precision);
            let rev = forward(&c, &Device::Emu(EmuSchedule::Reverse), precision);
            assert_eq!(fwd, rev, "{precision} {s:?}");
        }
    }
}

#[test]
fn conv_fused_with_its_residual_sum_is_bit_for_bit_the_two_ops() {
    // Every form of the forward: the cpu's im2col, Winograd (64 -> 64) and regions (dilation 4
    // at 14x14 is cut by its padding), the kernels' general and channel-slice forms in each
    // precision, with and without a bias.
    let mut rng = test_rng("conv_add");
    let shapes = [
        square((2, 3, 7, 7, 5, 3, 1, 1)),
        square((1, 64, 6, 6, 64, 3, 1, 1)),
        square((1, 32, 14, 14, 8, 3, 4, 4)),
        square((2, 32, 5, 6, 9, 3, 1, 1)),
    ];
    let precisions = [
        ConvPrecision::Fp32,
        ConvPrecision::Tf32,
        ConvPrecision::Bf16,
    ];
    for dev in std::iter::once(Device::Cpu).chain(kernel_devices("conv_add")) {
        for s in shapes {
            let c = case(&mut rng, s);
            let residual = random_vec(&mut rng, c.dy.len(), -2.0, 2.0);
            for precision in precisions {
                for bias in [Some(&c.b[..]), None] {
                    let cfg = c.cfg.with_precision(precision);
                    let x = Tensor::from_slice(&c.x, &c.x_shape, &dev).unwrap();
                    let w = Tensor::from_slice(&c.w, &c.w_shape, &dev).unwrap();
                    let b = bias.map(|b| Tensor::from_slice(b, &[c.w_shape[0]], &dev).unwrap());
                    let r = Tensor::from_slice(&residual, &c.y_shape, &dev).unwrap();
                    let y = conv2d(&x, &w, b.as_ref(), cfg).unwrap();
                    let want = ops::add(&y, &r).unwrap().to_vec().unwrap();
                    let got = conv2d_add(&x, &w, b.as_ref(), &r, cfg).unwrap();
                    let what = format!("{s:?} {precision} bias {} on {dev}", bias.is_some());
                    assert_eq!(got.to_vec().unwrap(), want, "{what}");
                }
            }
        }
    }
}

#[test]
fn conv_residual_of_another_shape_or_device_is_an_error() {
    let dev = Device::Cpu;
    let x = Tensor::zeros(&[1, 2, 5, 5], &dev).unwrap();
    let w = Tensor::zeros(&[3, 2, 3, 3], &dev).unwrap();
    let cfg = Conv2dCfg::same(3, 1);
    let wrong = Tensor::zeros(&[1, 2, 5, 5], &dev).unwrap();
    let e = conv2d_add(&x, &w, None, &wrong, cfg)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("residual [1, 2, 5, 5]") && e.contains("[1, 3, 5, 5]"),
        "{e}"
    );
    let elsewhere = Tensor::zeros(&[1, 3, 5, 5], &Device::emu()).unwrap();
    assert!(conv2d_add(&x, &w, None, &elsewhere, cfg).is_err());
}

#[test]
fn conv_precision_defaults_to_fp32_and_is_named_as_stored() {
    // Every constructor of a convolution's settings, and so every layer, starts in fp32.
    assert_eq!(Conv2dCfg::default().precision, ConvPrecision::Fp32);
    assert_eq!(Conv2dCfg::same(3, 2).precision, ConvPrecision::Fp32);
    assert_eq!(
        Conv2dCfg::padded(0, 3).with_stride(2).precision,
        ConvPrecision::Fp32
    );
    assert_eq!(ConvPrecision::default(), ConvPrecision::Fp32);
    let mut rng = test_rng("conv_default_precision");
    let c = case(&mut rng, square((2, 3, 7, 7, 5, 3, 1, 1)));
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
    let bf16 = conv2d(&x, &w, None, cfg.with_precision(ConvPrecision::Bf16))
        .unwrap()
        .to_vec()
        .unwrap();
    assert!(bf16 != got && bf16 != tf32, "bf16 is not honoured");

    // The names checkpoints store.
    assert_eq!(ConvPrecision::Tf32.name(), "tf32");
    assert_eq!(ConvPrecision::Bf16.name(), "bf16");
    assert_eq!(ConvPrecision::parse("tf32").unwrap(), ConvPrecision::Tf32);
    assert_eq!(ConvPrecision::parse("bf16").unwrap(), ConvPrecision::Bf16);
    assert_eq!(ConvPrecision::parse("fp32").unwrap(), ConvPrecision::Fp32);
    let err = ConvPrecision::parse("fp16").unwrap_err().to_string();
    assert!(
        err.contains("convolution precision") && err.contains("fp16") && err.contains("bf16"),
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

/// The `pass` on `dev` in a tensor-core `precision` against the cpu's reference in it (the same
/// rounded operands, fp32 sums in another order) and against fp32 element by element: each
/// product is off by at most product_rounding of its size, so |error| <= product_rounding
/// sum |a b| plus fp32 rounding, as for the forward pass.
fn check_mma_backward(
    what: &str,
    pass: BackwardPass,
    (a, b): (&[f32], &[f32]),
    c: &Case,
    dev: &Device,
    precision: ConvPrecision,
) {
    let got = pass(a, b, c, dev, precision);
    let want = pass(a, b, c, &Device::Cpu, precision);
    let abs = |v: &[f32]| v.iter().map(|e| e.abs()).collect::<Vec<_>>();
    let magnitude = pass(&abs(a), &abs(b), c, &Device::Cpu, ConvPrecision::Fp32);
    let what = format!("{precision} {what} on {dev}");
    assert_within(&what, &got, &want, &magnitude, MMA_REORDER_TOL);
    let fp32 = pass(a, b, c, &Device::Cpu, ConvPrecision::Fp32);
    let rounding = product_rounding(precision);
    for (i, ((&g, &f), &m)) in got.iter().zip(&fp32).zip(&magnitude).enumerate() {
        let bound = m * rounding + 1e-5 * (1.0 + f.abs());
        assert!(
            (g - f).abs() <= bound,
            "{what}: element {i}: {g} vs fp32 {f}, bound {bound}"
        );
    }
}

/// The `pass` of `shape` gives the same bits in both emulator schedules, in each tensor-core
/// precision.
fn check_mma_backward_has_no_races(
    test: &str,
    shape: Shape,
    pass: BackwardPass,
    operands: fn(&Case) -> (&[f32], &[f32]),
) {
    let mut rng = test_rng(test);
    let c = case(&mut rng, shape);
    let (a, b) = operands(&c);
    for precision in MMA_PRECISIONS {
        let run = |schedule| pass(a, b, &c, &Device::Emu(schedule), precision);
        assert_eq!(
            run(EmuSchedule::Forward),
            run(EmuSchedule::Reverse),
            "{precision}"
        );
    }
}

#[test]
fn conv_tensor_core_backward_data_kernels_match_their_reference() {
    // The backward-data GEMM (M = C_in, K = C_out taps) on the tensor-core tile: the same
    // shapes as the forward, whose C_in and C_out now play each other's part, then the
    // channel-slice form's.
    let mut rng = test_rng("conv_mma_bwd_data");
    for dev in kernel_devices("conv_mma_bwd_data") {
        for precision in MMA_PRECISIONS {
            for &s in MMA_SHAPES.iter().chain(MMA_BACKWARD_CHANNEL_SLICE_SHAPES) {
                let c = case(&mut rng, s);
                let what = format!("conv backward data {s:?}");
                check_mma_backward(&what, backward_data_of, (&c.dy, &c.w), &c, &dev, precision);
            }
        }
    }
}

#[test]
fn conv_tensor_core_backward_data_kernels_have_no_races() {
    // The general kernel, then the channel-slice one (and its weight reordering).
    for shape in [
        square((2, 3, 7, 7, 5, 3, 1, 1)),
        square((2, 5, 5, 6, 32, 3, 1, 1)),
    ] {
        check_mma_backward_has_no_races("conv_mma_bwd_data_races", shape, backward_data_of, |c| {
            (&c.dy, &c.w)
        });
    }
}

#[test]
fn conv_tensor_core_backward_weight_kernels_match_their_reference() {
    // The split-K backward-weight GEMM (K = batch x output pixels) on the tensor-core tile. The
    // 10x10 batch of 4 has K = 400 in 2 splits of 208 (src/ops/conv.rs weight_grad_splits): the
    // first split ends halfway through a 32-wide k slice, the second at K. Then the
    // channel-slice form's shapes.
    let mut rng = test_rng("conv_mma_bwd_weight");
    let split = [square((4, 2, 10, 10, 3, 3, 1, 1))];
    let shapes = MMA_SHAPES
        .iter()
        .chain(&split)
        .chain(MMA_BACKWARD_WEIGHT_CHANNEL_SLICE_SHAPES);
    for dev in kernel_devices("conv_mma_bwd_weight") {
        for precision in MMA_PRECISIONS {
            for &s in shapes.clone() {
                let c = case(&mut rng, s);
                let what = format!("conv backward weight {s:?}");
                check_mma_backward(
                    &what,
                    backward_weight_of,
                    (&c.dy, &c.x),
                    &c,
                    &dev,
                    precision,
                );
            }
        }
    }
}

#[test]
fn conv_tensor_core_backward_weight_kernels_have_no_races() {
    // The general kernel, then the channel-slice one (whose epilogue reorders its columns).
    for shape in [
        square((2, 3, 7, 7, 5, 3, 1, 1)),
        square((2, 64, 5, 6, 3, 3, 1, 1)),
    ] {
        check_mma_backward_has_no_races(
            "conv_mma_bwd_weight_races",
            shape,
            backward_weight_of,
            |c| (&c.dy, &c.x),
        );
    }
}

#[test]
fn strided_conv_tensor_core_kernels_match_their_reference() {
    // All three tensor-core passes on the strided shapes: the forward's and weight gradient's
    // strided gather, the backward data's exact-quotient gather.
    let mut rng = test_rng("conv_strided_mma");
    for dev in kernel_devices("conv_strided_mma") {
        for precision in MMA_PRECISIONS {
            for &s in STRIDED_SHAPES {
                let c = case(&mut rng, s);
                check_mma_forward(&format!("conv {s:?}"), &c, &dev, precision);
                let what = format!("conv backward data {s:?}");
                check_mma_backward(&what, backward_data_of, (&c.dy, &c.w), &c, &dev, precision);
                let what = format!("conv backward weight {s:?}");
                check_mma_backward(
                    &what,
                    backward_weight_of,
                    (&c.dy, &c.x),
                    &c,
                    &dev,
                    precision,
                );
            }
        }
    }
}

#[test]
fn strided_conv_tensor_core_kernels_have_no_races() {
    let mut rng = test_rng("conv_strided_mma_races");
    let c = case(&mut rng, STRIDED_RACE_SHAPE);
    for precision in MMA_PRECISIONS {
        let run = |schedule| forward(&c, &Device::Emu(schedule), precision);
        assert_eq!(
            run(EmuSchedule::Forward),
            run(EmuSchedule::Reverse),
            "{precision}"
        );
    }
    check_mma_backward_has_no_races(
        "conv_strided_mma_bwd_data_races",
        STRIDED_RACE_SHAPE,
        backward_data_of,
        |c| (&c.dy, &c.w),
    );
    check_mma_backward_has_no_races(
        "conv_strided_mma_bwd_weight_races",
        STRIDED_RACE_SHAPE,
        backward_weight_of,
        |c| (&c.dy, &c.x),
    );
}
