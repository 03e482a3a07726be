//! One launch path for `emu` and `cuda`: the kernel name, the geometry and the arguments, in the
//! `void**` convention of `cuLaunchKernel` that the emulator's launchers share.
//!
//! Every launch is checked against the kernel's CUDA signature before it reaches the emulator or
//! the GPU: build.rs reads each `extern "C" __global__` signature in kernels/*.cu into
//! [`KERNEL_SIGNATURES`], and [`launch`] compares the argument count, each scalar's type and each
//! buffer's constness and element type with it. A kernel reads its parameters by position from
//! 8-byte slots, so a mismatch would otherwise be read as garbage (or past the slot array); here it
//! is an error naming the kernel, the parameter and both types. (Buffer lengths are the kernel's
//! own contract with its caller in ops/, which checks shapes before launching.)
use std::ffi::c_void;

use cudarc::driver::CudaSlice;

use super::Device;
use crate::error::{Error, Result};

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

/// Memory a kernel reads, on the backend that will run it.
pub enum Buffer<'a> {
    /// Host memory (the emulator's "device" memory).
    Host(&'a [f32]),
    Cuda(&'a CudaSlice<f32>),
}

/// Memory a kernel writes.
pub enum BufferMut<'a> {
    Host(&'a mut [f32]),
    Cuda(&'a mut CudaSlice<f32>),
}

/// A kernel argument.
pub enum KernelArg<'a> {
    /// A `const float*` parameter.
    In(Buffer<'a>),
    /// A `float*` parameter.
    Out(BufferMut<'a>),
    /// A `uint32_t*` parameter: 32-bit words carried in f32 storage, reinterpreted, never
    /// converted.
    OutWords(BufferMut<'a>),
    F32(f32),
    I32(i32),
    U32(u32),
    U64(u64),
}

/// The C type of a kernel parameter (the types kernels/*.cu use; build.rs refuses others).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamType {
    ConstF32Ptr,
    MutF32Ptr,
    MutU32Ptr,
    F32,
    I32,
    U32,
    U64,
}

impl ParamType {
    fn c_name(self) -> &'static str {
        match self {
            ParamType::ConstF32Ptr => "const float*",
            ParamType::MutF32Ptr => "float*",
            ParamType::MutU32Ptr => "uint32_t*",
            ParamType::F32 => "float",
            ParamType::I32 => "int",
            ParamType::U32 => "uint32_t",
            ParamType::U64 => "uint64_t",
        }
    }
}

/// A kernel's parameters, by name and type, in order.
pub struct KernelSignature {
    pub name: &'static str,
    pub params: &'static [(&'static str, ParamType)],
}

include!(concat!(env!("OUT_DIR"), "/kernel_signatures.rs"));

/// The signature of `kernel`, or an error for a name no kernels/*.cu exports.
pub fn signature(kernel: &str) -> Result<&'static KernelSignature> {
    KERNEL_SIGNATURES
        .iter()
        .find(|s| s.name == kernel)
        .ok_or_else(|| Error::UnknownKernel(kernel.to_string()))
}

impl KernelArg<'_> {
    /// The parameter type this argument can be passed as.
    fn param_type(&self) -> ParamType {
        match self {
            KernelArg::In(_) => ParamType::ConstF32Ptr,
            KernelArg::Out(_) => ParamType::MutF32Ptr,
            KernelArg::OutWords(_) => ParamType::MutU32Ptr,
            KernelArg::F32(_) => ParamType::F32,
            KernelArg::I32(_) => ParamType::I32,
            KernelArg::U32(_) => ParamType::U32,
            KernelArg::U64(_) => ParamType::U64,
        }
    }

    /// Whether the argument's memory lives where `device` runs kernels.
    fn on(&self, device: &Device) -> bool {
        let host = match self {
            KernelArg::In(b) => matches!(b, Buffer::Host(_)),
            KernelArg::Out(b) | KernelArg::OutWords(b) => matches!(b, BufferMut::Host(_)),
            _ => return true,
        };
        host == device.is_host()
    }

    /// A scalar as the 8-byte slot the kernel reads (the value in the low bytes); `None` for
    /// buffers, whose slot is an address the backend provides.
    pub(crate) fn scalar_bits(&self) -> Option<u64> {
        match self {
            KernelArg::In(_) | KernelArg::Out(_) | KernelArg::OutWords(_) => None,
            KernelArg::F32(v) => Some(v.to_bits() as u64),
            KernelArg::I32(v) => Some(*v as u32 as u64),
            KernelArg::U32(v) => Some(*v as u64),
            KernelArg::U64(v) => Some(*v),
        }
    }

    /// The address and size in bytes of a host buffer; `None` for scalars and GPU memory.
    fn host_range(&self) -> Option<(u64, u64)> {
        match self {
            KernelArg::In(Buffer::Host(b)) => Some((b.as_ptr() as u64, 4 * b.len() as u64)),
            KernelArg::Out(BufferMut::Host(b)) | KernelArg::OutWords(BufferMut::Host(b)) => {
                Some((b.as_ptr() as u64, 4 * b.len() as u64))
            }
            _ => None,
        }
    }

    /// The slot of a host buffer (its address) or a scalar; `None` for GPU memory.
    fn host_slot(&mut self) -> Option<u64> {
        match self {
            KernelArg::In(Buffer::Host(b)) => Some(b.as_ptr() as u64),
            KernelArg::Out(BufferMut::Host(b)) | KernelArg::OutWords(BufferMut::Host(b)) => {
                Some(b.as_mut_ptr() as u64)
            }
            KernelArg::In(Buffer::Cuda(_))
            | KernelArg::Out(BufferMut::Cuda(_))
            | KernelArg::OutWords(BufferMut::Cuda(_)) => None,
            scalar => scalar.scalar_bits(),
        }
    }
}

