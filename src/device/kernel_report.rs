//! What the compiler made of every kernel, read at build time (build.rs): registers, stack,
//! spills and static shared memory per kernel and architecture as ptxas reported them, and the
//! tensor-core (MMA) and cp.async (LDGSTS) instructions in each kernel's SASS as cuobjdump
//! disassembled them from the fatbin. `dml info --kernels` prints it, so a binary's kernels can
//! be inspected without a GPU.

/// One kernel compiled for one architecture.
pub struct KernelResources {
    /// The `kernels/<module>.cu` it comes from.
    pub module: &'static str,
    pub kernel: &'static str,
    /// `sm_80`, `sm_90`.
    pub arch: &'static str,
    /// Registers per thread.
    pub registers: u32,
    pub stack_bytes: u32,
    pub spill_store_bytes: u32,
    pub spill_load_bytes: u32,
    /// `__shared__` storage per block; [`fixed_dynamic_shared_bytes`] adds what a launch gives.
    pub static_shared_bytes: u32,
    /// MMA instructions in the SASS; None when the build could not read SASS ([`SASS_READER`]).
    pub mma_instructions: Option<u32>,
    /// The distinct MMA opcodes, space-separated (`HMMA.1684.F32.TF32`).
    pub mma_opcodes: &'static str,
    /// Asynchronous global-to-shared copies (LDGSTS, cp.async) in the SASS; None as above.
    pub async_copy_instructions: Option<u32>,
}

impl KernelResources {
    pub fn spills(&self) -> bool {
        self.spill_store_bytes > 0 || self.spill_load_bytes > 0
    }

    /// Shared memory per block: static, and dynamic where every launch gives the same amount.
    pub fn shared_bytes(&self) -> u32 {
        self.static_shared_bytes + fixed_dynamic_shared_bytes(self.kernel)
    }
}

/// The dynamic shared memory a kernel is always launched with: the cp.async stages of the
/// pipelined convolutions (src/ops/conv.rs). The CIN++ kernels' per-plane statistics (2 floats a
/// channel, a few hundred bytes) vary with the layer and are not counted.
pub fn fixed_dynamic_shared_bytes(kernel: &str) -> u32 {
    match kernel {
        "conv2d_forward_tf32_channel_slices_f32"
        | "conv2d_backward_data_tf32_channel_slices_f32" => {
            crate::ops::conv::MMA_PIPELINED_SHARED_BYTES
        }
        _ => 0,
    }
}

include!(concat!(env!("OUT_DIR"), "/kernel_report.rs"));
