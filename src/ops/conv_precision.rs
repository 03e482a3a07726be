//! The arithmetic of the forward convolution: exact fp32 (the default), or tf32 operands with
//! fp32 accumulation, the form NVIDIA tensor cores run (kernels/conv.cu,
//! `conv2d_forward_tf32_f32`). tf32 keeps fp32's 8-bit exponent and 10 of its 23 mantissa bits,
//! so each product carries a relative error up to 2^-11 per operand; DESIGN.md section 5 tests
//! it at ~3e-4 relative against fp32.
//!
//! Opt-in for the whole process through `DML_CONV_PRECISION=tf32`; unset (or `fp32`), every
//! convolution is bit-for-bit the fp32 one. The backward passes are always fp32.
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// How the forward convolution multiplies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConvPrecision {
    /// fp32 operands and accumulation.
    #[default]
    Fp32,
    /// Operands rounded to tf32 ([`round_to_tf32`]), fp32 accumulation. On cpu the operands are
    /// rounded and the fp32 convolution runs: the reference the tensor-core kernel is tested against.
    Tf32,
}

impl ConvPrecision {
    /// The environment variable that selects the process-wide precision.
    pub const ENV: &'static str = "DML_CONV_PRECISION";

    /// `fp32` or `tf32` (case-insensitive).
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "fp32" => Ok(Self::Fp32),
            "tf32" => Ok(Self::Tf32),
            _ => Err(Error::invalid(format!(
                "{}={s:?}: expected fp32 or tf32",
                Self::ENV
            ))),
        }
    }

    /// The precision `DML_CONV_PRECISION` selects, read once per process; fp32 when unset.
    pub fn process_default() -> Result<Self> {
        static CHOSEN: OnceLock<std::result::Result<ConvPrecision, String>> = OnceLock::new();
        CHOSEN
            .get_or_init(|| match std::env::var(Self::ENV) {
                Ok(s) => Self::parse(&s).map_err(|e| e.to_string()),
                Err(std::env::VarError::NotPresent) => Ok(Self::Fp32),
                Err(e) => Err(format!("{}: {e}", Self::ENV)),
            })
            .clone()
            .map_err(Error::invalid)
    }
}

/// `v` rounded to tf32 as the GPU's `cvt.rna.tf32.f32` does: to nearest with ties away from
/// zero, keeping 10 mantissa bits (the low 13 bits of the result are zero). Infinities and NaN
/// pass through; the largest finite values round to infinity, as on the GPU.
pub fn round_to_tf32(v: f32) -> f32 {
    let bits = v.to_bits();
    if bits & 0x7f80_0000 == 0x7f80_0000 {
        return v;
    }
    // Adding half a unit of the last kept place to the magnitude and truncating rounds the
    // magnitude half away from zero; a carry into the exponent is the correct rounding up.
    f32::from_bits((bits + 0x1000) & 0xffff_e000)
}
