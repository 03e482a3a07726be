//! Channel concatenation on the tape (`torch.cat(parts, 1)`): DDPM++'s decoder joins each
//! residual block's input with the encoder's skip this way (SPEC section 11). The backward pass
//! slices the output's gradient back into the parts' channels.
use crate::autograd::backward::{BackwardOp, InputGrads};
use crate::autograd::tape::{Node, Tape, Var};
use crate::error::Result;
use crate::ops;
use crate::tensor::Tensor;

struct ConcatChannelsBackward {
    /// Each part's node and channel count, in order.
    parts: Vec<(Node, usize)>,
}

impl<'p> BackwardOp<'p> for ConcatChannelsBackward {
    fn backward(self: Box<Self>, g: Tensor, inputs: &mut InputGrads) -> Result<()> {
        let mut c_offset = 0;
        for (node, channels) in self.parts {
            if inputs.wants(node) {
                inputs.add(node, ops::slice_channels(&g, c_offset, channels)?);
            }
            c_offset += channels;
        }
        Ok(())
    }
}

impl<'p> Tape<'p> {
    /// [`ops::concat_channels`] of NCHW parts of equal batch, height and width.
    pub fn concat_channels(&mut self, parts: &[&Var<'p>]) -> Result<Var<'p>> {
        let values: Vec<&Tensor> = parts.iter().map(|v| v.value()).collect();
        let y = ops::concat_channels(&values)?;
        Ok(self.apply(y, parts, || {
            Box::new(ConcatChannelsBackward {
                parts: parts.iter().map(|v| (v.node(), v.shape()[1])).collect(),
            })
        }))
    }
}
