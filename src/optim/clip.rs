//! Global-norm gradient clipping: one norm over all gradients ([`global_norm`], a deterministic
//! reduction), every gradient scaled by the same factor ([`scale_in_place`]). Both kernels are in
//! [`crate::ops`]; the policy (when and by how much to clip) is here.
use crate::error::Result;
use crate::tensor::Tensor;

pub use crate::ops::{global_norm, scale_in_place};

/// The factor that brings a gradient of norm `norm` down to at most `max_norm`: 1 when it is
/// already within, `max_norm / norm` otherwise. A non-finite norm gives 1: the caller checks the
/// norm itself before trusting the step.
pub fn clip_factor(norm: f32, max_norm: f32) -> f32 {
    if norm.is_finite() && norm > max_norm {
        max_norm / norm
    } else {
        1.0
    }
}

/// Scales all gradients in place so their global norm is at most `max_norm`; returns the norm
/// before clipping. (The optimisers can instead take [`clip_factor`] as their `grad_scale`,
/// which saves this pass.)
pub fn clip_grad_norm(grads: &mut [&mut Tensor], max_norm: f32) -> Result<f32> {
    let norm = {
        let views: Vec<&Tensor> = grads.iter().map(|g| &**g).collect();
        global_norm(&views)?
    };
    let factor = clip_factor(norm, max_norm);
    if factor != 1.0 {
        for g in grads.iter_mut() {
            scale_in_place(g, factor)?;
        }
    }
    Ok(norm)
}
