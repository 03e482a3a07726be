//! The `emu` backend: kernels/*.cu compiled for the host (see build.rs and kernels/emu/).
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

unsafe extern "C" {
    fn emu_last_error() -> *const std::ffi::c_char;
}

/// Names of all kernels the emulator can run.
pub fn kernel_names() -> impl Iterator<Item = &'static str> {
    EMU_KERNELS.iter().map(|(name, _)| *name)
}

pub(crate) fn launch(
    kernel: &str,
    geometry: LaunchGeometry,
    schedule: EmuSchedule,
    params: &mut [*mut c_void],
) -> Result<()> {
    let launcher = EMU_KERNELS
        .iter()
        .find(|(name, _)| *name == kernel)
        .map(|(_, f)| *f)
        .ok_or_else(|| Error::UnknownKernel(kernel.to_string()))?;
    let cfg = EmuLaunchCfg {
        grid: geometry.grid,
        block: geometry.block,
        shared_bytes: geometry.shared_bytes,
        reverse_schedule: (schedule == EmuSchedule::Reverse) as c_int,
    };
    // SAFETY: `params` holds one pointer per kernel parameter, each to an 8-byte slot holding a
    // value of the parameter's type (pointers into live host tensors), as the launcher expects.
    let code = unsafe { launcher(&cfg, params.as_mut_ptr()) };
    if code == 0 {
        return Ok(());
    }
    // SAFETY: emu_last_error returns a NUL-terminated string owned by the runtime.
    let message = unsafe { CStr::from_ptr(emu_last_error()) }
        .to_string_lossy()
        .into_owned();
    Err(Error::Emulator {
        kernel: kernel.to_string(),
        message,
    })
}
