//! A per-plane bias on the tape, `x + bias[:, :, None, None]` ([`crate::ops::planes`]): how
//! DDPM++'s residual blocks add the level embedding (SPEC section 11). The input's gradient is the
//! output's; the bias's is its plane sums.
use crate::autograd::backward::{BackwardOp, InputGrads};
use crate::autograd::tape::{Node, Tape, Var};
use crate::error::Result;
use crate::ops::planes;
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
}
