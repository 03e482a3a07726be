//! The NCSN conditional RefineNet score network (SPEC section 9, reference/NETWORK.md): presets
//! and stage description ([`config`]), the conditional residual block ([`residual`]), the refine
//! block and its parts ([`refine`]) and the whole model ([`network`]). Parameter names and order
//! are PyTorch's, so weights load from and compare with reference/ncsn.py directly.
pub mod config;
pub mod network;
pub mod refine;
pub mod residual;

pub use config::{NcsnConfig, RefineSpec, ResidualSpec, Topology, IMAGE_SIZES};
pub use network::Ncsn;
