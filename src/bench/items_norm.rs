//! `cin_pp_fwd` and `cin_pp_bwd` on every distinct CIN++ input of the `paper` network at 28x28x1
//! (BENCH.md). The backward item times the backward alone; its forward runs while preparing.
use super::network_trace::{NetworkTrace, NormShape};
use super::rotation::{levels, normal, Rotation};
use super::{BenchConfig, Item, Run};
use crate::device::Device;
use crate::error::Result;
use crate::ops::norm;

pub(super) const KEY_ROOTS: &[&str] = &["cin_pp_fwd", "cin_pp_bwd"];

/// FLOPs per element (BENCH.md's convention): forward 8 (statistics 3, normalise 2, affine 3).
const FORWARD_FLOPS: f64 = 8.0;
/// Backward 12.
const BACKWARD_FLOPS: f64 = 12.0;

pub(super) fn items(cfg: &BenchConfig, paper: &NetworkTrace) -> Vec<Item> {
    let (batch, n_levels) = (cfg.batch, paper.n_levels);
    let mut items = Vec::new();
    for shape in paper.distinct_norms() {
        let n = shape.elements(batch) as f64;
        // One embedding row (3C) per sample.
        let rows = (3 * batch * shape.c) as f64;
        let device = cfg.device.clone();
        items.push(Item::new(
            format!("cin_pp_fwd/{}", shape.key_suffix(batch)),
            4.0 * (2.0 * n + rows),
            FORWARD_FLOPS * n,
            move || forward(shape, batch, n_levels, &device),
        ));
        let device = cfg.device.clone();
        items.push(Item::new(
            format!("cin_pp_bwd/{}", shape.key_suffix(batch)),
            // x, dy, dx, and the rows read and their gradient rows written.
            4.0 * (3.0 * n + 2.0 * rows),
            BACKWARD_FLOPS * n,
            move || backward(shape, batch, n_levels, &device),
        ));
    }
    items
}

fn x_shape(shape: NormShape, batch: usize) -> [usize; 4] {
    [batch, shape.c, shape.h, shape.w]
}

fn forward(shape: NormShape, batch: usize, n_levels: usize, device: &Device) -> Result<Run> {
    let bytes = 4.0 * (shape.elements(batch) + n_levels * 3 * shape.c) as f64;
    let mut inputs = Rotation::exceeding_cache(bytes, |i| {
        Ok((
            normal(&x_shape(shape, batch), 3 * i, device)?,
            levels(batch, n_levels, i, device)?,
            normal(&[n_levels, 3 * shape.c], 3 * i + 1, device)?,
        ))
    })?;
    Ok(Box::new(move || {
        let (x, lv, embed) = inputs.next_set();
        norm::cond_instance_norm_pp(x, lv, embed).map(drop)
    }))
}

fn backward(shape: NormShape, batch: usize, n_levels: usize, device: &Device) -> Result<Run> {
    let bytes = 4.0 * (2 * shape.elements(batch) + n_levels * 3 * shape.c) as f64;
    let mut inputs = Rotation::exceeding_cache(bytes, |i| {
        let x = normal(&x_shape(shape, batch), 3 * i, device)?;
        let lv = levels(batch, n_levels, i, device)?;
        let embed = normal(&[n_levels, 3 * shape.c], 3 * i + 1, device)?;
        let dy = normal(&x_shape(shape, batch), 3 * i + 2, device)?;
        let (_, saved) = norm::cond_instance_norm_pp(&x, &lv, &embed)?;
        Ok((x, lv, embed, dy, saved))
    })?;
    Ok(Box::new(move || {
        let (x, lv, embed, dy, saved) = inputs.next_set();
        norm::cond_instance_norm_pp_backward(dy, x, lv, embed, saved).map(drop)
    }))
}
