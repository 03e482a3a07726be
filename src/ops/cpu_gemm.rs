//! A safe face for `matrixmultiply::sgemm`, the CPU backend's matrix product, and the batch
//! parallelism the CPU layers share; it launches no kernel (on `emu`/`cuda` the convolutions of
//! SPEC section 9 run kernels/conv.cu instead).

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
    // SAFETY: the assertion above keeps every element the strides address inside its slice, and
    // `c` is exclusively borrowed with distinct (row-major) addresses for distinct elements.
    unsafe {
        matrixmultiply::sgemm(
            a.rows,
            a.cols,
            b.cols,
            1.0,
            a.data.as_ptr(),
            a.row_stride as isize,
            a.col_stride as isize,
            b.data.as_ptr(),
            b.row_stride as isize,
            b.col_stride as isize,
            beta,
            c.as_mut_ptr(),
            b.cols as isize,
            1,
        );
    }
}

/// Worker threads for a batch of `items` each costing about `flops_per_item`: one per core, but
/// not for work too small to repay starting a thread.
pub(crate) fn batch_workers(items: usize, flops_per_item: usize) -> usize {
    const MIN_FLOPS_PER_THREAD: usize = 2_000_000;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let by_work = (items * flops_per_item / MIN_FLOPS_PER_THREAD).max(1);
    cores.min(items).min(by_work).max(1)
}

/// Runs `f(first_item, chunk)` over `out` split into per-item chunks of `item_len`, spreading
/// contiguous runs of items over `workers` scoped threads.
pub(crate) fn for_each_item_chunk<F>(out: &mut [f32], item_len: usize, workers: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    if item_len == 0 {
        return;
    }
    let items = out.len() / item_len;
    let per_worker = items.div_ceil(workers.max(1)).max(1);
    if workers <= 1 || items <= 1 {
        f(0, out);
        return;
    }
    std::thread::scope(|s| {
        for (w, chunk) in out.chunks_mut(per_worker * item_len).enumerate() {
            let f = &f;
            s.spawn(move || f(w * per_worker, chunk));
        }
    });
}
