//! Group normalisation on the tape (PyTorch's `nn.GroupNorm`, the DDPM++ score network's norm,
//! docs/SPEC.md section 11): [`group_norm`]'s forward, which saves the per-group statistics, and
//! its backward to the input, the weight and the bias.
use crate::autograd::backward::{BackwardOp, InputGrads};
use crate::autograd::tape::{Node, Tape, Var};
use crate::error::Result;
use crate::ops::group_norm::{self, GroupNormSaved};
use crate::tensor::Tensor;

/// The backward reads the values of x and the weight; of the bias only its node is kept.
struct GroupNormBackward<'p> {
    x: Var<'p>,
    weight: Var<'p>,
    bias: Node,
    saved: GroupNormSaved,
}

impl<'p> BackwardOp<'p> for GroupNormBackward<'p> {
    fn backward(self: Box<Self>, g: Tensor, inputs: &mut InputGrads) -> Result<()> {
        // One call gives all three: dweight and dbias come from the per-plane sums dx needs.
        let (dx, dweight, dbias) =
            group_norm::group_norm_backward(&g, self.x.value(), self.weight.value(), &self.saved)?;
        inputs.add(self.bias, dbias);
        inputs.add(self.weight.node(), dweight);
        inputs.add(self.x.node(), dx);
        Ok(())
    }
}

impl<'p> Tape<'p> {
    /// [`group_norm::group_norm`]: `x` [B, C, ...] in `groups` groups of C/groups consecutive
    /// channels, `weight` and `bias` [C].
    pub fn group_norm(
        &mut self,
        x: &Var<'p>,
        weight: &Var<'p>,
        bias: &Var<'p>,
        groups: usize,
        eps: f32,
    ) -> Result<Var<'p>> {
        let (y, saved) =
            group_norm::group_norm(x.value(), weight.value(), bias.value(), groups, eps)?;
        Ok(self.apply(y, &[x, weight, bias], || {
            Box::new(GroupNormBackward {
                x: x.clone(),
                weight: weight.clone(),
                bias: bias.node(),
                saved,
            })
        }))
    }
}
