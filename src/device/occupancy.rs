//! Theoretical occupancy on sm_90 (H100, H200): how many blocks of a kernel fit on one SM at
//! once, given its registers per thread, its shared memory per block and the block size, by the
//! rules of NVIDIA's occupancy calculator for compute capability 9.0:
//! - 65536 registers per SM, allocated per warp in units of 256 (a warp of a kernel with `r`
//!   registers per thread takes `r * 32` rounded up to a multiple of 256);
//! - 228 KB of shared memory per SM at the largest carveout, 1 KB of it reserved per block (so a
//!   block may use at most 227 KB), allocated in units of 128 bytes;
//! - at most 2048 threads (64 warps) and 32 blocks per SM.
//!
//! Occupancy is the resident warps over 64. The per-sub-partition register split and the driver's
//! choice of carveout can only lower it, so this is an upper bound, the figure Nsight Compute
//! calls "theoretical occupancy".

const REGISTERS_PER_SM: u32 = 65_536;
const REGISTER_UNIT: u32 = 256;
const SHARED_BYTES_PER_SM: u32 = 228 * 1024;
const SHARED_RESERVED_PER_BLOCK: u32 = 1024;
const SHARED_UNIT: u32 = 128;
const MAX_WARPS_PER_SM: u32 = 64;
const MAX_BLOCKS_PER_SM: u32 = 32;
const WARP: u32 = 32;

/// What bounds the number of resident blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limiter {
    Warps,
    Blocks,
    Registers,
    SharedMemory,
}

impl Limiter {
    pub fn name(self) -> &'static str {
        match self {
            Limiter::Warps => "warps",
            Limiter::Blocks => "blocks",
            Limiter::Registers => "registers",
            Limiter::SharedMemory => "shared memory",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Occupancy {
    pub blocks_per_sm: u32,
    pub warps_per_sm: u32,
    pub limiter: Limiter,
}

impl Occupancy {
    /// Resident warps over the 64 an SM can hold.
    pub fn fraction(&self) -> f64 {
        self.warps_per_sm as f64 / MAX_WARPS_PER_SM as f64
    }
}

/// Theoretical sm_90 occupancy of a kernel with `registers` per thread and `shared_bytes` of
/// shared memory per block, launched with `block_threads` threads per block.
pub fn sm90(registers: u32, shared_bytes: u32, block_threads: u32) -> Occupancy {
    let warps_per_block = block_threads.div_ceil(WARP).max(1);
    let registers_per_warp = (registers * WARP).next_multiple_of(REGISTER_UNIT).max(1);
    let shared_per_block = shared_bytes.next_multiple_of(SHARED_UNIT) + SHARED_RESERVED_PER_BLOCK;
    let limits = [
        (MAX_WARPS_PER_SM / warps_per_block, Limiter::Warps),
        (MAX_BLOCKS_PER_SM, Limiter::Blocks),
        (
            REGISTERS_PER_SM / registers_per_warp / warps_per_block,
            Limiter::Registers,
        ),
        (
            SHARED_BYTES_PER_SM / shared_per_block,
            Limiter::SharedMemory,
        ),
    ];
    let (blocks_per_sm, limiter) = limits
        .into_iter()
        .min_by_key(|(blocks, _)| *blocks)
        .expect("four limits");
    Occupancy {
        blocks_per_sm,
        warps_per_sm: blocks_per_sm * warps_per_block,
        limiter,
    }
}
