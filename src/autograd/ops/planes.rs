//! Biases broadcast over planes on the tape ([`crate::ops::planes`]): one per plane,
//! `x + bias[:, :, None, None]`, how DDPM++'s residual blocks add the level embedding (SPEC
//! section 11), and one per channel, `x + bias[None, :, None, None]`, the bias of its linear and
//! 1x1 layers. The input's gradient is the output's; the bias's is the sum of the output's over
//! what it was broadcast to.
use crate::autograd::backward::{BackwardOp, InputGrads};
use crate::autograd::tape::{Node, Tape, Var};
use crate::error::Result;
use crate::ops::{conv, planes};
use crate::tensor::Tensor;

struct AddPlaneBiasBackward {
    x: Node,
    bias: Node,
}

impl<'p> BackwardOp<'p> for AddPlaneBiasBackward {
    fn backward(self: Box<Self>, g: Tensor, inputs: &mut InputGrads) -> Result<()> {
        if inputs.wants(self.bias) {
            inputs.add(self.bias, planes::sum_planes(&g)?);
        }
        inputs.add(self.x, g);
        Ok(())
    }
}

struct AddChannelBiasBackward {
    x: Node,
    bias: Node,
}

impl<'p> BackwardOp<'p> for AddChannelBiasBackward {
    fn backward(self: Box<Self>, g: Tensor, inputs: &mut InputGrads) -> Result<()> {
        if inputs.wants(self.bias) {
            // The batch-and-plane sum per channel is the convolution's bias gradient.
            let shape = g.shape().to_vec();
            let hw = shape[2..].iter().product();
            let g4 = g.reshape(&[shape[0], shape[1], hw, 1])?;
            inputs.add(self.bias, conv::conv2d_backward_bias(&g4)?);
            inputs.add(self.x, g4.reshape(&shape)?);
        } else {
            inputs.add(self.x, g);
        }
        Ok(())
    }
}

impl<'p> Tape<'p> {
    /// [`planes::add_plane_bias`]: `x` [B, C, H, W] plus `bias` [B, C] on every element of the
    /// plane.
    pub fn add_plane_bias(&mut self, x: &Var<'p>, bias: &Var<'p>) -> Result<Var<'p>> {
        let y = planes::add_plane_bias(x.value(), bias.value())?;
        Ok(self.apply(y, &[x, bias], || {
            Box::new(AddPlaneBiasBackward {
                x: x.node(),
                bias: bias.node(),
            })
        }))
    }

    /// [`planes::add_channel_bias`]: `x` [B, C, ...] plus `bias` [C] on every element of channel
    /// c.
    pub fn add_channel_bias(&mut self, x: &Var<'p>, bias: &Var<'p>) -> Result<Var<'p>> {
        let y = planes::add_channel_bias(x.value(), bias.value())?;
        Ok(self.apply(y, &[x, bias], || {
            Box::new(AddChannelBiasBackward {
                x: x.node(),
                bias: bias.node(),
            })
        }))
    }
}
