//! kernels/matmul.cu (fp32 and tf32, the plain batched product and the batch sum) against the cpu
//! reference, the cpu reference against the definition, the tape's gradients by finite
//! differences, and the shapes it refuses.
mod common;

use common::gradcheck::check_gradients;
use common::*;
use dalemeetslangevin::autograd::{ParamStore, Tape};
use dalemeetslangevin::device::EmuSchedule;
use dalemeetslangevin::ops::conv_precision::{round_to_bf16, round_to_tf32};
use dalemeetslangevin::ops::matmul::{matmul, matmul_batch_sum};
use dalemeetslangevin::ops::ConvPrecision;
use dalemeetslangevin::{Device, Tensor};

/// The shapes of one product: the batch of each operand (None: a plain matrix), M, N, K.
#[derive(Clone, Copy, Debug)]
struct Shape {
    a_batch: Option<usize>,
    b_batch: Option<usize>,
    m: usize,
    n: usize,
    k: usize,
}

const fn shape(
    a_batch: Option<usize>,
    b_batch: Option<usize>,
    m: usize,
    n: usize,
    k: usize,
) -> Shape {
    Shape {
        a_batch,
        b_batch,
        m,
        n,
        k,
    }
}

/// Against the kernels' 64x64 tile, 16-wide (fp32) and 32-wide (tf32) K slices: one element,
/// sizes across a tile and a slice, K = 1, a large K whose last slice is partial, exact
/// multiples, and a matrix shared by the batch on either side (2-D, and a batch of one).
const SHAPES: &[Shape] = &[
    shape(None, None, 1, 1, 1),
    shape(Some(2), Some(2), 65, 63, 17),
    shape(Some(3), Some(3), 5, 7, 1),
    shape(Some(1), None, 33, 70, 300),
    shape(None, Some(3), 9, 130, 20),
    shape(Some(4), Some(1), 70, 5, 33),
    shape(Some(2), Some(2), 64, 64, 32),
];

/// The four combinations of (trans_a, trans_b).
const TRANSPOSES: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];

/// One product's operands, stored as the transposes say.
struct Case {
    a: Vec<f32>,
    b: Vec<f32>,
    a_shape: Vec<usize>,
    b_shape: Vec<usize>,
    trans_a: bool,
    trans_b: bool,
}

fn case(rng: &mut rand::rngs::StdRng, s: Shape, (trans_a, trans_b): (bool, bool)) -> Case {
    let stored = |batch: Option<usize>, rows: usize, cols: usize| {
        batch
            .map_or(vec![], |b| vec![b])
            .into_iter()
            .chain([rows, cols])
            .collect::<Vec<_>>()
    };
    let a_shape = if trans_a {
        stored(s.a_batch, s.k, s.m)
    } else {
        stored(s.a_batch, s.m, s.k)
    };
    let b_shape = if trans_b {
        stored(s.b_batch, s.n, s.k)
    } else {
        stored(s.b_batch, s.k, s.n)
    };
    Case {
        a: random_vec(rng, a_shape.iter().product(), -1.0, 1.0),
        b: random_vec(rng, b_shape.iter().product(), -1.0, 1.0),
        a_shape,
        b_shape,
        trans_a,
        trans_b,
    }
}

/// Which product: [`matmul`] or [`matmul_batch_sum`].
#[derive(Clone, Copy, Debug)]
enum Product {
    Batched,
    BatchSum,
}

/// The product of operands `a` and `b` (of `c`'s shapes) on `dev`.
fn product_of(
    a: &[f32],
    b: &[f32],
    c: &Case,
    dev: &Device,
    precision: ConvPrecision,
    product: Product,
) -> Vec<f32> {
    let a = Tensor::from_slice(a, &c.a_shape, dev).unwrap();
    let b = Tensor::from_slice(b, &c.b_shape, dev).unwrap();
    let f = match product {
        Product::Batched => matmul,
        Product::BatchSum => matmul_batch_sum,
    };
    f(&a, &b, c.trans_a, c.trans_b, precision)
        .unwrap()
        .to_vec()
        .unwrap()
}

fn run(c: &Case, dev: &Device, precision: ConvPrecision, product: Product) -> Vec<f32> {
    product_of(&c.a, &c.b, c, dev, precision, product)
}

