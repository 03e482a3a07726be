//! Dale meets Langevin: a Rust + CUDA engine for multiplicative (geometric-Brownian-motion)
//! diffusion models. docs/SPEC.md is the mathematics; docs/DESIGN.md the architecture.
//!
//! Every operation runs on three backends ([`device::Device`]): `cpu` (native Rust, the
//! reference), `cuda` (the kernels in `kernels/` on a GPU) and `emu` (the same kernel source
//! compiled for the host and run by an emulator of the CUDA execution model).

pub mod autograd;
pub mod bench;
pub mod checkpoint;
pub mod checksum;
pub mod cli;
pub mod csv;
pub mod data;
pub mod device;
pub mod diffusion;
pub mod error;
pub mod eval;
pub mod generate;
pub mod image;
pub mod memory_budget;
pub mod metadata;
pub mod named;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod plot;
pub mod profile;
pub mod regular_file;
pub mod rng;
pub mod sample_file;
pub mod sweep;
pub mod tensor;
pub mod train;
#[cfg(test)]
mod ulp;

pub use device::Device;
pub use error::{Error, Result};
pub use tensor::Tensor;
