//! Inverted dropout with a counter-based mask (kernels/dropout.cu), SPEC sections 5 and 11:
//! element `i` is kept, times `1 / (1 - p)`, when the uniform `[0, 1)` of Philox element
//! `first + i` of the draw is at least `p`, else zeroed. The mask is recomputed, never stored: the
//! backward pass is the same function of the gradient.
use super::cpu_parallel::for_each_element_chunk;
use super::launch::{launch, Arg, LaunchGeometry};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops::PhiloxDraw;
use crate::rng;
use crate::tensor::Tensor;

/// Which mask a dropout layer applies: the draw (its step is the training step) and the first
/// Philox element of this layer's slice of it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropoutMask {
    pub draw: PhiloxDraw,
    pub first: u64,
    /// The probability of zeroing an element, in [0, 1).
    pub p: f32,
}

/// `x` with the mask applied: kept elements scaled by `1 / (1 - p)`, the others 0.
pub fn dropout(x: &Tensor, mask: DropoutMask) -> Result<Tensor> {
    let p = mask.p;
    if !(0.0..1.0).contains(&p) {
        return Err(Error::invalid(format!(
            "dropout: probability {p} is not in [0, 1)"
        )));
    }
    let scale = 1.0 / (1.0 - p);
    let draw = mask.draw;
    let mut y = Tensor::uninit(x.shape(), x.device())?;
    let n = x.numel();
    match x.device() {
        Device::Cpu => {
            let xs = x.host()?;
            for_each_element_chunk(y.host_mut()?, |offset, part| {
                for (j, (o, &v)) in part.iter_mut().zip(&xs[offset..]).enumerate() {
                    let bits = draw.bits(mask.first + (offset + j) as u64);
                    *o = if rng::uniform_closed_open(bits[0]) >= p {
                        v * scale
                    } else {
                        0.0
                    };
                }
            })
        }
        dev => {
            let [seed, stream, step] = Arg::philox(draw);
            launch(
                dev,
                "dropout_f32",
                LaunchGeometry::elementwise(n),
                &mut [
                    Arg::In(x),
                    Arg::Out(&mut y),
                    Arg::F32(p),
                    Arg::F32(scale),
                    seed,
                    stream,
                    step,
                    Arg::U64(mask.first),
                    Arg::U64(n as u64),
                ],
            )?
        }
    }
    Ok(y)
}
