//! A safe face for the CPU backend's single-precision matrix product, on one thread (the callers
//! spread samples over the cores): our own packed AVX-512 GEMM where the core has AVX-512F and
//! the product has rows enough to fill its register tile, the `gemm` crate's otherwise. It
//! launches no kernel: on `emu`/`cuda` the convolutions of SPEC section 9 run kernels/conv.cu.

#[cfg(target_arch = "x86_64")]
use super::cpu_gemm_avx512 as avx512;
use super::cpu_parallel::{cores, for_each_item_chunk};

/// A matrix view: `data[r * row_stride + c * col_stride]` for `r < rows`, `c < cols`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A contiguous row-major matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose, without copying.
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// `c = a b + beta c`, with `c` a contiguous row-major `[a.rows, b.cols]` matrix.
pub(crate) fn gemm(a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: &mut [f32]) {
    assert!(
        a.cols == b.rows && a.fits() && b.fits() && c.len() >= a.rows * b.cols,
        "gemm operands out of bounds"
    );
    if a.rows == 0 || b.cols == 0 {
        return;
    }
    // Fewer rows than half a register tile (the 64->1 end convolution's single output channel)
    // would waste most of it; the gemm crate's kernels fit such products better.
    #[cfg(target_arch = "x86_64")]
    if avx512::available() && a.rows >= avx512::MR / 2 {
        avx512::gemm(a, b, beta, c);
        return;
    }
    // SAFETY: the assertion above keeps every element the strides address inside its slice, and
    // `c` is exclusively borrowed with distinct (row-major) addresses for distinct elements.
    // gemm's convention: dst = alpha dst + beta lhs rhs, dst read only when `read_dst`.
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            c.as_mut_ptr(),
            1,
            b.cols as isize,
            beta != 0.0,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            beta,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// The left operand of many products (a convolution's weights, the same for every sample of a
/// batch), packed once for all of them where the AVX-512 GEMM will take it, instead of once per
/// product: at 8x8 and 17x17 pixels (the FID Inception's late blocks) repacking the weights for
/// each sample cost about as much as the product.
pub(crate) struct SharedLhs<'a> {
    plain: MatRef<'a>,
    #[cfg(target_arch = "x86_64")]
    packed: Option<avx512::PackedA>,
}

impl<'a> SharedLhs<'a> {
    pub fn new(a: MatRef<'a>) -> Self {
        assert!(a.fits(), "gemm operand out of bounds");
        Self {
            plain: a,
            #[cfg(target_arch = "x86_64")]
            packed: (avx512::available() && a.rows >= avx512::MR / 2)
                .then(|| avx512::PackedA::new(a)),
        }
    }
}

/// [`gemm`] with a shared left operand: the same dispatch, arithmetic and bits.
pub(crate) fn gemm_shared(a: &SharedLhs<'_>, b: MatRef<'_>, beta: f32, c: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(packed) = &a.packed {
        assert!(
            packed.depth() == b.rows && b.fits() && c.len() >= packed.rows() * b.cols,
            "gemm operands out of bounds"
        );
        if b.cols > 0 {
            avx512::gemm_packed(packed, b, beta, c);
        }
        return;
    }
    gemm(a.plain, b, beta, c);
}

/// `c = a b` with the rows of `a` (and `c`) spread over every core: the cpu backend's GEMM rate
/// on the whole machine, which `dml bench` takes as its GEMM ceiling.
pub(crate) fn gemm_all_cores(a: MatRef<'_>, b: MatRef<'_>, c: &mut [f32]) {
    for_each_item_chunk(&mut c[..a.rows * b.cols], b.cols, cores(), |first, rows| {
        let n_rows = rows.len() / b.cols;
        let a_rows = MatRef {
            data: &a.data[first * a.row_stride..],
            rows: n_rows,
            ..a
        };
        gemm(a_rows, b, 0.0, rows);
    });
}
