//! The arithmetic of the convolutions (and the DDPM++ matrix products) of the score network, all
//! three passes (SPEC section 9.3): exact fp32 (the default), or tf32 or bf16 operands with fp32
//! accumulation, the forms NVIDIA tensor cores run (kernels/conv.cu, the `conv2d_*_tf32_f32` and
//! `conv2d_*_bf16_f32` kernels; kernels/mma_operands.cuh). tf32 keeps fp32's 8-bit exponent and 10
//! of its 23 mantissa bits, so each operand carries a relative error up to 2^-11; bf16 keeps 7,
//! up to 2^-8. DESIGN.md section 5 tests tf32 at ~3e-4 relative against fp32, bf16 at ~3e-3.
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
        /// Operands rounded to bf16 ([`round_to_bf16`]), fp32 accumulation: half the shared memory
        /// and twice the depth per tensor-core instruction of tf32, for 8 times its rounding error.
        /// On cpu, as tf32: the operands rounded, then the fp32 convolution.
        Bf16 = "bf16" => "bf16 operands (7-bit mantissa), fp32 accumulation: tensor cores, coarser than tf32",
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

    /// Whether the emu/cuda kernels of this precision multiply on tensor cores.
    pub fn on_tensor_cores(self) -> bool {
        self != ConvPrecision::Fp32
    }

    /// `v` as an operand of this precision's products: unchanged in fp32, else rounded as the
    /// tensor-core kernels stage it.
    pub fn round_operand(self, v: f32) -> f32 {
        match self {
            ConvPrecision::Fp32 => v,
            ConvPrecision::Tf32 => round_to_tf32(v),
            ConvPrecision::Bf16 => round_to_bf16(v),
        }
    }

    /// A copy of `v` as this precision's kernels see their operands (the cpu's reference for them).
    pub fn operand_copy(self, v: &[f32]) -> Vec<f32> {
        v.iter().map(|&e| self.round_operand(e)).collect()
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

/// `v` rounded to bf16 as the GPU's `cvt.rn.bf16.f32` (and `__float2bfloat16`) does: to nearest
/// with ties to even, keeping 7 mantissa bits (the low 16 bits of the result are zero). Infinities
/// pass through, the largest finite values round to infinity, and NaN stays NaN.
pub fn round_to_bf16(v: f32) -> f32 {
    if v.is_nan() {
        return v;
    }
    let bits = v.to_bits();
    // Adding 0x7fff plus the lowest kept bit rounds the dropped half to nearest, ties to even; a
    // carry into the exponent is the correct rounding up.
    f32::from_bits((bits + 0x7fff + ((bits >> 16) & 1)) & 0xffff_0000)
}
