//! Element-wise operations on the tape (SPEC section 9's ELU, the SiLU of docs/SPEC.md section 11
//! (DDPM++), the residual sums, affine maps and products): [`crate::ops`]'s element-wise kernels
//! forward and backward.
use crate::autograd::backward::{BackwardOp, InputGrads};
use crate::autograd::tape::{Node, Tape, Var};
use crate::error::Result;
use crate::ops;
use crate::tensor::Tensor;

struct EluBackward<'p> {
    x: Var<'p>,
}

impl<'p> BackwardOp<'p> for EluBackward<'p> {
    fn backward(self: Box<Self>, g: Tensor, inputs: &mut InputGrads) -> Result<()> {
        if inputs.wants(self.x.node()) {
            inputs.add(self.x.node(), ops::elu_backward(self.x.value(), &g)?);
        }
        Ok(())
    }
}

struct SiluBackward<'p> {
    x: Var<'p>,
}

impl<'p> BackwardOp<'p> for SiluBackward<'p> {
    fn backward(self: Box<Self>, g: Tensor, inputs: &mut InputGrads) -> Result<()> {
        if inputs.wants(self.x.node()) {
            inputs.add(self.x.node(), ops::silu_backward(self.x.value(), &g)?);
        }
        Ok(())
    }
}

/// `alpha a + beta b`: each input's gradient is the output's, scaled.
struct AxpbyBackward {
    a: Node,
    alpha: f32,
    b: Node,
    beta: f32,
}

impl<'p> BackwardOp<'p> for AxpbyBackward {
    fn backward(self: Box<Self>, g: Tensor, inputs: &mut InputGrads) -> Result<()> {
        if inputs.wants(self.b) {
            inputs.add(self.b, ops::scale(&g, self.beta, 0.0)?);
        }
        if inputs.wants(self.a) {
            let ga = if self.alpha == 1.0 {
                g
            } else {
                ops::scale(&g, self.alpha, 0.0)?
            };
            inputs.add(self.a, ga);
        }
        Ok(())
    }
}

struct MulBackward<'p> {
    a: Var<'p>,
    b: Var<'p>,
}

impl<'p> BackwardOp<'p> for MulBackward<'p> {
    fn backward(self: Box<Self>, g: Tensor, inputs: &mut InputGrads) -> Result<()> {
        if inputs.wants(self.a.node()) {
            inputs.add(self.a.node(), ops::mul(&g, self.b.value())?);
        }
        if inputs.wants(self.b.node()) {
            inputs.add(self.b.node(), ops::mul(&g, self.a.value())?);
        }
        Ok(())
    }
}

impl<'p> Tape<'p> {
    /// ELU with alpha 1 (SPEC section 9).
    pub fn elu(&mut self, x: &Var<'p>) -> Result<Var<'p>> {
        let y = ops::elu(x.value())?;
        Ok(self.apply(y, &[x], || Box::new(EluBackward { x: x.clone() })))
    }

    /// SiLU (swish), `x sigmoid(x)`: the DDPM++ score network's activation (docs/SPEC.md
    /// section 11).
    pub fn silu(&mut self, x: &Var<'p>) -> Result<Var<'p>> {
        let y = ops::silu(x.value())?;
        Ok(self.apply(y, &[x], || Box::new(SiluBackward { x: x.clone() })))
    }

    /// `alpha a + beta b`.
    pub fn axpby(&mut self, alpha: f32, a: &Var<'p>, beta: f32, b: &Var<'p>) -> Result<Var<'p>> {
        let y = ops::axpby(alpha, a.value(), beta, b.value())?;
        Ok(self.apply(y, &[a, b], || {
            Box::new(AxpbyBackward {
                a: a.node(),
                alpha,
                b: b.node(),
                beta,
            })
        }))
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
        Ok(self.apply(y, &[x], || {
            Box::new(AxpbyBackward {
                a: x.node(),
                alpha,
                b: Node(None),
                beta: 0.0,
            })
        }))
    }

    /// `alpha x`.
    pub fn scale(&mut self, x: &Var<'p>, alpha: f32) -> Result<Var<'p>> {
        self.affine(x, alpha, 0.0)
    }

    /// The element-wise product.
    pub fn mul(&mut self, a: &Var<'p>, b: &Var<'p>) -> Result<Var<'p>> {
        let y = ops::mul(a.value(), b.value())?;
        Ok(self.apply(y, &[a, b], || {
            Box::new(MulBackward {
                a: a.clone(),
                b: b.clone(),
            })
        }))
    }
}