/// sum |a||b| for every output element: what the rounding errors of its sum scale with.
fn magnitude(c: &Case, product: Product) -> Vec<f32> {
    let abs = |v: &[f32]| v.iter().map(|e| e.abs()).collect::<Vec<_>>();
    let (a, b) = (abs(&c.a), abs(&c.b));
    product_of(&a, &b, c, &Device::Cpu, ConvPrecision::Fp32, product)
}

/// The fp32 kernels sum the same products as the cpu in another order (16-wide K slices, FMAs in
/// the tile against the GEMM's blocking). Each sum's rounding errors are bounded by K ulp of
/// sum |a||b| and, for random signs, grow like sqrt(K) ulp of the partial sums, which are
/// themselves about sqrt(K) times smaller than sum |a||b|: about an ulp of it. 8 ulp is the margin.
const FP32_TOL: f32 = 8.0 * ULP;

fn check_fp32_kernels(test: &str, shapes: &[Shape], product: Product) {
    let mut rng = test_rng(test);
    for dev in kernel_devices(test) {
        for &s in shapes {
            for t in TRANSPOSES {
                let c = case(&mut rng, s, t);
                let want = run(&c, &Device::Cpu, ConvPrecision::Fp32, product);
                let got = run(&c, &dev, ConvPrecision::Fp32, product);
                let what = format!("{product:?} {s:?} transposes {t:?} on {dev}");
                assert_within(&what, &got, &want, &magnitude(&c, product), FP32_TOL);
            }
        }
    }
}

#[test]
fn matmul_kernels_match_cpu_reference() {
    check_fp32_kernels("matmul_kernels", SHAPES, Product::Batched);
}

/// The batch sum on the GPU path cuts the batch into runs (src/ops/matmul.rs batch_sum_runs):
/// a batch of 301 one-tile products is 101 runs of 3, the last a run of 1, added by
/// matmul_sum_runs_f32; a batch of 5 is 5 runs of 1; a batch of one is the product itself.
const BATCH_SUM_SHAPES: &[Shape] = &[
    shape(Some(301), Some(301), 3, 4, 5),
    shape(Some(5), Some(1), 65, 9, 17),
    shape(None, Some(5), 7, 66, 3),
    shape(Some(1), Some(1), 20, 30, 40),
];

#[test]
fn matmul_batch_sum_kernels_match_cpu_reference() {
    check_fp32_kernels(
        "matmul_batch_sum_kernels",
        BATCH_SUM_SHAPES,
        Product::BatchSum,
    );
}

/// The tensor-core kernel of `precision` against the cpu's reference in it (the same rounded
/// operands), and against fp32 element by element: each product is off by at most 2^-10 of its
/// size in tf32 (two operands each within 2^-11), 2^-7 in bf16 (each within 2^-8), and the
/// error of the sum by as much of sum |a b|, plus fp32 rounding.
fn check_mma(what: &str, c: &Case, dev: &Device, precision: ConvPrecision, product: Product) {
    let got = run(c, dev, precision, product);
    let want = run(c, &Device::Cpu, precision, product);
    let magnitude = magnitude(c, product);
    let what = format!("{precision} {what} on {dev}");
    assert_within(&what, &got, &want, &magnitude, MMA_REORDER_TOL);
    let fp32 = run(c, &Device::Cpu, ConvPrecision::Fp32, product);
    let rounding = product_rounding(precision);
    assert_within(
        &format!("{what} vs fp32"),
        &got,
        &fp32,
        &magnitude,
        rounding + MMA_REORDER_TOL,
    );
}

/// Few and small: the emulator runs every lane's mma in full.
const MMA_SHAPES: &[Shape] = &[
    shape(None, None, 1, 1, 1),
    shape(Some(2), Some(2), 17, 65, 33),
    shape(Some(1), Some(2), 9, 7, 70),
];

#[test]
fn matmul_tensor_core_kernels_match_their_reference() {
    let mut rng = test_rng("matmul_mma");
    for dev in kernel_devices("matmul_mma") {
        for precision in [ConvPrecision::Tf32, ConvPrecision::Bf16] {
            for &s in MMA_SHAPES {
                for t in TRANSPOSES {
                    let c = case(&mut rng, s, t);
                    let what = format!("{s:?} transposes {t:?}");
                    check_mma(&what, &c, &dev, precision, Product::Batched);
                }
            }
            let s = shape(Some(130), Some(130), 3, 2, 9);
            let c = case(&mut rng, s, (true, false));
            check_mma(
                &format!("batch sum {s:?}"),
                &c,
                &dev,
                precision,
                Product::BatchSum,
            );
        }
    }
}

