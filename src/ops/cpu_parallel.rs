//! How the cpu backend spreads work over the cores: contiguous runs of items (samples, planes,
//! elements) over rayon's pool (threads started once, so a parallel op costs microseconds, not
//! a thread start per op), each item computed by one thread in one fixed order, so a result
//! never depends on the number of threads.
use rayon::prelude::*;

/// The threads of the pool: one per core unless `RAYON_NUM_THREADS` says otherwise. (Asking
/// the system each time, as `available_parallelism` does by reading cgroup files, cost 5% of a
/// training step.)
pub(crate) fn cores() -> usize {
    rayon::current_num_threads()
}

/// Workers for a batch of `items` each costing about `flops_per_item`: one per thread of the
/// pool, but not for work too small to repay handing it over (a few microseconds).
pub(crate) fn batch_workers(items: usize, flops_per_item: usize) -> usize {
    const MIN_FLOPS_PER_THREAD: usize = 200_000;
    let cores = cores();
    let by_work = (items * flops_per_item / MIN_FLOPS_PER_THREAD).max(1);
    cores.min(items).min(by_work).max(1)
}

/// Runs `f(first_item, chunk)` over `out` split into per-item chunks of `item_len`, spreading
/// contiguous runs of items over `workers` tasks of the pool.
pub(crate) fn for_each_item_chunk<T, F>(out: &mut [T], item_len: usize, workers: usize, f: F)
where
    T: Send,
    F: Fn(usize, &mut [T]) + Sync,
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
    out.par_chunks_mut(per_worker * item_len)
        .enumerate()
        .for_each(|(w, chunk)| f(w * per_worker, chunk));
}

/// Elements per thread below which an element-wise map stays on one thread: handing work to
/// the pool and waiting for it costs a few microseconds, the time of some thousands of cheap
/// element operations.
const MIN_ELEMENTS_PER_THREAD: usize = 1 << 14;

/// Workers of an element-wise map over `n` elements: one per core, but none idle for want of
/// MIN_ELEMENTS_PER_THREAD each.
fn element_workers(n: usize) -> usize {
    cores().min(n / MIN_ELEMENTS_PER_THREAD).max(1)
}

/// The chunk of `n` elements each worker of an element-wise map takes: `n` itself (one thread)
/// when the work is too small to hand over.
pub(crate) fn element_chunk_len(n: usize) -> usize {
    n.div_ceil(element_workers(n)).max(1)
}

/// Runs `f(offset, chunk)` over `out` cut into contiguous chunks, one per worker thread, for
/// element-wise maps (each element's value independent of how `out` is cut).
pub(crate) fn for_each_element_chunk<F>(out: &mut [f32], f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    for_each_item_chunk(out, 1, element_workers(out.len()), f);
}

/// Runs `f(item, chunk)` for every item of `out` (chunks of `item_len`) on the pool and returns
/// the values it gives, in item order: a reduction's per-item partial sums, for the caller to add
/// in that fixed order whatever the number of threads.
pub(crate) fn map_items<F>(out: &mut [f32], item_len: usize, f: F) -> Vec<f64>
where
    F: Fn(usize, &mut [f32]) -> f64 + Sync,
{
    let mut values = vec![0.0; out.len() / item_len.max(1)];
    out.par_chunks_mut(item_len.max(1))
        .zip(values.par_iter_mut())
        .enumerate()
        .for_each(|(i, (chunk, v))| *v = f(i, chunk));
    values
}
