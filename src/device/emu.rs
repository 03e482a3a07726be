//! The `emu` backend: kernels/*.cu compiled for the host (see build.rs and kernels/emu/), and its
//! profiling build, which also measures each launch's memory traffic and work (kernels/emu/
//! emu_profiler.h, [`super::profile`]).
use std::ffi::{c_int, c_void, CStr};

use super::launch::LaunchGeometry;
use super::EmuSchedule;
use crate::error::{Error, Result};

/// Mirrors `emu::LaunchCfg` in kernels/emu/cuda_emu.h.
#[repr(C)]
pub(crate) struct EmuLaunchCfg {
    grid: [u32; 3],
    block: [u32; 3],
    shared_bytes: u32,
    reverse_schedule: c_int,
}

type EmuLauncher = unsafe extern "C" fn(*const EmuLaunchCfg, *mut *mut c_void) -> c_int;

include!(concat!(env!("OUT_DIR"), "/emu_kernels.rs"));

/// Mirrors `emu::ProfileRange` in kernels/emu/emu_profiler.h.
#[repr(C)]
struct EmuProfileRange {
    begin: u64,
    bytes: u64,
}

/// What the profiling emulator measured over one launch (mirrors `emu::ProfileStats` in
/// kernels/emu/emu_profiler.h, which defines each count). Requests are warp-level accesses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmuProfileStats {
    pub global_load_requests: u64,
    pub global_store_requests: u64,
    pub global_load_bytes: u64,
    pub global_store_bytes: u64,
    pub global_load_sectors: u64,
    pub global_store_sectors: u64,
    pub global_load_min_sectors: u64,
    pub global_store_min_sectors: u64,
    pub dram_read_sectors: u64,
    pub dram_write_sectors: u64,
    pub shared_load_requests: u64,
    pub shared_store_requests: u64,
    pub shared_wavefronts: u64,
    pub shared_ideal_wavefronts: u64,
    pub shared_max_ways: u64,
    pub warp_accesses: u64,
    pub divergent_warp_accesses: u64,
    pub simt_flops: u64,
    pub tensor_flops: u64,
    /// The part of `tensor_flops` with bf16 operands (twice tf32's peak rate).
    pub bf16_tensor_flops: u64,
    pub atomics: u64,
    pub block_barriers: u64,
    pub warp_barriers: u64,
    pub unclassified_accesses: u64,
}

unsafe extern "C" {
    fn emu_last_error() -> *const std::ffi::c_char;
    fn emu_profiled_last_error() -> *const std::ffi::c_char;
    fn emu_profiled_profile_launch(
        launcher: EmuLauncher,
        cfg: *const EmuLaunchCfg,
        params: *mut *mut c_void,
        globals: *const EmuProfileRange,
        n_globals: usize,
        out: *mut EmuProfileStats,
    ) -> c_int;
}

/// Names of all kernels the emulator can run.
pub fn kernel_names() -> impl Iterator<Item = &'static str> {
    EMU_KERNELS.iter().map(|(name, _)| *name)
}

fn launcher(table: &[(&str, EmuLauncher)], kernel: &str) -> Result<EmuLauncher> {
    table
        .iter()
        .find(|(name, _)| *name == kernel)
        .map(|(_, f)| *f)
        .ok_or_else(|| Error::UnknownKernel(kernel.to_string()))
}

fn launch_cfg(geometry: LaunchGeometry, schedule: EmuSchedule) -> EmuLaunchCfg {
    EmuLaunchCfg {
        grid: geometry.grid,
        block: geometry.block,
        shared_bytes: geometry.shared_bytes,
        reverse_schedule: (schedule == EmuSchedule::Reverse) as c_int,
    }
}

pub(crate) fn launch(
    kernel: &str,
    geometry: LaunchGeometry,
    schedule: EmuSchedule,
    params: &mut [*mut c_void],
) -> Result<()> {
    let launcher = launcher(EMU_KERNELS, kernel)?;
    let cfg = launch_cfg(geometry, schedule);
    // SAFETY: `params` holds one pointer per kernel parameter, each to an 8-byte slot holding a
    // value of the parameter's type (pointers into live host tensors), as the launcher expects.
    let code = unsafe { launcher(&cfg, params.as_mut_ptr()) };
    // SAFETY: emu_last_error returns a NUL-terminated string owned by the runtime.
    check(kernel, code, unsafe { emu_last_error() })
}

/// Runs `kernel` on the profiling emulator. `buffers` are the (address, bytes) of every buffer
/// argument: the global memory the launch may touch.
pub(crate) fn launch_profiled(
    kernel: &str,
    geometry: LaunchGeometry,
    schedule: EmuSchedule,
    params: &mut [*mut c_void],
    buffers: &[(u64, u64)],
) -> Result<EmuProfileStats> {
    let launcher = launcher(EMU_PROFILED_KERNELS, kernel)?;
    let cfg = launch_cfg(geometry, schedule);
    let ranges: Vec<EmuProfileRange> = buffers
        .iter()
        .map(|&(begin, bytes)| EmuProfileRange { begin, bytes })
        .collect();
    let mut stats = EmuProfileStats::default();
    // SAFETY: as for `launch`; `ranges` and `stats` outlive the call, which only reads the one
    // and writes the other.
    let code = unsafe {
        emu_profiled_profile_launch(
            launcher,
            &cfg,
            params.as_mut_ptr(),
            ranges.as_ptr(),
            ranges.len(),
            &mut stats,
        )
    };
    // SAFETY: emu_profiled_last_error returns a NUL-terminated string owned by the runtime.
    check(kernel, code, unsafe { emu_profiled_last_error() })?;
    Ok(stats)
}

fn check(kernel: &str, code: c_int, last_error: *const std::ffi::c_char) -> Result<()> {
    if code == 0 {
        return Ok(());
    }
    // SAFETY: the runtime's last-error string is NUL-terminated and lives until the next launch
    // on this thread.
    let message = unsafe { CStr::from_ptr(last_error) }
        .to_string_lossy()
        .into_owned();
    Err(Error::Emulator {
        kernel: kernel.to_string(),
        message,
    })
}