#[test]
fn matmul_precision_is_honoured_and_rounds_the_operands() {
    // On the cpu, tf32 and bf16 are the fp32 product of the rounded operands, exactly.
    let mut rng = test_rng("matmul_precision");
    let c = case(&mut rng, shape(Some(2), Some(2), 5, 6, 7), (false, true));
    let fp32 = run(&c, &Device::Cpu, ConvPrecision::Fp32, Product::Batched);
    for precision in [ConvPrecision::Tf32, ConvPrecision::Bf16] {
        let round = match precision {
            ConvPrecision::Bf16 => round_to_bf16,
            _ => round_to_tf32,
        };
        let got = run(&c, &Device::Cpu, precision, Product::Batched);
        let rounded = |v: &[f32]| v.iter().map(|&e| round(e)).collect::<Vec<_>>();
        let want = product_of(
            &rounded(&c.a),
            &rounded(&c.b),
            &c,
            &Device::Cpu,
            ConvPrecision::Fp32,
            Product::Batched,
        );
        assert_eq!(got, want, "{precision}");
        assert_ne!(got, fp32, "{precision}");
    }
}

#[test]
fn matmul_kernels_have_no_races() {
    // Threads resumed in reverse order between barriers give the same bits, for every kernel.
    let mut rng = test_rng("matmul_races");
    let runs = [
        (
            shape(Some(2), Some(1), 65, 63, 40),
            ConvPrecision::Fp32,
            Product::Batched,
        ),
        (
            shape(Some(2), Some(2), 33, 20, 40),
            ConvPrecision::Tf32,
            Product::Batched,
        ),
        (
            shape(Some(2), Some(2), 33, 20, 40),
            ConvPrecision::Bf16,
            Product::Batched,
        ),
        (
            shape(Some(301), Some(301), 3, 4, 5),
            ConvPrecision::Fp32,
            Product::BatchSum,
        ),
    ];
    for (s, precision, product) in runs {
        let c = case(&mut rng, s, (true, true));
        let on = |schedule| run(&c, &Device::Emu(schedule), precision, product);
        assert_eq!(
            on(EmuSchedule::Forward),
            on(EmuSchedule::Reverse),
            "{s:?} {precision:?} {product:?}"
        );
    }
}

/// The definition, in f64: sum over k of op(A_b)[m, k] op(B_b)[k, n], per product or summed.
fn definition(c: &Case, s: Shape, product: Product) -> Vec<f32> {
    let (m, n, k) = (s.m, s.n, s.k);
    let batch = s.a_batch.unwrap_or(1).max(s.b_batch.unwrap_or(1));
    let a_at = |z: usize, i: usize, p: usize| {
        let base = if s.a_batch.unwrap_or(1) == 1 {
            0
        } else {
            z * m * k
        };
        c.a[base + if c.trans_a { p * m + i } else { i * k + p }] as f64
    };
    let b_at = |z: usize, p: usize, j: usize| {
        let base = if s.b_batch.unwrap_or(1) == 1 {
            0
        } else {
            z * k * n
        };
        c.b[base + if c.trans_b { j * k + p } else { p * n + j }] as f64
    };
    let entry =
        |z: usize, i: usize, j: usize| (0..k).map(|p| a_at(z, i, p) * b_at(z, p, j)).sum::<f64>();
    match product {
        Product::Batched => (0..batch)
            .flat_map(|z| (0..m).flat_map(move |i| (0..n).map(move |j| (z, i, j))))
            .map(|(z, i, j)| entry(z, i, j) as f32)
            .collect(),
        Product::BatchSum => (0..m)
            .flat_map(|i| (0..n).map(move |j| (i, j)))
            .map(|(i, j)| (0..batch).map(|z| entry(z, i, j)).sum::<f64>() as f32)
            .collect(),
    }
}

