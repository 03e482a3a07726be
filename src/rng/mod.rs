//! Counter-based random numbers (SPEC section 5).
mod box_muller;
mod philox;

pub use philox::{
    fill_normals, normal, philox4x32_10, philox_bits, uniform_closed_open, uniform_open_closed,
};

/// The Philox streams: one per purpose, so that adding a use of randomness never shifts another.
pub mod stream {
    pub const TEST: u32 = 0;
    pub const FORWARD_NOISE: u32 = 1;
    pub const LEVELS: u32 = 2;
    pub const SAMPLER: u32 = 3;
    pub const SAMPLER_INIT: u32 = 4;
    pub const PARAM_INIT: u32 = 5;
    pub const DATA_ORDER: u32 = 6;
    pub const DROPOUT: u32 = 7;
    pub const LEVEL_LOSS: u32 = 8;
}
