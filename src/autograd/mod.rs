//! Reverse-mode automatic differentiation on a tape (DESIGN.md section 3): parameters live in a
//! [`ParamStore`], forward operations on a [`Tape`] return [`Var`]s, and [`Tape::backward`]
//! returns [`Gradients`] keyed by parameter name.
mod params;
mod tape;

pub use params::ParamStore;
pub use tape::{Gradients, RecordedLayer, Tape, Var};
