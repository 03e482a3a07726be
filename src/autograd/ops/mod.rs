//! The differentiable operations, one file each: a `Tape` method for the forward pass and a
//! [`super::BackwardOp`] for the backward pass (docs/ADDING_A_KERNEL.md).
mod concat;
mod conv;
mod dropout;
mod elementwise;
mod group_norm;
mod matmul;
mod norm;
mod planes;
mod pool;
mod reshape;
mod softmax;
