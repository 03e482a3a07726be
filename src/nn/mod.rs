//! Layers and networks above the tape: parameterised layers that register their weights in a
//! [`crate::autograd::ParamStore`] and call the tape's operations; the score networks built from
//! them, NCSN (SPEC section 9) and DDPM++ (section 11), behind one [`ScoreNet`] chosen by a
//! [`Preset`]; and the FID Inception, a forward-only network on the ops directly. The
//! kernel-level operations they use live in [`crate::ops`].
pub mod ddpmpp;
pub mod inception;
pub mod layers;
pub mod ncsn;
pub mod preset;
pub mod score_net;

pub use crate::ops::{Conv2dCfg, ConvPrecision, PoolCfg};
pub use layers::{CondInstanceNormPp, Conv2d};
pub use preset::{Family, Preset};
pub use score_net::{ScoreNet, ScoreNetConfig};
