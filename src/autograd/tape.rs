//! The tape: forward operations record a node each; [`Tape::backward`] walks the nodes once in
//! reverse, accumulating gradients on the device of the tensors.
//!
//! A [`Var`] carries its value and, when a gradient can flow to it, the index of its node. Values
//! are reference counted, so in inference mode ([`Tape::inference`]), where nothing is recorded,
//! an activation is freed as soon as the last `Var` holding it is dropped. What a node does in the
//! backward pass is its operation's business ([`BackwardOp`], one file per operation under
//! autograd/ops/): the tape only records and walks.
use std::collections::HashMap;
use std::rc::Rc;

use super::backward::{BackwardOp, InputGrads};
use super::params::ParamStore;
use crate::error::{Error, Result};
use crate::ops::{self, Conv2dCfg};
use crate::tensor::Tensor;

#[derive(Clone)]
enum Value<'p> {
    Owned(Rc<Tensor>),
    Param(&'p Tensor),
}

/// A value in the computation, with a node on the tape when a gradient can reach it.
#[derive(Clone)]
pub struct Var<'p> {
    id: Option<usize>,
    value: Value<'p>,
}

/// Where a gradient for a value goes: its node on the tape, or nowhere (a constant). What a
/// [`BackwardOp`] keeps of an input whose value its backward pass does not need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node(pub(super) Option<usize>);

impl<'p> Var<'p> {
    pub fn value(&self) -> &Tensor {
        match &self.value {
            Value::Owned(t) => t,
            Value::Param(t) => t,
        }
    }

    pub fn shape(&self) -> &[usize] {
        self.value().shape()
    }

    /// Whether a gradient can flow to this value (it depends on a parameter or a leaf).
    pub fn requires_grad(&self) -> bool {
        self.id.is_some()
    }

    /// This value's node, for a backward pass.
    pub fn node(&self) -> Node {
        Node(self.id)
    }
}

impl std::fmt::Debug for Var<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Var(node {:?}, {:?})", self.id, self.value())
    }
}

enum Entry<'p> {
    Leaf,
    Param(String),
    Op(Box<dyn BackwardOp<'p> + 'p>),
}

/// A convolution or CIN++ call the tape recorded, by shape: what the benchmarks time layer by
/// layer (reference/BENCH.md derives its conv and norm shapes from the network the same way).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordedLayer {
    Conv2d {
        x_shape: Vec<usize>,
        w_shape: Vec<usize>,
        cfg: Conv2dCfg,
    },
    CondInstanceNormPp {
        x_shape: Vec<usize>,
        embed_shape: Vec<usize>,
    },
}

pub struct Tape<'p> {
    params: &'p ParamStore,
    recording: bool,
    nodes: Vec<Entry<'p>>,
    param_vars: HashMap<String, Var<'p>>,
}

/// The gradients of one backward pass: of parameters by name, of leaves by their `Var`.
#[derive(Default, Debug)]
pub struct Gradients {
    params: HashMap<String, Tensor>,
    leaves: HashMap<usize, Tensor>,
}

impl Gradients {
    /// The gradient of a parameter; None when the output does not depend on it.
    pub fn param(&self, name: &str) -> Option<&Tensor> {
        self.params.get(name)
    }

    /// The gradient of a leaf made by [`Tape::leaf`].
    pub fn wrt(&self, leaf: &Var<'_>) -> Option<&Tensor> {
        leaf.id.and_then(|id| self.leaves.get(&id))
    }

    /// Names of the parameters that received a gradient, sorted.
    pub fn param_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.params.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

fn owned<'p>(t: Tensor) -> Value<'p> {
    Value::Owned(Rc::new(t))
}

impl<'p> Tape<'p> {
    /// A recording tape over the parameters of `params` (training).
    pub fn new(params: &'p ParamStore) -> Self {
        Self {
            params,
            recording: true,
            nodes: Vec::new(),
            param_vars: HashMap::new(),
        }
    }

    /// A tape that records nothing (sampling, evaluation): no gradients, and activations live
    /// only as long as the `Var`s holding them.
    pub fn inference(params: &'p ParamStore) -> Self {
        Self {
            recording: false,
            ..Self::new(params)
        }
    }

