//! The three backends (docs/DESIGN.md section 1) and how one is chosen.
//!
//! - `cpu`: native Rust implementations, the reference semantics;
//! - `cuda`: the kernels in `kernels/*.cu` on a GPU, through cudarc;
//! - `emu`: the same kernel source compiled for the host and run by the emulator.
//!
//! `emu` and `cuda` share the launch code in [`launch`]: the same kernel, grid, block and arguments.
pub mod cuda;
pub mod emu;
pub mod graph;
pub mod kernel_report;
pub mod launch;
pub mod occupancy;
pub mod profile;

use std::fmt;
use std::sync::Arc;

use crate::error::Result;

pub use cuda::CudaDevice;

/// Order in which the emulator resumes the threads of a block between barriers. Running a kernel
/// in both orders and comparing the outputs exposes races.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EmuSchedule {
    #[default]
    Forward,
    Reverse,
}

#[derive(Clone)]
pub enum Device {
    Cpu,
    Emu(EmuSchedule),
    Cuda(Arc<CudaDevice>),
}

impl Device {
    pub fn emu() -> Self {
        Device::Emu(EmuSchedule::Forward)
    }

    /// The default device: the GPU when it can actually run our kernels, else the CPU.
    pub fn auto() -> Self {
        match CudaDevice::open(0) {
            Ok(dev) => Device::Cuda(dev),
            Err(_) => Device::Cpu,
        }
    }

    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }

    /// Whether data lives in host memory (cpu and emu).
    pub fn is_host(&self) -> bool {
        !matches!(self, Device::Cuda(_))
    }

    pub fn same(&self, other: &Device) -> bool {
        match (self, other) {
            (Device::Cpu, Device::Cpu) => true,
            (Device::Emu(_), Device::Emu(_)) => true,
            (Device::Cuda(a), Device::Cuda(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Waits for all queued work (a no-op on host backends).
    pub fn synchronize(&self) -> Result<()> {
        match self {
            Device::Cuda(dev) => dev.synchronize(),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Emu(EmuSchedule::Forward) => write!(f, "emu"),
            Device::Emu(EmuSchedule::Reverse) => write!(f, "emu (reverse schedule)"),
            Device::Cuda(dev) => write!(f, "cuda:{} ({})", dev.ordinal(), dev.name()),
        }
    }
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
