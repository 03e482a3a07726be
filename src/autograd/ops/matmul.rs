//! The batched matrix product on the tape ([`matmul::matmul`]), for the DDPM++ self-attention and
//! linear layers (docs/SPEC.md section 11 (DDPM++)). Both gradients are matrix products again,
//! in the forward's precision; an operand shared by the batch gets its per-product gradients
//! summed ([`matmul::matmul_batch_sum`]).
use crate::autograd::backward::{BackwardOp, InputGrads};
use crate::autograd::tape::{Tape, Var};
use crate::error::Result;
use crate::ops::matmul;
use crate::ops::ConvPrecision;
use crate::tensor::Tensor;

struct MatmulBackward<'p> {
    a: Var<'p>,
    b: Var<'p>,
    trans_a: bool,
    trans_b: bool,
    precision: ConvPrecision,
}

/// The batch of an operand of [`matmul::matmul`]: a matrix is a batch of one.
fn batch_of(shape: &[usize]) -> usize {
    if shape.len() == 3 {
        shape[0]
    } else {
        1
    }
}

impl MatmulBackward<'_> {
    /// `op(x) op(y)`, summed over the batch when `operand` (the input whose gradient this is) is
    /// one matrix shared by a larger batch, in the input's shape.
    fn grad(
        &self,
        operand: &Var<'_>,
        g: &Tensor,
        (x, trans_x): (&Tensor, bool),
        (y, trans_y): (&Tensor, bool),
    ) -> Result<Tensor> {
        let shared = batch_of(operand.shape()) == 1 && g.shape()[0] != 1;
        let product = if shared {
            matmul::matmul_batch_sum
        } else {
            matmul::matmul
        };
        product(x, y, trans_x, trans_y, self.precision)?.reshape(operand.shape())
    }
}

impl<'p> BackwardOp<'p> for MatmulBackward<'p> {
    /// With G = dL/dC [batch, M, N] and C = op(A) op(B): d op(A) = G op(B)^T and
    /// d op(B) = op(A)^T G, so
    ///   dA = G op(B)^T            dA (A transposed, [K, M]) = op(B) G^T
    ///   dB = op(A)^T G            dB (B transposed, [N, K]) = G^T op(A)
    /// each a product of the stored tensors with transpose flags, no copy.
    fn backward(self: Box<Self>, g: Tensor, inputs: &mut InputGrads) -> Result<()> {
        let (a, b) = (self.a.value(), self.b.value());
        let (ta, tb) = (self.trans_a, self.trans_b);
        if inputs.wants(self.b.node()) {
            let db = if tb {
                self.grad(&self.b, &g, (&g, true), (a, ta))?
            } else {
                self.grad(&self.b, &g, (a, !ta), (&g, false))?
            };
            inputs.add(self.b.node(), db);
        }
        if inputs.wants(self.a.node()) {
            let da = if ta {
                self.grad(&self.a, &g, (b, tb), (&g, true))?
            } else {
                self.grad(&self.a, &g, (&g, false), (b, !tb))?
            };
            inputs.add(self.a.node(), da);
        }
        Ok(())
    }
}

impl<'p> Tape<'p> {
    /// [`matmul::matmul`]: `op(a) op(b)` per matrix of the batch, [max(Ba, Bb), M, N]; a batch of
    /// one on either side is shared by every product. The backward passes multiply in
    /// `precision` too.
    pub fn matmul(
        &mut self,
        a: &Var<'p>,
        b: &Var<'p>,
        trans_a: bool,
        trans_b: bool,
        precision: ConvPrecision,
    ) -> Result<Var<'p>> {
        let c = matmul::matmul(a.value(), b.value(), trans_a, trans_b, precision)?;
        Ok(self.apply(c, &[a, b], || {
            Box::new(MatmulBackward {
                a: a.clone(),
                b: b.clone(),
                trans_a,
                trans_b,
                precision,
            })
        }))
    }
}
