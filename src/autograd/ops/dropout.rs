//! Dropout on the tape ([`crate::ops::dropout`]): the mask is a function of the draw, so the
//! backward pass applies the same dropout to the gradient (the op is linear in its input for a
//! fixed mask) and keeps nothing else.
use crate::autograd::backward::{BackwardOp, InputGrads};
use crate::autograd::tape::{Node, Tape, Var};
use crate::error::Result;
use crate::ops::dropout::{self, DropoutMask};
use crate::tensor::Tensor;

struct DropoutBackward {
    x: Node,
    mask: DropoutMask,
}

impl<'p> BackwardOp<'p> for DropoutBackward {
    fn backward(self: Box<Self>, g: Tensor, inputs: &mut InputGrads) -> Result<()> {
        inputs.add(self.x, dropout::dropout(&g, self.mask)?);
        Ok(())
    }
}

impl<'p> Tape<'p> {
    /// [`dropout::dropout`] of `x` with `mask`.
    pub fn dropout(&mut self, x: &Var<'p>, mask: DropoutMask) -> Result<Var<'p>> {
        let y = dropout::dropout(x.value(), mask)?;
        Ok(self.apply(y, &[x], || Box::new(DropoutBackward { x: x.node(), mask })))
    }
}
