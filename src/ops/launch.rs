//! Tensors as kernel arguments: the one place ops/ reaches the device layer's checked
//! [`crate::device::launch::launch`]. A tensor must live on the launching device (the same GPU,
//! not only a GPU); the device layer then checks the arguments against the kernel's signature.
//!
//! Everything here is visible inside ops/ only, so no code above ops/ can launch a kernel: each
//! kernel of kernels/*.cu is launched by the ops module of its family (DESIGN.md section 3). Also
//! the launch geometry shared by the kernels that reduce as they go, whose fixed number of
//! partial sums makes the loss and the norm deterministic (SPEC sections 3 and 7).
use super::random::PhiloxDraw;
use crate::device::launch::{self, KernelArg};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

pub(super) use crate::device::launch::LaunchGeometry;

/// Blocks of the first pass of a deterministic reduction (a sum, a fused loss, a flip count, a
/// sum of squares): fixed for a given size, so the order of the partial sums, and hence the bits
/// of the result, is fixed too.
pub(super) const PARTIAL_BLOCKS: u32 = 256;

/// Kernels that also reduce over their elements: at most [`PARTIAL_BLOCKS`] blocks of 256
/// threads, grid-stride, each block writing one partial.
pub(super) fn with_partials(n: usize) -> LaunchGeometry {
    LaunchGeometry::reduction(n, PARTIAL_BLOCKS)
}

/// A kernel argument, by the parameter type it is passed as.
pub(super) enum Arg<'a> {
    /// `const float*`.
    In(&'a Tensor),
    /// `float*`.
    Out(&'a mut Tensor),
    /// `uint32_t*`: words carried in the tensor's f32 storage.
    OutWords(&'a mut Tensor),
    F32(f32),
    I32(i32),
    U32(u32),
    U64(u64),
}

impl Arg<'_> {
    fn tensor(&self) -> Option<&Tensor> {
        match self {
            Arg::In(t) => Some(t),
            Arg::Out(t) | Arg::OutWords(t) => Some(t),
            _ => None,
        }
    }

    /// The `uint64_t seed, uint32_t stream, uint32_t step` parameters of a kernel that draws
    /// from Philox, in that order.
    pub(super) fn philox(draw: PhiloxDraw) -> [Arg<'static>; 3] {
        [
            Arg::U64(draw.seed),
            Arg::U32(draw.stream),
            Arg::U32(draw.step),
        ]
    }
}

/// An error naming `op` unless every tensor of `ts` lives on the first one's device (the same
/// GPU, not only a GPU).
pub(super) fn check_same_device(ts: &[&Tensor], op: &'static str) -> Result<()> {
    let Some((first, rest)) = ts.split_first() else {
        return Ok(());
    };
    match rest.iter().find(|t| !t.device().same(first.device())) {
        None => Ok(()),
        Some(t) => Err(Error::DeviceMismatch {
            op,
            a: first.device().to_string(),
            b: t.device().to_string(),
        }),
    }
}

/// Launches `kernel` on `device` with `args` (see the module doc).
pub(super) fn launch(
    device: &Device,
    kernel: &str,
    geometry: LaunchGeometry,
    args: &mut [Arg<'_>],
) -> Result<()> {
    if let Some(t) = args
        .iter()
        .filter_map(Arg::tensor)
        .find(|t| !t.device().same(device))
    {
        return Err(Error::DeviceMismatch {
            op: "launch",
            a: device.to_string(),
            b: t.device().to_string(),
        });
    }
    let mut kernel_args: Vec<KernelArg<'_>> = args
        .iter_mut()
        .map(|a| match a {
            Arg::In(t) => KernelArg::In(t.buffer()),
            Arg::Out(t) => KernelArg::Out(t.buffer_mut()),
            Arg::OutWords(t) => KernelArg::OutWords(t.buffer_mut()),
            Arg::F32(v) => KernelArg::F32(*v),
            Arg::I32(v) => KernelArg::I32(*v),
            Arg::U32(v) => KernelArg::U32(*v),
            Arg::U64(v) => KernelArg::U64(*v),
        })
        .collect();
    launch::launch(device, kernel, geometry, &mut kernel_args)
}
