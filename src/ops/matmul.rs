//! Batched matrix products (kernels/matmul.cu): the q^T k and v w^T of the DDPM++ self-attention
//! and its 1x1 "NIN" and nn.Linear layers (docs/SPEC.md section 11 (DDPM++)).
//!
//! `a` is [Ba, M, K] ([Ba, K, M] read transposed when `trans_a`), `b` is [Bb, K, N] ([Bb, N, K]
//! when `trans_b`); a 2-D operand is a batch of one. The batches are equal, or one of them is 1
//! and that matrix is used for every product (a layer's shared weight); the result is
//! [max(Ba, Bb), M, N]. [`matmul_batch_sum`] adds the products over the batch instead, which is
//! the gradient of such a shared operand.
//!
//! The cpu backend runs the crate's GEMM (ops/cpu_gemm.rs) on strided views, so transposes cost
//! no copy; emu and cuda run the tiled kernels. [`ConvPrecision::Tf32`] and
//! [`ConvPrecision::Bf16`] multiply on tensor cores with operands rounded to tf32 or bf16, as the
//! convolutions do (ops/conv_precision.rs); the cpu rounds its operands the same way, the
//! reference the tensor-core kernels are tested against.
use super::conv_precision::ConvPrecision;
use super::cpu_gemm::{gemm, MatRef};
use super::cpu_parallel::{batch_workers, for_each_item_chunk};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops::launch::{check_same_device, launch, Arg, LaunchGeometry};
use crate::tensor::Tensor;

/// Tile sizes and threads of kernels/matmul.cu (MATMUL_TILE_*, MATMUL_THREADS), the same for
/// the fp32 and tensor-core kernels.
const TILE_M: usize = 64;
const TILE_N: usize = 64;
const THREADS: u32 = 256;
/// The most blocks along the grid's y axis (CUDA's limit); the kernels stride over the output
/// matrices beyond it.
const MAX_GRID_Y: usize = 65_535;

/// The shape of one batched product, validated.
#[derive(Clone, Copy, Debug)]
struct MatmulDims {
    /// Products: the larger of the two batches (or both, when equal).
    batch: usize,
    /// Elements between consecutive matrices of `a` and of `b`: 0 for a matrix shared by the batch.
    a_stride: usize,
    b_stride: usize,
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
}

/// (batch, rows, cols) of an operand: a matrix is a batch of one.
fn batch_rows_cols(shape: &[usize], name: &str, op: &'static str) -> Result<(usize, usize, usize)> {
    match *shape {
        [r, c] => Ok((1, r, c)),
        [batch, r, c] => Ok((batch, r, c)),
        _ => Err(Error::shape(
            op,
            format!(
                "{name} {shape:?} is neither a matrix [rows, cols] nor a batch [batch, rows, cols]"
            ),
        )),
    }
}

impl MatmulDims {
    fn new(a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool, op: &'static str) -> Result<Self> {
        check_same_device(&[a, b], op)?;
        let (a_shape, b_shape) = (a.shape(), b.shape());
        let (ba, ar, ac) = batch_rows_cols(a_shape, "a", op)?;
        let (bb, br, bc) = batch_rows_cols(b_shape, "b", op)?;
        let (m, ka) = if trans_a { (ac, ar) } else { (ar, ac) };
        let (kb, n) = if trans_b { (bc, br) } else { (br, bc) };
        let operands = || {
            format!(
                "a {a_shape:?} (transposed: {trans_a}) times b {b_shape:?} (transposed: {trans_b})"
            )
        };
        if ka != kb {
            return Err(Error::shape(
                op,
                format!("{}: the inner dimensions {ka} and {kb} differ", operands()),
            ));
        }
        let batch = match (ba, bb) {
            _ if ba == bb => ba,
            (1, _) => bb,
            (_, 1) => ba,
            _ => {
                return Err(Error::shape(
                    op,
                    format!(
                        "{}: batches {ba} and {bb} must be equal, or one of them 1 (shared)",
                        operands()
                    ),
                ))
            }
        };
        // The kernels index within a matrix, and count rows and columns, with 32-bit ints.
        let fits = |dims: [usize; 3]| {
            dims.iter()
                .try_fold(1usize, |p, &d| p.checked_mul(d))
                .is_some_and(|e| e < i32::MAX as usize)
        };
        if !(fits([ba, ar, ac]) && fits([bb, br, bc]) && fits([batch, m, n])) {
            return Err(Error::invalid(format!(
                "{op}: {} gives [{batch}, {m}, {n}]; a tensor of 2^31 elements or more is too \
                 large for the kernels' 32-bit indexing",
                operands()
            )));
        }
        Ok(Self {
            batch,
            a_stride: if ba == 1 { 0 } else { m * ka },
            b_stride: if bb == 1 { 0 } else { ka * n },
            m,
            n,
            k: ka,
            trans_a,
            trans_b,
        })
    }

