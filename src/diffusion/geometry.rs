//! Launch geometry of the kernels in kernels/gbm.cu and kernels/loss.cu, in one place.
use crate::ops::launch::LaunchGeometry;

/// Blocks of the first pass of a fused loss or of a counting step: fixed for a given size, so
/// the order of the partial sums (and hence the bits of the result) is fixed too.
pub(crate) const PARTIAL_BLOCKS: u32 = 256;

/// Element-wise kernels (noising, the Dale and additive Langevin steps).
pub(crate) fn elementwise(n: usize) -> LaunchGeometry {
    LaunchGeometry::elementwise(n)
}

/// Kernels that also reduce over their elements (the fused losses, the sign-agnostic step's
/// flip count): at most [`PARTIAL_BLOCKS`] blocks of 256 threads, grid-stride.
pub(crate) fn with_partials(n: usize) -> LaunchGeometry {
    LaunchGeometry::reduction(n, PARTIAL_BLOCKS)
}
