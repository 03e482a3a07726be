//! Tensor operations. Each runs the Rust reference on `cpu` and the kernel of the same name
//! (`{op}_f32`) on `emu` and `cuda`.
mod elementwise;
mod random;
mod reduce;
mod softmax_xent;

pub use elementwise::{
    add, axpby, copy, copy_into, elu, elu_backward, exp, fill, log, mul, scale, sub,
};
pub use random::{normal, philox_words};
pub use reduce::{mean, sum};
pub use softmax_xent::softmax_cross_entropy;
