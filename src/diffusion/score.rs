//! Where the samplers get their scores from: one trait per diffusion, so that the analytic
//! targets (SPEC section 6) and the trained network drive the same sampler code.
use crate::error::Result;
use crate::ops;
use crate::tensor::Tensor;

/// A noise level as a score reads it: the index `k` on the host, and the same index for each
/// sample of the batch as a tensor [B] on the batch's device. A network reads the tensor, so that
/// a sampler step captured as a graph reads its level from memory the sampler writes in place
/// before each replay (docs/DESIGN.md section 10).
#[derive(Clone, Copy)]
pub struct Level<'a> {
    pub k: usize,
    pub per_sample: &'a Tensor,
}

/// The Hyvarinen score of the GBM diffusion (SPEC section 3).
pub trait ScoreSource {
    /// `h(x, k) = x * grad_x log p_k(x)` for a batch `x` (any shape, on any device) at level `k`;
    /// the result has `x`'s shape and device.
    fn h(&mut self, x: &Tensor, level: Level<'_>) -> Result<Tensor>;

    /// Whether [`Self::h`] is device work that reads the level only from `level.per_sample`,
    /// so that a step using it may be captured once and replayed at every level. A score that
    /// uses `level.k` would have the first step's level fixed into the graph.
    fn replayable(&self) -> bool {
        false
    }
}

/// The Stein score of the additive baseline (SPEC section 8).
pub trait GaussianScoreSource {
    /// `s(x, i) = grad_x log p_{sigma_i}(x)` for a batch `x` at noise level index `i = level.k`
    /// (0 = the largest sigma).
    fn s(&mut self, x: &Tensor, level: Level<'_>) -> Result<Tensor>;

    /// As [`ScoreSource::replayable`].
    fn replayable(&self) -> bool {
        false
    }
}

crate::named::value_names! {
    /// What a score network's output means (SPEC section 3).
    #[derive(Default)]
    pub enum Parameterisation parsed as "parameterisation" {
        /// The network outputs `h` directly.
        #[default]
        H = "h" => "the network outputs the Hyvarinen score h",
        /// The network outputs the Stein score `s`; `h = x * s` (paper 001 Eq. 19, literal form).
        Stein = "stein" => "the network outputs the Stein score s; h = x s",
    }
}

impl Parameterisation {
    /// `h` from a network output `out` at the point `x`.
    pub fn to_h(self, x: &Tensor, out: Tensor) -> Result<Tensor> {
        match self {
            Self::H => Ok(out),
            Self::Stein => ops::mul(x, &out),
        }
    }
}

/// Adapts any `(x, levels [B]) -> network output` function to a [`ScoreSource`], converting the
/// output to `h` according to the network's [`Parameterisation`]. The function must read the
/// levels only from the tensor it is given (a network forward does): the steps are replayable.
pub struct NetworkScore<F> {
    forward: F,
    parameterisation: Parameterisation,
}

impl<F: FnMut(&Tensor, &Tensor) -> Result<Tensor>> NetworkScore<F> {
    pub fn new(forward: F, parameterisation: Parameterisation) -> Self {
        Self {
            forward,
            parameterisation,
        }
    }
}

impl<F: FnMut(&Tensor, &Tensor) -> Result<Tensor>> ScoreSource for NetworkScore<F> {
    fn h(&mut self, x: &Tensor, level: Level<'_>) -> Result<Tensor> {
        let out = (self.forward)(x, level.per_sample)?;
        x.check_same_shape(&out, "network score output")?;
        self.parameterisation.to_h(x, out)
    }

    fn replayable(&self) -> bool {
        true
    }
}

/// Adapts any `(x, levels [B]) -> Stein score` function to a [`GaussianScoreSource`]; as for
/// [`NetworkScore`], the function reads the levels only from the tensor: the steps are
/// replayable.
pub struct NetworkGaussianScore<F>(pub F);

impl<F: FnMut(&Tensor, &Tensor) -> Result<Tensor>> GaussianScoreSource for NetworkGaussianScore<F> {
    fn s(&mut self, x: &Tensor, level: Level<'_>) -> Result<Tensor> {
        let out = (self.0)(x, level.per_sample)?;
        x.check_same_shape(&out, "network Stein score output")?;
        Ok(out)
    }

    fn replayable(&self) -> bool {
        true
    }
}
