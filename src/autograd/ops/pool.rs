//! Pooling and upsampling on the tape: [`pool`]'s average pooling (count_include_pad=True) and
//! bilinear upsampling (align_corners=True) and nearest upsampling by an integer factor, forward
//! and backward.
use crate::autograd::backward::{BackwardOp, InputGrads};
use crate::autograd::tape::{Node, Tape, Var};
use crate::error::Result;
use crate::ops::pool::{self, PoolCfg};
use crate::tensor::Tensor;

struct AvgPool2dBackward {
    x: Node,
    x_shape: Vec<usize>,
    cfg: PoolCfg,
}

impl<'p> BackwardOp<'p> for AvgPool2dBackward {
    fn backward(self: Box<Self>, g: Tensor, inputs: &mut InputGrads) -> Result<()> {
        inputs.add(
            self.x,
            pool::avg_pool2d_backward(&g, &self.x_shape, self.cfg)?,
        );
        Ok(())
    }
}

struct UpsampleBilinearBackward {
    x: Node,
    x_shape: Vec<usize>,
}

impl<'p> BackwardOp<'p> for UpsampleBilinearBackward {
    fn backward(self: Box<Self>, g: Tensor, inputs: &mut InputGrads) -> Result<()> {
        inputs.add(self.x, pool::upsample_bilinear_backward(&g, &self.x_shape)?);
        Ok(())
    }
}

struct UpsampleNearestBackward {
    x: Node,
    x_shape: Vec<usize>,
    factor: usize,
}

impl<'p> BackwardOp<'p> for UpsampleNearestBackward {
    fn backward(self: Box<Self>, g: Tensor, inputs: &mut InputGrads) -> Result<()> {
        inputs.add(
            self.x,
            pool::upsample_nearest_backward(&g, &self.x_shape, self.factor)?,
        );
        Ok(())
    }
}

impl<'p> Tape<'p> {
    /// [`pool::avg_pool2d`] (count_include_pad=True).
    pub fn avg_pool2d(&mut self, x: &Var<'p>, cfg: PoolCfg) -> Result<Var<'p>> {
        let y = pool::avg_pool2d(x.value(), cfg)?;
        Ok(self.apply(y, &[x], || {
            Box::new(AvgPool2dBackward {
                x: x.node(),
                x_shape: x.shape().to_vec(),
                cfg,
            })
        }))
    }

    /// [`pool::upsample_bilinear`] to `size` = (height, width), align_corners=True.
    pub fn upsample_bilinear(&mut self, x: &Var<'p>, size: (usize, usize)) -> Result<Var<'p>> {
        let y = pool::upsample_bilinear(x.value(), size)?;
        Ok(self.apply(y, &[x], || {
            Box::new(UpsampleBilinearBackward {
                x: x.node(),
                x_shape: x.shape().to_vec(),
            })
        }))
    }

    /// [`pool::upsample_nearest`] by an integer `factor`.
    pub fn upsample_nearest(&mut self, x: &Var<'p>, factor: usize) -> Result<Var<'p>> {
        let y = pool::upsample_nearest(x.value(), factor)?;
        Ok(self.apply(y, &[x], || {
            Box::new(UpsampleNearestBackward {
                x: x.node(),
                x_shape: x.shape().to_vec(),
                factor,
            })
        }))
    }
}
