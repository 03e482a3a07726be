//! The differentiable operations, one file each: a `Tape` method for the forward pass and a
//! [`super::BackwardOp`] for the backward pass (docs/ADDING_A_KERNEL.md).
mod conv;
mod elementwise;
mod matmul;
mod norm;
mod pool;
mod softmax;
