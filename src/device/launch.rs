//! One launch path for `emu` and `cuda`: the kernel name, the geometry and the arguments, in the
//! `void**` convention of `cuLaunchKernel` that the emulator's launchers share.
use std::ffi::c_void;

use super::Device;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Grid, block and dynamic shared memory of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchGeometry {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
}

/// Threads per block for element-wise kernels: a multiple of the warp size.
pub const ELEMENTWISE_BLOCK: u32 = 256;
/// Blocks beyond this many are not needed: the kernels loop with a grid stride.
const MAX_ELEMENTWISE_GRID: u64 = 65_535;

impl LaunchGeometry {
    pub fn new(grid: [u32; 3], block: [u32; 3], shared_bytes: u32) -> Self {
        Self {
            grid,
            block,
            shared_bytes,
        }
    }

    /// One thread per element, grid-stride loops beyond `MAX_ELEMENTWISE_GRID` blocks.
    pub fn elementwise(n: usize) -> Self {
        let blocks = (n as u64)
            .div_ceil(ELEMENTWISE_BLOCK as u64)
            .clamp(1, MAX_ELEMENTWISE_GRID);
        Self::new([blocks as u32, 1, 1], [ELEMENTWISE_BLOCK, 1, 1], 0)
    }

    /// A fixed number of blocks for deterministic two-pass reductions.
    pub fn reduction(n: usize, max_blocks: u32) -> Self {
        let blocks = (n as u64)
            .div_ceil(ELEMENTWISE_BLOCK as u64)
            .clamp(1, max_blocks as u64);
        Self::new([blocks as u32, 1, 1], [ELEMENTWISE_BLOCK, 1, 1], 0)
    }
}

/// A kernel argument. Tensors are passed as device pointers (host pointers on `emu`).
pub enum Arg<'a> {
    In(&'a Tensor),
    Out(&'a mut Tensor),
    F32(f32),
    I32(i32),
    U32(u32),
    U64(u64),
}

/// Launches `kernel` (an `extern "C" __global__` exported from kernels/*.cu) on `device`.
/// Host (`cpu`) devices have no kernels: callers use the Rust reference there.
pub fn launch(
    device: &Device,
    kernel: &str,
    geometry: LaunchGeometry,
    args: &mut [Arg<'_>],
) -> Result<()> {
    for a in args.iter() {
        let t = match a {
            Arg::In(t) => &**t,
            Arg::Out(t) => &**t,
            _ => continue,
        };
        if !t.device().same(device) {
            return Err(Error::DeviceMismatch {
                op: "launch",
                a: device.to_string(),
                b: t.device().to_string(),
            });
        }
    }
    match device {
        Device::Cpu => Err(Error::invalid(format!(
            "kernel {kernel} launched on the cpu backend, which runs the Rust reference instead"
        ))),
        Device::Emu(schedule) => {
            let mut slots = arg_slots(args, |t| t.host_ptr() as u64);
            let mut params = param_ptrs(&mut slots);
            super::emu::launch(kernel, geometry, *schedule, &mut params)
        }
        Device::Cuda(dev) => dev.launch(kernel, geometry, args),
    }
}

impl Arg<'_> {
    /// A scalar argument as the 8-byte slot the kernel reads (the value in the low bytes);
    /// `None` for tensors, whose slot is a pointer the backend provides.
    pub(crate) fn scalar_bits(&self) -> Option<u64> {
        match self {
            Arg::In(_) | Arg::Out(_) => None,
            Arg::F32(v) => Some(v.to_bits() as u64),
            Arg::I32(v) => Some(*v as u32 as u64),
            Arg::U32(v) => Some(*v as u64),
            Arg::U64(v) => Some(*v),
        }
    }
}

/// Each argument as the 8-byte value the kernel reads.
fn arg_slots(args: &[Arg<'_>], ptr: impl Fn(&Tensor) -> u64) -> Vec<u64> {
    args.iter()
        .map(|a| match a {
            Arg::In(t) => ptr(t),
            Arg::Out(t) => ptr(t),
            scalar => scalar.scalar_bits().expect("not a tensor"),
        })
        .collect()
}

pub(crate) fn param_ptrs(slots: &mut [u64]) -> Vec<*mut c_void> {
    slots
        .iter_mut()
        .map(|s| s as *mut u64 as *mut c_void)
        .collect()
}
