//! Kernel-level operations, below the autograd tape: each runs the Rust reference on `cpu` and
//! the kernel of the same name (`{op}_f32`) on `emu` and `cuda`. One module per kernel family;
//! the launch itself ([`launch`]) is private to this layer, so every kernel in kernels/*.cu is
//! launched from here and nowhere else. The functions take kernel-level arguments (tensors, f32
//! coefficients, flags, a [`PhiloxDraw`]); the layers above compute them.
pub mod conv;
pub mod conv_precision;
mod cpu_exp;
mod cpu_gemm;
#[cfg(target_arch = "x86_64")]
mod cpu_gemm_avx512;
mod cpu_parallel;
mod cpu_simd;
mod cpu_sum;
pub mod dropout;
mod elementwise;
pub mod embedding;
mod gbm;
pub mod group_norm;
mod launch;
mod loss;
pub mod matmul;
pub mod norm;
mod optim;
pub mod planes;
pub mod pool;
mod random;
mod reduce;
pub mod softmax;
mod softmax_xent;

pub use conv::Conv2dCfg;
pub use conv_precision::ConvPrecision;
pub(crate) use cpu_gemm::{gemm_all_cores, MatRef};
pub use elementwise::{
    add, axpby, concat_channels, copy, copy_into, elu, elu_backward, exp, fill, log, mul, relu,
    scale, silu, silu_backward, slice_channels, sub,
};
pub use gbm::{
    additive_forward, additive_langevin_step, gbm_dale_step, gbm_forward, gbm_sign_agnostic_step,
    FlipCounter, StepScalars,
};
pub use loss::{dsm_loss, mdsm_loss, LossAndGrad};
pub use optim::{adamw_step, egd_step, ema_update, global_norm, scale_in_place, AdamWCoefficients};
pub use pool::PoolCfg;
pub use random::{normal, philox_words, PhiloxDraw};
pub use reduce::{all_finite, mean, sum};
pub use softmax_xent::softmax_cross_entropy;