    fn flops_per_product(&self) -> usize {
        2 * self.m * self.n * self.k
    }

    /// The kernels' arguments after the three tensors, for output matrices each summing
    /// `per_out` consecutive products.
    fn args(&self, per_out: usize) -> [Arg<'static>; 9] {
        [
            Arg::I32(self.batch as i32),
            Arg::I32(per_out as i32),
            Arg::I32(self.m as i32),
            Arg::I32(self.n as i32),
            Arg::I32(self.k as i32),
            Arg::I32(self.trans_a as i32),
            Arg::I32(self.trans_b as i32),
            Arg::U64(self.a_stride as u64),
            Arg::U64(self.b_stride as u64),
        ]
    }

    /// One block per 64x64 tile of an output matrix along x, the `outputs` matrices along y.
    fn geometry(&self, outputs: usize) -> LaunchGeometry {
        let tiles = self.m.div_ceil(TILE_M) * self.n.div_ceil(TILE_N);
        LaunchGeometry::new(
            [tiles as u32, outputs.min(MAX_GRID_Y) as u32, 1],
            [THREADS, 1, 1],
            0,
        )
    }

    /// How many runs the batch of [`matmul_batch_sum`] is cut into on a GPU, and the products
    /// per run: enough blocks to fill the device (each run is a grid of tiles of its own), fixed
    /// by the shape so the order of the final sum is too.
    fn batch_sum_runs(&self) -> (usize, usize) {
        const TARGET_BLOCKS: usize = 512;
        const MAX_RUNS: usize = 128;
        let tiles = self.m.div_ceil(TILE_M) * self.n.div_ceil(TILE_N);
        let runs = TARGET_BLOCKS
            .div_ceil(tiles)
            .min(self.batch)
            .clamp(1, MAX_RUNS);
        let per_run = self.batch.div_ceil(runs);
        (self.batch.div_ceil(per_run), per_run)
    }
}

fn kernel(precision: ConvPrecision) -> &'static str {
    match precision {
        ConvPrecision::Fp32 => "matmul_f32",
        ConvPrecision::Tf32 => "matmul_tf32_f32",
        ConvPrecision::Bf16 => "matmul_bf16_f32",
    }
}

/// Runs `f` on the host data of `a` and `b`, rounded to tf32 or bf16 first when `precision` says
/// so.
fn with_host_operands<R>(
    a: &Tensor,
    b: &Tensor,
    precision: ConvPrecision,
    f: impl FnOnce(&[f32], &[f32]) -> R,
) -> Result<R> {
    Ok(match precision {
        ConvPrecision::Fp32 => f(a.host()?, b.host()?),
        p @ (ConvPrecision::Tf32 | ConvPrecision::Bf16) => {
            f(&p.operand_copy(a.host()?), &p.operand_copy(b.host()?))
        }
    })
}

