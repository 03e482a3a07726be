//! Softmax over the last axis on the tape ([`softmax::softmax_rows`]): the attention weights of
//! the DDPM++ self-attention (docs/SPEC.md section 11 (DDPM++)).
use std::cell::OnceCell;
use std::rc::Rc;

use crate::autograd::backward::{BackwardOp, InputGrads};
use crate::autograd::tape::{Node, Tape, Var};
use crate::error::{Error, Result};
use crate::ops::softmax;
use crate::tensor::Tensor;

/// The backward pass reads the op's own output y (dx = y (dy - sum(dy y))), not its input. The
/// output only exists as a `Var` once the tape has recorded the op, so the op holds a cell the
/// caller fills with it right after: the same tensor, shared, rather than a copy of it or the
/// input kept to recompute it (either would keep a second attention-sized tensor alive until
/// the backward pass).
struct SoftmaxRowsBackward<'p> {
    x: Node,
    y: Rc<OnceCell<Var<'p>>>,
}

impl<'p> BackwardOp<'p> for SoftmaxRowsBackward<'p> {
    fn backward(self: Box<Self>, g: Tensor, inputs: &mut InputGrads) -> Result<()> {
        if inputs.wants(self.x) {
            let y = self.y.get().ok_or_else(|| {
                Error::invalid("softmax_rows backward: the output was never recorded")
            })?;
            inputs.add(self.x, softmax::softmax_rows_backward(y.value(), &g)?);
        }
        Ok(())
    }
}

impl<'p> Tape<'p> {
    /// [`softmax::softmax_rows`]: the softmax over the last axis of `x`, in its shape.
    pub fn softmax_rows(&mut self, x: &Var<'p>) -> Result<Var<'p>> {
        let y = softmax::softmax_rows(x.value())?;
        let output = Rc::new(OnceCell::new());
        let y = self.apply(y, &[x], || {
            Box::new(SoftmaxRowsBackward {
                x: x.node(),
                y: output.clone(),
            })
        });
        // Unrecorded (inference, or no gradient wanted), nothing holds the cell but this
        // function, and it is dropped here.
        let _ = output.set(y.clone());
        Ok(y)
    }
}
