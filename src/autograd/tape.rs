//! The tape: forward operations record a node each; [`Tape::backward`] walks the nodes once in
//! reverse, accumulating gradients on the device of the tensors.
//!
//! A [`Var`] carries its value and, when a gradient can flow to it, the index of its node. Values
//! are reference counted, so in inference mode ([`Tape::inference`]), where nothing is recorded,
//! an activation is freed as soon as the last `Var` holding it is dropped.
use std::collections::HashMap;
use std::rc::Rc;

use super::params::ParamStore;
use crate::error::{Error, Result};
use crate::ops;
use crate::ops::conv::{self, Conv2dCfg};
use crate::ops::norm::{self, CinPpSaved};
use crate::ops::pool::{self, PoolCfg};
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
}

impl std::fmt::Debug for Var<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Var(node {:?}, {:?})", self.id, self.value())
    }
}

/// How a node was computed; parents are kept as `Var`s where backward needs their values, as
/// node ids (None: no gradient wanted) where it does not.
enum Op<'p> {
    Leaf,
    Param(String),
    Conv2d {
        x: Var<'p>,
        w: Var<'p>,
        bias: Option<usize>,
        cfg: Conv2dCfg,
    },
    Elu(Var<'p>),
    Axpby {
        a: Option<usize>,
        alpha: f32,
        b: Option<usize>,
        beta: f32,
    },
    Affine {
        x: Option<usize>,
        alpha: f32,
    },
    Mul(Var<'p>, Var<'p>),
    CondInstanceNormPp {
        x: Var<'p>,
        levels: Var<'p>,
        embed: Var<'p>,
        saved: CinPpSaved,
    },
    AvgPool2d {
        x: Option<usize>,
        x_shape: Vec<usize>,
        cfg: PoolCfg,
    },
    UpsampleBilinear {
        x: Option<usize>,
        x_shape: Vec<usize>,
    },
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
    nodes: Vec<Op<'p>>,
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

    /// Moves a parameter's gradient out (for optimisers that consume it).
    pub fn take_param(&mut self, name: &str) -> Option<Tensor> {
        self.params.remove(name)
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

    pub fn is_recording(&self) -> bool {
        self.recording
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
            .filter_map(|op| match op {
                Op::Conv2d { x, w, cfg, .. } => Some(RecordedLayer::Conv2d {
                    x_shape: x.shape().to_vec(),
                    w_shape: w.shape().to_vec(),
                    cfg: *cfg,
                }),
                Op::CondInstanceNormPp { x, embed, .. } => {
                    Some(RecordedLayer::CondInstanceNormPp {
                        x_shape: x.shape().to_vec(),
                        embed_shape: embed.shape().to_vec(),
                    })
                }
                _ => None,
            })
            .collect()
    }

    fn push(&mut self, op: Op<'p>, value: Value<'p>) -> Var<'p> {
        self.nodes.push(op);
        Var {
            id: Some(self.nodes.len() - 1),
            value,
        }
    }

    /// Records `op` when recording and some parent wants a gradient, else returns a constant.
    fn record(&mut self, wants_grad: bool, value: Tensor, op: impl FnOnce() -> Op<'p>) -> Var<'p> {
        if self.recording && wants_grad {
            self.push(op(), owned(value))
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
            self.push(Op::Param(name.to_string()), Value::Param(t))
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
            self.push(Op::Leaf, owned(t))
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

    /// [`conv::conv2d`]: `x` [B, C_in, H, W], `w` [C_out, C_in, KH, KW], `bias` [C_out].
    pub fn conv2d(
        &mut self,
        x: &Var<'p>,
        w: &Var<'p>,
        bias: Option<&Var<'p>>,
        cfg: Conv2dCfg,
    ) -> Result<Var<'p>> {
        let y = conv::conv2d(x.value(), w.value(), bias.map(Var::value), cfg)?;
        let bias_id = bias.and_then(|b| b.id);
        let wants = x.id.is_some() || w.id.is_some() || bias_id.is_some();
        Ok(self.record(wants, y, || Op::Conv2d {
            x: x.clone(),
            w: w.clone(),
            bias: bias_id,
            cfg,
        }))
    }

    /// ELU with alpha 1 (SPEC section 9).
    pub fn elu(&mut self, x: &Var<'p>) -> Result<Var<'p>> {
        let y = ops::elu(x.value())?;
        Ok(self.record(x.id.is_some(), y, || Op::Elu(x.clone())))
    }

    /// `alpha a + beta b`.
    pub fn axpby(&mut self, alpha: f32, a: &Var<'p>, beta: f32, b: &Var<'p>) -> Result<Var<'p>> {
        let y = ops::axpby(alpha, a.value(), beta, b.value())?;
        Ok(
            self.record(a.id.is_some() || b.id.is_some(), y, || Op::Axpby {
                a: a.id,
                alpha,
                b: b.id,
                beta,
            }),
        )
    }

    /// `a + b` (the residual connections).
    pub fn add(&mut self, a: &Var<'p>, b: &Var<'p>) -> Result<Var<'p>> {
        self.axpby(1.0, a, 1.0, b)
    }

    pub fn sub(&mut self, a: &Var<'p>, b: &Var<'p>) -> Result<Var<'p>> {
        self.axpby(1.0, a, -1.0, b)
    }

    /// `alpha x + beta` (e.g. ncsn's input map `2 x - 1`).
    pub fn affine(&mut self, x: &Var<'p>, alpha: f32, beta: f32) -> Result<Var<'p>> {
        let y = ops::scale(x.value(), alpha, beta)?;
        Ok(self.record(x.id.is_some(), y, || Op::Affine { x: x.id, alpha }))
    }

    /// `alpha x`.
    pub fn scale(&mut self, x: &Var<'p>, alpha: f32) -> Result<Var<'p>> {
        self.affine(x, alpha, 0.0)
    }

    /// The element-wise product.
    pub fn mul(&mut self, a: &Var<'p>, b: &Var<'p>) -> Result<Var<'p>> {
        let y = ops::mul(a.value(), b.value())?;
        Ok(self.record(a.id.is_some() || b.id.is_some(), y, || {
            Op::Mul(a.clone(), b.clone())
        }))
    }

    /// [`norm::cond_instance_norm_pp`]: `levels` [N] (integer values, a constant), `embed`
    /// [n_classes, 3C] (gamma | alpha | beta).
    pub fn cond_instance_norm_pp(
        &mut self,
        x: &Var<'p>,
        levels: &Var<'p>,
        embed: &Var<'p>,
    ) -> Result<Var<'p>> {
        let (y, saved) = norm::cond_instance_norm_pp(x.value(), levels.value(), embed.value())?;
        let wants = x.id.is_some() || embed.id.is_some();
        Ok(self.record(wants, y, || Op::CondInstanceNormPp {
            x: x.clone(),
            levels: levels.clone(),
            embed: embed.clone(),
            saved,
        }))
    }

    /// [`pool::avg_pool2d`] (count_include_pad=True).
    pub fn avg_pool2d(&mut self, x: &Var<'p>, cfg: PoolCfg) -> Result<Var<'p>> {
        let y = pool::avg_pool2d(x.value(), cfg)?;
        Ok(self.record(x.id.is_some(), y, || Op::AvgPool2d {
            x: x.id,
            x_shape: x.shape().to_vec(),
            cfg,
        }))
    }

    /// [`pool::upsample_bilinear`] to `size` = (height, width), align_corners=True.
    pub fn upsample_bilinear(&mut self, x: &Var<'p>, size: (usize, usize)) -> Result<Var<'p>> {
        let y = pool::upsample_bilinear(x.value(), size)?;
        Ok(self.record(x.id.is_some(), y, || Op::UpsampleBilinear {
            x: x.id,
            x_shape: x.shape().to_vec(),
        }))
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
        while let Some(op) = self.nodes.pop() {
            let id = self.nodes.len();
            let Some(g) = grads[id].take() else { continue };
            for (parent, pg) in backward_op(op, g, id, &mut result)? {
                accumulate(&mut grads[parent], pg)?;
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

/// The gradients `op` passes to its parents, given the gradient `g` of its output. Leaves and
/// parameters deposit theirs in `result`.
fn backward_op(
    op: Op<'_>,
    g: Tensor,
    id: usize,
    result: &mut Gradients,
) -> Result<Vec<(usize, Tensor)>> {
    let mut out = Vec::new();
    match op {
        Op::Leaf => {
            result.leaves.insert(id, g);
        }
        Op::Param(name) => {
            result.params.insert(name, g);
        }
        Op::Conv2d { x, w, bias, cfg } => {
            if let Some(b) = bias {
                out.push((b, conv::conv2d_backward_bias(&g)?));
            }
            if let Some(wid) = w.id {
                out.push((
                    wid,
                    conv::conv2d_backward_weight(&g, x.value(), w.shape(), cfg)?,
                ));
            }
            if let Some(xid) = x.id {
                out.push((
                    xid,
                    conv::conv2d_backward_data(&g, w.value(), x.shape(), cfg)?,
                ));
            }
        }
        Op::Elu(x) => {
            if let Some(xid) = x.id {
                out.push((xid, ops::elu_backward(x.value(), &g)?));
            }
        }
        Op::Axpby { a, alpha, b, beta } => {
            if let Some(bid) = b {
                out.push((bid, ops::scale(&g, beta, 0.0)?));
            }
            if let Some(aid) = a {
                let ga = if alpha == 1.0 {
                    g
                } else {
                    ops::scale(&g, alpha, 0.0)?
                };
                out.push((aid, ga));
            }
        }
        Op::Affine { x, alpha } => {
            if let Some(xid) = x {
                out.push((xid, ops::scale(&g, alpha, 0.0)?));
            }
        }
        Op::Mul(a, b) => {
            if let Some(aid) = a.id {
                out.push((aid, ops::mul(&g, b.value())?));
            }
            if let Some(bid) = b.id {
                out.push((bid, ops::mul(&g, a.value())?));
            }
        }
        Op::CondInstanceNormPp {
            x,
            levels,
            embed,
            saved,
        } => {
            let (dx, dembed) = norm::cond_instance_norm_pp_backward(
                &g,
                x.value(),
                levels.value(),
                embed.value(),
                &saved,
            )?;
            if let Some(eid) = embed.id {
                out.push((eid, dembed));
            }
            if let Some(xid) = x.id {
                out.push((xid, dx));
            }
        }
        Op::AvgPool2d { x, x_shape, cfg } => {
            if let Some(xid) = x {
                out.push((xid, pool::avg_pool2d_backward(&g, &x_shape, cfg)?));
            }
        }
        Op::UpsampleBilinear { x, x_shape } => {
            if let Some(xid) = x {
                out.push((xid, pool::upsample_bilinear_backward(&g, &x_shape)?));
            }
        }
    }
    Ok(out)
}