/// `op(a) op(b)` for every matrix of the batch (see the module doc), op the transpose where
/// `trans_a`/`trans_b` say: [max(Ba, Bb), M, N]. Multiplies in `precision`.
pub fn matmul(
    a: &Tensor,
    b: &Tensor,
    trans_a: bool,
    trans_b: bool,
    precision: ConvPrecision,
) -> Result<Tensor> {
    let d = MatmulDims::new(a, b, trans_a, trans_b, "matmul")?;
    let shape = [d.batch, d.m, d.n];
    if d.batch * d.m * d.n == 0 || d.k == 0 {
        return Tensor::zeros(&shape, a.device());
    }
    let mut c = Tensor::uninit(&shape, a.device())?;
    match a.device() {
        Device::Cpu => {
            let c = c.host_mut()?;
            with_host_operands(a, b, precision, |a, b| cpu::products(&d, a, b, c))?
        }
        dev => {
            let mut args = vec![Arg::In(a), Arg::In(b), Arg::Out(&mut c)];
            args.extend(d.args(1));
            launch(dev, kernel(precision), d.geometry(d.batch), &mut args)?;
        }
    }
    Ok(c)
}

/// The sum over the batch of [`matmul`]'s products, as one matrix [1, M, N]: the gradient of an
/// operand shared by the batch. Deterministic on every backend: the batch is cut into runs fixed
/// by the shape, each summed in order, then the runs in order.
pub fn matmul_batch_sum(
    a: &Tensor,
    b: &Tensor,
    trans_a: bool,
    trans_b: bool,
    precision: ConvPrecision,
) -> Result<Tensor> {
    let d = MatmulDims::new(a, b, trans_a, trans_b, "matmul_batch_sum")?;
    let shape = [1, d.m, d.n];
    if d.batch * d.m * d.n == 0 || d.k == 0 {
        return Tensor::zeros(&shape, a.device());
    }
    let mut c = Tensor::uninit(&shape, a.device())?;
    match a.device() {
        Device::Cpu => {
            let c = c.host_mut()?;
            with_host_operands(a, b, precision, |a, b| cpu::batch_sum(&d, a, b, c))?
        }
        dev => {
            let (runs, per_run) = d.batch_sum_runs();
            let mut partial = if runs == 1 {
                None
            } else {
                Some(Tensor::uninit(&[runs, d.m, d.n], dev)?)
            };
            let out = partial.as_mut().unwrap_or(&mut c);
            let mut args = vec![Arg::In(a), Arg::In(b), Arg::Out(out)];
            args.extend(d.args(per_run));
            launch(dev, kernel(precision), d.geometry(runs), &mut args)?;
            if let Some(partial) = &partial {
                let n = d.m * d.n;
                launch(
                    dev,
                    "matmul_sum_runs_f32",
                    LaunchGeometry::elementwise(n),
                    &mut [
                        Arg::In(partial),
                        Arg::Out(&mut c),
                        Arg::I32(runs as i32),
                        Arg::U64(n as u64),
                    ],
                )?;
            }
        }
    }
    Ok(c)
}

/// The cpu backend: one GEMM call per block of rows of a product, on strided views of the
/// operands.
mod cpu {
    use super::*;

    /// Rows of C per GEMM call: the AVX-512 GEMM's row block (MC, 8 of its 12-row register
    /// tiles). The blocks are fixed by M alone and every product is cut the same way, so the
    /// bits of a result depend on the shape only, not on how the work is spread over the cores.
    const ROW_BLOCK: usize = 96;

    /// Rows [row0, row0 + c.len() / N) of product `z`, written to `c` (beta 0) or added to it
    /// (beta 1).
    fn product_rows(
        d: &MatmulDims,
        a: &[f32],
        b: &[f32],
        z: usize,
        row0: usize,
        beta: f32,
        c: &mut [f32],
    ) {
        let a_z = &a[z * d.a_stride..][..d.m * d.k];
        let b_z = &b[z * d.b_stride..][..d.k * d.n];
        let op_a = if d.trans_a {
            MatRef::row_major(a_z, d.k, d.m).t()
        } else {
            MatRef::row_major(a_z, d.m, d.k)
        };
        let op_b = if d.trans_b {
            MatRef::row_major(b_z, d.n, d.k).t()
        } else {
            MatRef::row_major(b_z, d.k, d.n)
        };
        let rows = MatRef {
            data: &op_a.data[row0 * op_a.row_stride..],
            rows: c.len() / d.n,
            ..op_a
        };
        gemm(rows, op_b, beta, c);
    }

