//! Optimisers (SPEC section 7) and what goes with them: AdamW, exponentiated gradient descent,
//! the EMA of the weights, global-norm gradient clipping and the learning-rate schedule. Their
//! state, schedules and checkpointing live here; the element updates (kernels/optim.cu, with the
//! Rust references for `cpu`) are in [`crate::ops`].
//!
//! Parameters and gradients are matched by name ([`ParamGrad`]): the names key the optimiser
//! state, so it can be written to a checkpoint and read back for an exact resume.
mod adamw;
mod clip;
mod egd;
mod ema;
mod schedule;

use std::collections::BTreeMap;

use crate::autograd::{Gradients, ParamStore};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

pub use adamw::{AdamW, AdamWConfig};
pub use clip::{clip_factor, clip_grad_norm, global_norm, scale_in_place};
pub use egd::{signed_log_normal_init, Egd};
pub use ema::Ema;
pub use schedule::{CosineDecay, LrDecay, LrSchedule};

/// One parameter, its gradient, and the name that keys its optimiser state.
pub struct ParamGrad<'a> {
    pub name: &'a str,
    pub param: &'a mut Tensor,
    pub grad: &'a Tensor,
}

/// Pairs every parameter with the gradient of the same name. A parameter without a gradient, a
/// gradient without a parameter, or a shape mismatch is an error naming the tensor.
pub fn pair_by_name<'a>(
    params: &'a mut BTreeMap<String, Tensor>,
    grads: &'a BTreeMap<String, Tensor>,
) -> Result<Vec<ParamGrad<'a>>> {
    if let Some(extra) = grads.keys().find(|k| !params.contains_key(*k)) {
        return Err(Error::invalid(format!(
            "gradient '{extra}' has no parameter of that name"
        )));
    }
    params
        .iter_mut()
        .map(|(name, param)| pair(name, param, grads.get(name)))
        .collect()
}

/// Every parameter of `store`, in the store's order, paired with its gradient in `grads` (what a
/// tape's backward pass returned). A parameter no gradient reached, or a shape mismatch, is an
/// error naming the parameter.
pub fn pair_with_store<'a>(
    store: &'a mut ParamStore,
    grads: &'a Gradients,
) -> Result<Vec<ParamGrad<'a>>> {
    store
        .iter_mut()
        .map(|(name, param)| pair(name, param, grads.param(name)))
        .collect()
}

/// `param` with its gradient; a missing gradient or a shape mismatch is an error naming it.
fn pair<'a>(
    name: &'a str,
    param: &'a mut Tensor,
    grad: Option<&'a Tensor>,
) -> Result<ParamGrad<'a>> {
    let grad = grad.ok_or_else(|| Error::invalid(format!("parameter '{name}' has no gradient")))?;
    check_pair(name, param, grad)?;
    Ok(ParamGrad { name, param, grad })
}

fn check_pair(name: &str, param: &Tensor, grad: &Tensor) -> Result<()> {
    param
        .check_same_shape(grad, "optimiser step")
        .map_err(|e| Error::invalid(format!("parameter '{name}': {e}")))
}
