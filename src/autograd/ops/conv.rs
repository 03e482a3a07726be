//! The convolution on the tape: [`ops::conv`]'s forward (alone, or with the residual addition
//! that follows it fused in), and its three backward passes (bias, weight, data) for whichever
//! inputs want a gradient; a fused residual gets the output's gradient as it is.
use crate::autograd::backward::{BackwardOp, InputGrads};
use crate::autograd::tape::{Node, RecordedLayer, Tape, Var};
use crate::error::Result;
use crate::ops::conv::{self, Conv2dCfg};
use crate::tensor::Tensor;

struct Conv2dBackward<'p> {
    x: Var<'p>,
    w: Var<'p>,
    bias: Node,
    /// The residual of [`Tape::conv2d_add`] (none for a plain convolution).
    residual: Node,
    cfg: Conv2dCfg,
}

impl<'p> BackwardOp<'p> for Conv2dBackward<'p> {
    fn backward(self: Box<Self>, g: Tensor, inputs: &mut InputGrads) -> Result<()> {
        if inputs.wants(self.bias) {
            inputs.add(self.bias, conv::conv2d_backward_bias(&g)?);
        }
        if inputs.wants(self.w.node()) {
            let dw = conv::conv2d_backward_weight(&g, self.x.value(), self.w.shape(), self.cfg)?;
            inputs.add(self.w.node(), dw);
        }
        if inputs.wants(self.x.node()) {
            let dx = conv::conv2d_backward_data(&g, self.w.value(), self.x.shape(), self.cfg)?;
            inputs.add(self.x.node(), dx);
        }
        // d(conv + residual)/d(residual) is the identity: the gradient itself, last, as the
        // passes above only read it.
        inputs.add(self.residual, g);
        Ok(())
    }

    fn layer(&self) -> Option<RecordedLayer> {
        Some(RecordedLayer::Conv2d {
            x_shape: self.x.shape().to_vec(),
            w_shape: self.w.shape().to_vec(),
            cfg: self.cfg,
        })
    }
}

impl<'p> Tape<'p> {
    /// [`conv::conv2d`]: `x` [B, C_in, H, W], `w` [C_out, C_in, KH, KW], `bias` [C_out].
    pub fn conv2d(
        &mut self,
        x: &Var<'p>,
        w: &Var<'p>,
        bias: Option<&Var<'p>>,
        cfg: Conv2dCfg,
    ) -> Result<Var<'p>> {
        let y = conv::conv2d(x.value(), w.value(), bias.map(Var::value), cfg)?;
        Ok(self.record_conv(y, x, w, bias, None, cfg))
    }

    /// [`conv::conv2d_add`]: the convolution plus `residual`, in one pass.
    pub fn conv2d_add(
        &mut self,
        x: &Var<'p>,
        w: &Var<'p>,
        bias: Option<&Var<'p>>,
        residual: &Var<'p>,
        cfg: Conv2dCfg,
    ) -> Result<Var<'p>> {
        let y = conv::conv2d_add(
            x.value(),
            w.value(),
            bias.map(Var::value),
            residual.value(),
            cfg,
        )?;
        Ok(self.record_conv(y, x, w, bias, Some(residual), cfg))
    }

    fn record_conv(
        &mut self,
        y: Tensor,
        x: &Var<'p>,
        w: &Var<'p>,
        bias: Option<&Var<'p>>,
        residual: Option<&Var<'p>>,
        cfg: Conv2dCfg,
    ) -> Var<'p> {
        let mut inputs = vec![x, w];
        inputs.extend(bias);
        inputs.extend(residual);
        self.apply(y, &inputs, || {
            Box::new(Conv2dBackward {
                x: x.clone(),
                w: w.clone(),
                bias: bias.map_or(Node(None), Var::node),
                residual: residual.map_or(Node(None), Var::node),
                cfg,
            })
        })
    }
}
