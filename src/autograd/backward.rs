//! The one recipe for a differentiable operation (docs/ADDING_A_KERNEL.md): its forward is a
//! method on [`Tape`](super::Tape) in its own file under autograd/ops/, which computes the value
//! with the kernel-level op in `crate::ops` and records a [`BackwardOp`] with whatever the
//! backward pass needs; the tape walks these in reverse without knowing what they are.
use super::tape::{Node, RecordedLayer};
use crate::error::Result;
use crate::tensor::Tensor;

/// What the tape stores for one recorded operation.
pub trait BackwardOp<'p> {
    /// Given `grad` = dL/d(output), adds dL/d(input) to `inputs` for every input that wants a
    /// gradient (check [`InputGrads::wants`] before computing one).
    fn backward(self: Box<Self>, grad: Tensor, inputs: &mut InputGrads) -> Result<()>;

    /// The operation as a network layer the benchmarks time by shape (convolutions and
    /// normalisations); `None` for the rest.
    fn layer(&self) -> Option<RecordedLayer> {
        None
    }
}

/// The gradients one backward step passes to the inputs of its operation.
#[derive(Default)]
pub struct InputGrads {
    pub(super) grads: Vec<(usize, Tensor)>,
}

impl InputGrads {
    /// Whether a gradient can flow to `input` (it depends on a parameter or a leaf).
    pub fn wants(&self, input: Node) -> bool {
        input.0.is_some()
    }

    /// Adds `grad` = dL/d(`input`); ignored for an input that wants none.
    pub fn add(&mut self, input: Node, grad: Tensor) {
        if let Some(id) = input.0 {
            self.grads.push((id, grad));
        }
    }
}
