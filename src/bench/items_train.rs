//! `train_step/{preset}/{c}x{h}x{w}/b{B}` (BENCH.md): one optimiser step as training takes it, without
//! the data loader: levels k uniform in 1..N-1 and noise z, x_k = x_0 exp(s_k z) (SPEC 2, m_k = 0
//! for the constant schedule), network forward, M-DSM loss with w_k = 1 (SPEC 3), backward, AdamW
//! (lr 1e-4). Gradients are dropped after the update (PyTorch's zero_grad).
use super::items_gbm::SIGMA;
use super::network_trace::{fresh_network, network_items, NetworkStep, NetworkTrace};
use super::rotation::{positive, Rotation};
use super::{BenchConfig, Item, Run};
use crate::autograd::Tape;
use crate::diffusion::forward::noise_batch;
use crate::diffusion::loss::{mdsm_loss, LossWeighting};
use crate::diffusion::{Parameterisation, Schedule};
use crate::error::Result;
use crate::ops::PhiloxDraw;
use crate::optim::{pair_with_store, AdamW, AdamWConfig};
use crate::rng;
use crate::tensor::Tensor;

pub(super) const KEY_ROOTS: &[&str] = &["train_step"];

const LEARNING_RATE: f32 = 1e-4;

pub(super) fn items(cfg: &BenchConfig, traces: &[&NetworkTrace]) -> Vec<Item> {
    network_items(cfg, traces, "train_step", cfg.batch, cost, prepare)
}

/// Every parameter read in the forward, its gradient written, AdamW reading p, g, m, v and
/// writing p, m, v; x_0 read. Forward, backward-data and backward-weight FLOPs.
fn cost(trace: &NetworkTrace, batch: usize) -> (f64, f64) {
    let [c, h, w] = trace.image;
    let bytes = 4.0 * (8 * trace.params() + batch * c * h * w) as f64;
    let flops = 3.0 * batch as f64 * trace.conv_flops_per_image();
    (bytes, flops)
}

/// A fresh network and optimiser, and the step that trains them.
fn prepare(spec: &NetworkStep) -> Result<Run> {
    let (config, mut store, net) = fresh_network(spec)?;
    let (n_levels, batch, device) = (spec.n_levels, spec.batch, &spec.device);
    let schedule = Schedule::constant(n_levels, SIGMA as f64)?;
    let mut optimizer = AdamW::new(AdamWConfig::new(LEARNING_RATE));
    let mut data = Rotation::with_copies(2, |i| positive(&config.input_shape(batch), i, device))?;
    let mut step = 0u32;
    Ok(Box::new(move || {
        step = step.wrapping_add(1);
        let noised = noise_batch(data.next_set(), &schedule, 0, step)?;
        let grads = {
            let mut tape = Tape::new(&store);
            let lv: Vec<f32> = noised.levels.iter().map(|&k| k as f32).collect();
            let levels = tape.constant(Tensor::from_vec(lv, &[batch], store.device())?);
            let x = tape.constant(noised.x_k);
            // DDPM++ trains with dropout, as PyTorch's train() mode does.
            let dropout = PhiloxDraw::new(0, rng::stream::DROPOUT, step);
            let out = net.forward_train(&mut tape, &x, &levels, dropout)?;
            let x_k = x.value();
            let loss = mdsm_loss(
                out.value(),
                x_k,
                &noised.z,
                &noised.s_level,
                LossWeighting::Unit,
                Parameterisation::H,
            )?;
            tape.backward(&out, loss.grad)?
        };
        let mut pairs = pair_with_store(&mut store, &grads)?;
        optimizer.step(&mut pairs, 1.0)
    }))
}