    /// Product `z` into (beta 0) or onto (beta 1) `c` [M, N], a block of rows at a time.
    fn product(d: &MatmulDims, a: &[f32], b: &[f32], z: usize, beta: f32, c: &mut [f32]) {
        for (i, rows) in c.chunks_mut(ROW_BLOCK * d.n).enumerate() {
            product_rows(d, a, b, z, i * ROW_BLOCK, beta, rows);
        }
    }

    /// Every product into `c` [batch, M, N] (M, N, K > 0): the products spread over the cores,
    /// or a single product's row blocks.
    pub(super) fn products(d: &MatmulDims, a: &[f32], b: &[f32], c: &mut [f32]) {
        let mn = d.m * d.n;
        if d.batch > 1 {
            let workers = batch_workers(d.batch, d.flops_per_product());
            for_each_item_chunk(c, mn, workers, |first, cs| {
                for (i, c_z) in cs.chunks_mut(mn).enumerate() {
                    product(d, a, b, first + i, 0.0, c_z);
                }
            });
        } else {
            let blocks = d.m.div_ceil(ROW_BLOCK);
            let workers = batch_workers(blocks, d.flops_per_product() / blocks);
            for_each_item_chunk(c, ROW_BLOCK * d.n, workers, |first, rows| {
                for (i, block) in rows.chunks_mut(ROW_BLOCK * d.n).enumerate() {
                    product_rows(d, a, b, 0, (first + i) * ROW_BLOCK, 0.0, block);
                }
            });
        }
    }

    /// The most partial sums the batch is cut into (see [`batch_sum`]).
    const SUM_GROUPS: usize = 16;

    /// The sum of all products into `c` [M, N] (batch, M, N, K > 0): over runs of consecutive
    /// products whose number is fixed by the batch alone (at most [`SUM_GROUPS`]), each run's
    /// partial in product order, then the partials in order, so the result is the same whatever
    /// the number of cores (as the convolution's weight gradient, ops/conv.rs).
    pub(super) fn batch_sum(d: &MatmulDims, a: &[f32], b: &[f32], c: &mut [f32]) {
        let mn = d.m * d.n;
        let per_group = d.batch.div_ceil(d.batch.min(SUM_GROUPS));
        let groups = d.batch.div_ceil(per_group);
        let workers = batch_workers(groups, per_group * d.flops_per_product());
        let mut partials = vec![0.0; groups * mn];
        for_each_item_chunk(&mut partials, mn, workers, |first, accs| {
            for (i, acc) in accs.chunks_mut(mn).enumerate() {
                let group = first + i;
                for z in group * per_group..((group + 1) * per_group).min(d.batch) {
                    product(d, a, b, z, 1.0, acc);
                }
            }
        });
        c.fill(0.0);
        for part in partials.chunks(mn) {
            c.iter_mut().zip(part).for_each(|(o, &v)| *o += v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(a: &[usize], b: &[usize], ta: bool, tb: bool) -> Result<MatmulDims> {
        let (a, b) = (
            Tensor::zeros(a, &Device::Cpu)?,
            Tensor::zeros(b, &Device::Cpu)?,
        );
        MatmulDims::new(&a, &b, ta, tb, "matmul")
    }

    #[test]
    fn a_shared_operand_has_batch_stride_zero() {
        let d = dims(&[3, 4], &[5, 4, 6], false, false).unwrap();
        assert_eq!((d.batch, d.a_stride, d.b_stride), (5, 0, 24));
        let d = dims(&[5, 4, 3], &[1, 6, 4], true, true).unwrap();
        assert_eq!(
            (d.batch, d.m, d.n, d.k, d.a_stride, d.b_stride),
            (5, 3, 6, 4, 12, 0)
        );
    }

    #[test]
    fn batch_sum_runs_cover_the_batch_in_at_most_128_runs() {
        for batch in [1, 2, 127, 128, 129, 301, 1000] {
            let d = dims(&[batch, 3, 2], &[batch, 2, 5], false, false).unwrap();
            let (runs, per_run) = d.batch_sum_runs();
            assert!(runs <= 128 && runs * per_run >= batch && (runs - 1) * per_run < batch);
        }
    }
}
