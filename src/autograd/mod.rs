//! Reverse-mode automatic differentiation on a tape (docs/DESIGN.md section 3): parameters live in a
//! [`ParamStore`], forward operations on a [`Tape`] return [`Var`]s, and [`Tape::backward`]
//! returns [`Gradients`] keyed by parameter name. Each operation lives in its own file under
//! `ops/` and implements [`BackwardOp`]; the tape itself knows none of them.
mod backward;
mod ops;
mod params;
mod tape;

pub use backward::{BackwardOp, InputGrads};
pub use params::ParamStore;
pub use tape::{Gradients, Node, RecordedLayer, Tape, Var};
