//! A reshape on the tape: the same elements in the same order under another shape. Tensors own
//! their storage, so the forward pass copies (one pass over memory, on the tensor's device); the
//! backward pass reshapes the gradient, which it owns, without a copy. DDPM++'s attention views
//! [B, C, H, W] as [B, C, HW] for its matrix products and back (SPEC section 11).
use crate::autograd::backward::{BackwardOp, InputGrads};
use crate::autograd::tape::{Node, Tape, Var};
use crate::error::Result;
use crate::ops;
use crate::tensor::Tensor;

struct ReshapeBackward {
    x: Node,
    x_shape: Vec<usize>,
}

impl<'p> BackwardOp<'p> for ReshapeBackward {
    fn backward(self: Box<Self>, g: Tensor, inputs: &mut InputGrads) -> Result<()> {
        inputs.add(self.x, g.reshape(&self.x_shape)?);
        Ok(())
    }
}

impl<'p> Tape<'p> {
    /// `x` under `shape`, which must hold as many elements.
    pub fn reshape(&mut self, x: &Var<'p>, shape: &[usize]) -> Result<Var<'p>> {
        let y = ops::copy(x.value())?.reshape(shape)?;
        Ok(self.apply(y, &[x], || {
            Box::new(ReshapeBackward {
                x: x.node(),
                x_shape: x.shape().to_vec(),
            })
        }))
    }
}
