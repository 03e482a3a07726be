//! Layers and networks above the tape (SPEC section 9): parameterised layers that register their
//! weights in a [`crate::autograd::ParamStore`] and call the tape's operations, and the NCSN
//! network built from them; and the FID Inception, a forward-only network on the ops directly. The kernel-level operations they use live in [`crate::ops`].
pub mod inception;
pub mod layers;
pub mod ncsn;

pub use crate::ops::{Conv2dCfg, ConvPrecision, PoolCfg};
pub use layers::{CondInstanceNormPp, Conv2d};
