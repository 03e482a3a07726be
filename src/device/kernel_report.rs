//! What the compiler made of every kernel, read at build time (build.rs): registers, stack,
//! spills and static shared memory per kernel and architecture as ptxas reported them, and the
//! tensor-core (MMA) instructions in each kernel's SASS as cuobjdump disassembled them from the
//! fatbin. `dml info --kernels` prints it, so a binary's kernels can be inspected without a GPU.

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
    /// `__shared__` storage per block (the launches use no dynamic shared memory).
    pub static_shared_bytes: u32,
    /// MMA instructions in the SASS; None when the build could not read SASS ([`SASS_READER`]).
    pub mma_instructions: Option<u32>,
    /// The distinct MMA opcodes, space-separated (`HMMA.1684.F32.TF32`).
    pub mma_opcodes: &'static str,
}

impl KernelResources {
    pub fn spills(&self) -> bool {
        self.spill_store_bytes > 0 || self.spill_load_bytes > 0
    }
}

include!(concat!(env!("OUT_DIR"), "/kernel_report.rs"));