#[test]
fn cpu_matmul_matches_definition() {
    // The cpu's strided GEMM views for every transpose, a single product cut into row blocks
    // (200 rows: 96 + 96 + 8), a batch spread over the cores, and the batch sum's groups (a batch
    // of 40: groups of 3).
    let mut rng = test_rng("matmul_cpu_definition");
    let shapes = [
        (shape(None, None, 200, 13, 37), Product::Batched),
        (shape(Some(5), Some(1), 97, 21, 8), Product::Batched),
        (shape(Some(40), Some(40), 7, 9, 11), Product::BatchSum),
        (shape(None, Some(3), 100, 6, 5), Product::BatchSum),
    ];
    for (s, product) in shapes {
        for t in TRANSPOSES {
            let c = case(&mut rng, s, t);
            let got = run(&c, &Device::Cpu, ConvPrecision::Fp32, product);
            let what = format!("cpu {product:?} {s:?} transposes {t:?}");
            assert_within(
                &what,
                &got,
                &definition(&c, s, product),
                &magnitude(&c, product),
                FP32_TOL,
            );
        }
    }
}

#[test]
fn matmul_gradients_match_finite_differences() {
    // The loss is bilinear in the operands, so central differences have no truncation error:
    // only round-off, about 1e-7 sum |r C| / eps, far below the tolerance.
    let mut rng = test_rng("matmul_gradcheck");
    let (m, n, k) = (3, 4, 5);
    let batched = |b: Option<usize>, rows, cols| -> Vec<usize> {
        b.into_iter().chain([rows, cols]).collect()
    };
    // Both batched; a 2-D `a` shared by a batch of 3; `b` a batch of one shared by a batch of 2.
    for (ab, bb) in [(Some(2), Some(2)), (None, Some(3)), (Some(2), Some(1))] {
        for (ta, tb) in TRANSPOSES {
            let a_shape = if ta {
                batched(ab, k, m)
            } else {
                batched(ab, m, k)
            };
            let b_shape = if tb {
                batched(bb, n, k)
            } else {
                batched(bb, k, n)
            };
            let inputs = vec![
                (
                    random_vec(&mut rng, a_shape.iter().product(), -1.0, 1.0),
                    a_shape,
                ),
                (
                    random_vec(&mut rng, b_shape.iter().product(), -1.0, 1.0),
                    b_shape,
                ),
            ];
            check_gradients(
                &format!("matmul batches ({ab:?}, {bb:?}) transposes ({ta}, {tb})"),
                &mut rng,
                &inputs,
                5e-2,
                1e-3,
                &move |t, v| t.matmul(&v[0], &v[1], ta, tb, ConvPrecision::Fp32),
            );
        }
    }
}

#[test]
fn tape_matmul_gradients_on_kernels_match_cpu() {
    // The backward pass's products and batch sums run on the kernel devices too.
    let mut rng = test_rng("matmul_tape_kernels");
    let c = case(&mut rng, shape(None, Some(3), 17, 9, 6), (true, false));
    let dc = random_vec(&mut rng, 3 * 17 * 9, -1.0, 1.0);
    let grads = |dev: &Device| {
        let store = ParamStore::new(dev, 0);
        let mut tape = Tape::new(&store);
        let a = tape.leaf(Tensor::from_slice(&c.a, &c.a_shape, dev).unwrap());
        let b = tape.leaf(Tensor::from_slice(&c.b, &c.b_shape, dev).unwrap());
        let out = tape
            .matmul(&a, &b, c.trans_a, c.trans_b, ConvPrecision::Fp32)
            .unwrap();
        let seed = Tensor::from_slice(&dc, &[3, 17, 9], dev).unwrap();
        let g = tape.backward(&out, seed).unwrap();
        let da = g.wrt(&a).unwrap();
        assert_eq!(
            da.shape(),
            &c.a_shape[..],
            "the shared operand's gradient has its shape"
        );
        [da.to_vec().unwrap(), g.wrt(&b).unwrap().to_vec().unwrap()]
    };
    let want = grads(&Device::Cpu);
    for dev in kernel_devices("matmul_tape_kernels") {
        for (got, want) in grads(&dev).iter().zip(&want) {
            assert_close(&format!("matmul gradient on {dev}"), got, want, 1e-5, 1e-5);
        }
    }
}

