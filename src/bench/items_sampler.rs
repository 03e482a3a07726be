//! `sampler_step/{preset}/{c}x{h}x{w}/b{B}` (BENCH.md): one step of the GBM sampler, the network
//! forward without gradients at level k = N/2 for the whole batch, then the Dale-Langevin update
//! (SPEC 4) of the batch in place.
use super::items_gbm::dale_coefficients;
use super::network_trace::{fresh_network, network_items, NetworkStep, NetworkTrace};
use super::rotation::{positive, Rotation};
use super::{BenchConfig, Item, Run};
use crate::autograd::Tape;
use crate::diffusion::samplers::{dale_step, PhiloxDraw};
use crate::error::Result;
use crate::ops;
use crate::tensor::Tensor;

pub(super) const KEY_ROOTS: &[&str] = &["sampler_step"];

pub(super) fn items(cfg: &BenchConfig, traces: &[&NetworkTrace]) -> Vec<Item> {
    network_items(
        cfg,
        traces,
        "sampler_step",
        cfg.sampler_batch,
        cost,
        prepare,
    )
}

/// Parameters without the embeddings, one embedding row per sample and norm layer, and x read
/// and written; only convolution FLOPs.
fn cost(trace: &NetworkTrace, batch: usize) -> (f64, f64) {
    let [c, h, w] = trace.image;
    let bytes = 4.0
        * (trace.params_without_embeddings
            + batch * trace.embedding_row_width
            + 2 * batch * c * h * w) as f64;
    let flops = batch as f64 * trace.conv_flops_per_image();
    (bytes, flops)
}

fn prepare(spec: &NetworkStep) -> Result<Run> {
    let (config, store, net) = fresh_network(spec)?;
    let (n_levels, batch, device) = (spec.n_levels, spec.batch, &spec.device);
    let level = Tensor::from_vec(vec![(n_levels / 2) as f32; batch], &[batch], device)?;
    let mut states = Rotation::with_copies(2, |i| positive(&config.input_shape(batch), i, device))?;
    let coefficients = dale_coefficients();
    let mut step = 0u32;
    Ok(Box::new(move || {
        let x = states.next_set();
        let mut tape = Tape::inference(&store);
        let levels = tape.constant(ops::copy(&level)?);
        let input = tape.constant(ops::copy(x)?);
        let h = net.forward(&mut tape, &input, &levels)?;
        step = step.wrapping_add(1);
        dale_step(x, h.value(), coefficients, PhiloxDraw::sampler(0, step))
    }))
}
