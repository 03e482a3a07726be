//! The arithmetic of the convolutions of the score network, all three passes (SPEC section 9):
//! exact fp32 (the default), or tf32 operands with fp32 accumulation, the form NVIDIA tensor cores
//! run (kernels/conv.cu, the `conv2d_*_tf32_f32` kernels). tf32 keeps fp32's 8-bit exponent and 10 of its
//! 23 mantissa bits, so each product carries a relative error up to 2^-11 per operand; DESIGN.md
//! section 5 tests it at ~3e-4 relative against fp32.
//!
//! Chosen per network and carried by each convolution's [`Conv2dCfg`](super::Conv2dCfg): `dml
//! train --precision` stores it in the checkpoint, so a resumed run keeps its arithmetic (SPEC
//! section 5: a resumed run equals an uninterrupted one). A new run takes
//! [`ConvPrecision::default_for`] its device: tf32 on `cuda`, as PyTorch's default for cuDNN
//! convolutions, fp32 on the host backends. With [`ConvPrecision::Fp32`] every convolution is
//! bit-for-bit the fp32 one.

use crate::device::Device;

crate::named::value_names! {
    /// How the convolutions multiply, forward and backward.
    #[derive(Default, Hash)]
    pub enum ConvPrecision parsed as "convolution precision" {
        /// fp32 operands and accumulation.
        #[default]
        Fp32 = "fp32" => "fp32 operands and accumulation (exact; the default on cpu and emu)",
        /// Operands rounded to tf32 ([`round_to_tf32`]), fp32 accumulation. On cpu the operands are
        /// rounded and the fp32 convolution runs: the reference the tensor-core kernel is tested against.
        Tf32 = "tf32" => "tf32 operands (10-bit mantissa), fp32 accumulation: tensor cores (the default on cuda)",
    }
}

impl ConvPrecision {
    /// The precision of a new run on `device` when none is asked for: tf32 on `cuda`, where it
    /// puts every convolution pass on tensor cores as PyTorch does by default; fp32 on `cpu` and
    /// `emu`, where tf32 only adds the operand rounding.
    pub fn default_for(device: &Device) -> Self {
        match device {
            Device::Cuda(_) => ConvPrecision::Tf32,
            Device::Cpu | Device::Emu(_) => ConvPrecision::Fp32,
        }
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