    pub fn params(&self) -> &'p ParamStore {
        self.params
    }

    /// Number of recorded nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The convolutions and CIN++ normalisations recorded so far, in call order.
    pub fn recorded_layers(&self) -> Vec<RecordedLayer> {
        self.nodes
            .iter()
            .filter_map(|entry| match entry {
                Entry::Op(op) => op.layer(),
                _ => None,
            })
            .collect()
    }

    fn push(&mut self, entry: Entry<'p>, value: Value<'p>) -> Var<'p> {
        self.nodes.push(entry);
        Var {
            id: Some(self.nodes.len() - 1),
            value,
        }
    }

    /// The result `value` of an operation on `inputs`: recorded with the backward pass `op`
    /// builds when the tape records and some input wants a gradient, else a constant (and `op`
    /// is never built).
    pub fn apply(
        &mut self,
        value: Tensor,
        inputs: &[&Var<'p>],
        op: impl FnOnce() -> Box<dyn BackwardOp<'p> + 'p>,
    ) -> Var<'p> {
        if self.recording && inputs.iter().any(|v| v.requires_grad()) {
            self.push(Entry::Op(op()), owned(value))
        } else {
            self.constant(value)
        }
    }

    /// The parameter `name` of the store (one node per name, however often it is used).
    pub fn param(&mut self, name: &str) -> Result<Var<'p>> {
        if let Some(v) = self.param_vars.get(name) {
            return Ok(v.clone());
        }
        let t = self.params.get(name)?;
        let var = if self.recording {
            self.push(Entry::Param(name.to_string()), Value::Param(t))
        } else {
            Var {
                id: None,
                value: Value::Param(t),
            }
        };
        self.param_vars.insert(name.to_string(), var.clone());
        Ok(var)
    }

    /// An input whose gradient [`Gradients::wrt`] will return.
    pub fn leaf(&mut self, t: Tensor) -> Var<'p> {
        if self.recording {
            self.push(Entry::Leaf, owned(t))
        } else {
            self.constant(t)
        }
    }

    /// An input no gradient flows to (data, levels).
    pub fn constant(&self, t: Tensor) -> Var<'p> {
        Var {
            id: None,
            value: owned(t),
        }
    }

    /// Back-propagates `grad_out` = dL/d`out` through the tape, consuming it (saved activations
    /// are freed as the walk passes them). Gradients of parameters are keyed by name.
    pub fn backward(mut self, out: &Var<'p>, grad_out: Tensor) -> Result<Gradients> {
        if !self.recording {
            return Err(Error::invalid(
                "backward on an inference tape, which records nothing",
            ));
        }
        let Some(out_id) = out.id else {
            return Err(Error::invalid(
                "backward from a value that depends on no parameter or leaf",
            ));
        };
        out.value()
            .check_same_shape(&grad_out, "backward (seed gradient)")?;
        self.nodes.truncate(out_id + 1);
        self.param_vars.clear();
        let mut grads: Vec<Option<Tensor>> = (0..self.nodes.len()).map(|_| None).collect();
        grads[out_id] = Some(grad_out);
        let mut result = Gradients::default();
        while let Some(entry) = self.nodes.pop() {
            let id = self.nodes.len();
            let Some(g) = grads[id].take() else { continue };
            match entry {
                Entry::Leaf => {
                    result.leaves.insert(id, g);
                }
                Entry::Param(name) => {
                    result.params.insert(name, g);
                }
                Entry::Op(op) => {
                    let mut inputs = InputGrads::default();
                    op.backward(g, &mut inputs)?;
                    for (parent, pg) in inputs.grads {
                        accumulate(&mut grads[parent], pg)?;
                    }
                }
            }
        }
        Ok(result)
    }
}

fn accumulate(slot: &mut Option<Tensor>, g: Tensor) -> Result<()> {
    *slot = Some(match slot.take() {
        Some(prev) => ops::add(&prev, &g)?,
        None => g,
    });
    Ok(())
}
