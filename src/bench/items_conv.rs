//! `conv_fwd`, `conv_bwd_data`, `conv_bwd_weight` on every distinct convolution of the `paper`
//! network at 28x28x1 (BENCH.md): one call of [`crate::ops::conv`] each, no bias.
use super::network_trace::{ConvShape, NetworkTrace};
use super::rotation::{normal, Rotation};
use super::{BenchConfig, Item, Run};
use crate::device::Device;
use crate::error::Result;
use crate::ops::conv::{self, Conv2dCfg};
use crate::ops::ConvPrecision;

#[derive(Clone, Copy, Debug)]
enum Pass {
    Forward,
    BackwardData,
    BackwardWeight,
}

impl Pass {
    const ALL: [Pass; 3] = [Pass::Forward, Pass::BackwardData, Pass::BackwardWeight];

    fn key_root(self) -> &'static str {
        match self {
            Pass::Forward => "conv_fwd",
            Pass::BackwardData => "conv_bwd_data",
            Pass::BackwardWeight => "conv_bwd_weight",
        }
    }
}

pub(super) const KEY_ROOTS: &[&str] = &["conv_fwd", "conv_bwd_data", "conv_bwd_weight"];

pub(super) fn items(cfg: &BenchConfig, paper: &NetworkTrace) -> Vec<Item> {
    let batch = cfg.batch;
    let mut items = Vec::new();
    for shape in paper.distinct_convs() {
        for pass in Pass::ALL {
            let (device, precision) = (cfg.device.clone(), cfg.precision);
            items.push(Item::new(
                format!("{}/{}", pass.key_root(), shape.key_suffix(batch)),
                shape.bytes(batch),
                shape.flops(batch),
                move || prepare(pass, shape, batch, precision, &device),
            ));
        }
    }
    items
}

/// The two inputs of the pass (x and w, dy and w, or dy and x), rotated.
fn prepare(
    pass: Pass,
    shape: ConvShape,
    batch: usize,
    precision: ConvPrecision,
    device: &Device,
) -> Result<Run> {
    let cfg = Conv2dCfg::same(shape.k, shape.d).with_precision(precision);
    let (x_shape, y_shape, w_shape) = (
        shape.input_shape(batch),
        shape.output_shape(batch),
        shape.weight_shape(),
    );
    let (a_shape, b_shape): (&[usize], &[usize]) = match pass {
        Pass::Forward => (&x_shape, &w_shape),
        Pass::BackwardData => (&y_shape, &w_shape),
        Pass::BackwardWeight => (&y_shape, &x_shape),
    };
    let input_bytes =
        4.0 * (a_shape.iter().product::<usize>() + b_shape.iter().product::<usize>()) as f64;
    let mut inputs = Rotation::exceeding_cache(input_bytes, |i| {
        Ok((
            normal(a_shape, 2 * i, device)?,
            normal(b_shape, 2 * i + 1, device)?,
        ))
    })?;
    Ok(Box::new(move || {
        let (a, b) = inputs.next_set();
        match pass {
            Pass::Forward => conv::conv2d(a, b, None, cfg),
            Pass::BackwardData => conv::conv2d_backward_data(a, b, &x_shape, cfg),
            Pass::BackwardWeight => conv::conv2d_backward_weight(a, b, &w_shape, cfg),
        }
        .map(drop)
    }))
}
