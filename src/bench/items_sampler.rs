//! `sampler_step/{preset}/{c}x{h}x{w}/b{B}` (BENCH.md): one step of the GBM sampler, the network
//! forward without gradients at level k = N/2 for the whole batch, then the Dale-Langevin update
//! (SPEC 4) of the batch in place; on a kernel device replayed from a captured graph, as
//! `dml sample` runs its steps.
use super::items_gbm::dale_coefficients;
use super::network_trace::{fresh_network, network_items, NetworkStep, NetworkTrace};
use super::rotation::{positive, Rotation};
use super::{BenchConfig, Item, Run};
use crate::autograd::Tape;
use crate::device::graph::Replayer;
use crate::diffusion::samplers::PhiloxDraw;
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
    let (n_levels, batch, device) = (spec.n_levels, spec.batch, spec.device.clone());
    let level = Tensor::from_vec(vec![(n_levels / 2) as f32; batch], &[batch], &device)?;
    // Each copy of x has its own replayer: on a kernel device the step is one replayed graph per
    // copy, as the sampler's steps are (docs/DESIGN.md section 10).
    let mut states = Rotation::with_copies(2, |i| {
        let x = positive(&config.input_shape(batch), i, &device)?;
        Ok((x, Replayer::new(!device.is_cpu())))
    })?;
    let coefficients = dale_coefficients();
    let mut scalars = coefficients.scalars(&device, PhiloxDraw::sampler(0, 0))?;
    let mut step = 0u32;
    Ok(Box::new(move || {
        let (x, replayer) = states.next_set();
        step = step.wrapping_add(1);
        coefficients.write(&mut scalars, step)?;
        let mut body = || {
            let mut tape = Tape::inference(&store);
            let levels = tape.constant(ops::copy(&level)?);
            let input = tape.constant(ops::copy(x)?);
            let h = net.forward(&mut tape, &input, &levels)?;
            ops::gbm_dale_step(x, h.value(), &scalars)
        };
        // SAFETY: x, the level, the scalars and the network's weights live as long as this
        // closure and are only written in place.
        unsafe { replayer.run(&device, &mut body) }?.replayed(&device, "sampler_step's steps");
        Ok(())
    }))
}