/// Checks `args` against `kernel`'s signature: count, and each argument's type.
pub fn check_arguments(kernel: &str, args: &[KernelArg<'_>]) -> Result<()> {
    let sig = signature(kernel)?;
    let mismatch = |detail: String| Error::KernelArguments {
        kernel: kernel.to_string(),
        detail,
    };
    if args.len() != sig.params.len() {
        return Err(mismatch(format!(
            "{} arguments given, the kernel takes {} ({})",
            args.len(),
            sig.params.len(),
            sig.params
                .iter()
                .map(|(name, ty)| format!("{} {name}", ty.c_name()))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    for (i, (arg, (name, want))) in args.iter().zip(sig.params).enumerate() {
        let got = arg.param_type();
        if got != *want {
            return Err(mismatch(format!(
                "argument {i} (`{name}`) is {}, given {}",
                want.c_name(),
                got.c_name()
            )));
        }
    }
    Ok(())
}

thread_local! {
    /// Kernels launched by this thread (each launch is issued by the thread that calls it, so
    /// tests and benchmarks on other threads do not disturb a count).
    static LAUNCHES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Kernels this thread has launched so far, on `emu` and `cuda`: the difference over a network
/// pass is its launch count (`dml bench` reports it per forward). A replayed graph counts as one
/// launch, as the driver sees it; the launches recorded in a capture count as made.
pub fn launches_on_this_thread() -> u64 {
    LAUNCHES.with(|n| n.get())
}

/// Counts one launch on this thread.
pub(crate) fn count_launch() {
    LAUNCHES.with(|n| n.set(n.get() + 1));
}

/// Launches `kernel` (an `extern "C" __global__` exported from kernels/*.cu) on `device`, after
/// checking the arguments against its signature and that every buffer lives on `device`'s side.
/// Host (`cpu`) devices have no kernels: callers use the Rust reference there.
pub fn launch(
    device: &Device,
    kernel: &str,
    geometry: LaunchGeometry,
    args: &mut [KernelArg<'_>],
) -> Result<()> {
    check_arguments(kernel, args)?;
    if !args.iter().all(|a| a.on(device)) {
        return Err(other_backend(kernel, device));
    }
    if !matches!(device, Device::Cpu) {
        count_launch();
    }
    match device {
        Device::Cpu => Err(Error::invalid(format!(
            "kernel {kernel} launched on the cpu backend, which runs the Rust reference instead"
        ))),
        Device::Emu(schedule) => {
            let mut slots = args
                .iter_mut()
                .map(|a| a.host_slot().ok_or_else(|| other_backend(kernel, device)))
                .collect::<Result<Vec<u64>>>()?;
            if super::graph::record_emu_launch(kernel, geometry, *schedule, &slots) {
                return Ok(());
            }
            let mut params = param_ptrs(&mut slots);
            if super::profile::recording() {
                let buffers: Vec<(u64, u64)> =
                    args.iter().filter_map(KernelArg::host_range).collect();
                let stats = super::emu::launch_profiled(
                    kernel,
                    geometry,
                    *schedule,
                    &mut params,
                    &buffers,
                )?;
                super::profile::push(super::profile::LaunchProfile {
                    kernel: kernel.to_string(),
                    geometry,
                    stats,
                });
                return Ok(());
            }
            super::emu::launch(kernel, geometry, *schedule, &mut params)
        }
        Device::Cuda(dev) => dev.launch(kernel, geometry, args),
    }
}

fn other_backend(kernel: &str, device: &Device) -> Error {
    Error::invalid(format!(
        "kernel {kernel}: an argument is memory of another backend than {device}"
    ))
}

pub(crate) fn param_ptrs(slots: &mut [u64]) -> Vec<*mut c_void> {
    slots
        .iter_mut()
        .map(|s| s as *mut u64 as *mut c_void)
        .collect()
}
