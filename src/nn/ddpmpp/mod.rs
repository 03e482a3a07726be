//! The DDPM++ score network (SPEC section 11): score_sde's NCSN++ model in the DDPM++
//! configuration the paper's released code trains CIFAR-10 with. Configuration and presets
//! ([`config`]), its layers with score_sde's initialisation ([`layers`]), the BigGAN residual block
//! and the attention block ([`blocks`]) and the U-Net ([`network`]). Parameter names and order
//! are score_sde's (`all_modules.<i>.<layer>.<tensor>`), so its checkpoints' tensors map one to
//! one and the golden files of reference/make_ddpmpp_golden.py compare directly.
pub mod blocks;
pub mod config;
pub mod layers;
pub mod network;

pub use config::DdpmppConfig;
pub use network::Ddpmpp;