#[test]
fn degenerate_products_are_empty_or_zero() {
    for dev in std::iter::once(Device::Cpu).chain(kernel_devices("matmul_degenerate")) {
        let zeros = |shape: &[usize]| Tensor::zeros(shape, &dev).unwrap();
        let ones = |shape: &[usize]| {
            Tensor::from_vec(vec![1.0; shape.iter().product()], shape, &dev).unwrap()
        };
        // K = 0: every entry is an empty sum.
        let c = matmul(
            &ones(&[2, 3, 0]),
            &ones(&[2, 0, 4]),
            false,
            false,
            ConvPrecision::Fp32,
        )
        .unwrap();
        assert_eq!(
            (c.shape(), c.to_vec().unwrap()),
            (&[2, 3, 4][..], vec![0.0; 24]),
            "on {dev}"
        );
        // An empty batch against a shared matrix, and its batch sum.
        let c = matmul(
            &zeros(&[0, 3, 2]),
            &ones(&[2, 4]),
            false,
            false,
            ConvPrecision::Fp32,
        )
        .unwrap();
        assert_eq!(c.shape(), &[0, 3, 4], "on {dev}");
        let s = matmul_batch_sum(
            &ones(&[3, 2]),
            &zeros(&[0, 2, 4]),
            false,
            false,
            ConvPrecision::Tf32,
        )
        .unwrap();
        assert_eq!(
            (s.shape(), s.to_vec().unwrap()),
            (&[1, 3, 4][..], vec![0.0; 12]),
            "on {dev}"
        );
        // Two matrices are a batch of one.
        let c = matmul(
            &ones(&[3, 2]),
            &ones(&[4, 2]),
            false,
            true,
            ConvPrecision::Fp32,
        )
        .unwrap();
        assert_eq!(
            (c.shape(), c.to_vec().unwrap()),
            (&[1, 3, 4][..], vec![2.0; 12]),
            "on {dev}"
        );
    }
}

#[test]
fn matmul_refuses_what_it_cannot_multiply() {
    let cpu = Device::Cpu;
    let t = |shape: &[usize]| Tensor::zeros(shape, &cpu).unwrap();
    let err = |a: &Tensor, b: &Tensor, ta: bool, tb: bool| {
        let e = matmul(a, b, ta, tb, ConvPrecision::Fp32)
            .unwrap_err()
            .to_string();
        let s = matmul_batch_sum(a, b, ta, tb, ConvPrecision::Fp32)
            .unwrap_err()
            .to_string();
        assert!(s.contains("matmul_batch_sum"), "{s}");
        e
    };
    // Neither a matrix nor a batch of them.
    let e = err(&t(&[4]), &t(&[4, 2]), false, false);
    assert!(e.contains("matmul") && e.contains("[4]"), "{e}");
    let e = err(&t(&[2, 3, 4]), &t(&[1, 2, 4, 5]), false, false);
    assert!(e.contains("[1, 2, 4, 5]"), "{e}");
    // Inner dimensions: a [2, 3, 4] is 3x4, or 4x3 transposed.
    let e = err(&t(&[2, 3, 4]), &t(&[2, 5, 6]), false, false);
    assert!(e.contains("4 and 5"), "{e}");
    assert!(matmul(
        &t(&[2, 3, 4]),
        &t(&[2, 3, 6]),
        true,
        false,
        ConvPrecision::Fp32
    )
    .is_ok());
    let e = err(&t(&[2, 3, 4]), &t(&[2, 3, 6]), false, true);
    assert!(e.contains("4 and 6"), "{e}");
    // Batches neither equal nor one of them 1.
    let e = err(&t(&[2, 3, 4]), &t(&[3, 4, 5]), false, false);
    assert!(e.contains("batches 2 and 3"), "{e}");
    // Operands on two devices.
    let emu = Device::Emu(EmuSchedule::Forward);
    let on_emu = Tensor::zeros(&[4, 5], &emu).unwrap();
    let e = err(&t(&[3, 4]), &on_emu, false, false);
    assert!(e.contains("matmul"), "{e}");
    // The tape passes the refusal on.
    let store = ParamStore::new(&cpu, 0);
    let mut tape = Tape::new(&store);
    let (a, b) = (tape.leaf(t(&[2, 3, 4])), tape.leaf(t(&[3, 4, 5])));
    assert!(tape
        .matmul(&a, &b, false, false, ConvPrecision::Fp32)
        .is_err());
}
