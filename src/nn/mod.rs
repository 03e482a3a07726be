//! The network's layers (SPEC section 9): each a forward and a backward function running the Rust
//! reference on `cpu` and the kernels of the same family on `emu` and `cuda`, and the
//! parameterised layers that register their weights in a [`crate::autograd::ParamStore`].
pub mod conv;
pub mod conv_precision;
mod cpu_gemm;
pub mod layers;
pub mod ncsn;
pub mod norm;
pub mod pool;

pub use conv::Conv2dCfg;
pub use conv_precision::ConvPrecision;
pub use layers::{CondInstanceNormPp, Conv2d};
pub use pool::PoolCfg;
