//! Conditional instance normalisation++ on the tape (SPEC section 9), alone or fused with the ELU
//! that follows it in the network: [`norm`]'s forward, which saves the per-plane statistics, and
//! its backward to the input and the embedding.
use crate::autograd::backward::{BackwardOp, InputGrads};
use crate::autograd::tape::{RecordedLayer, Tape, Var};
use crate::error::Result;
use crate::ops::norm::{self, CinPpSaved};
use crate::tensor::Tensor;

struct CondInstanceNormPpBackward<'p> {
    x: Var<'p>,
    levels: Var<'p>,
    embed: Var<'p>,
    saved: CinPpSaved,
}

impl<'p> BackwardOp<'p> for CondInstanceNormPpBackward<'p> {
    fn backward(self: Box<Self>, g: Tensor, inputs: &mut InputGrads) -> Result<()> {
        let (dx, dembed) = norm::cond_instance_norm_pp_backward(
            &g,
            self.x.value(),
            self.levels.value(),
            self.embed.value(),
            &self.saved,
        )?;
        inputs.add(self.embed.node(), dembed);
        inputs.add(self.x.node(), dx);
        Ok(())
    }

    fn layer(&self) -> Option<RecordedLayer> {
        Some(RecordedLayer::CondInstanceNormPp {
            x_shape: self.x.shape().to_vec(),
            embed_shape: self.embed.shape().to_vec(),
        })
    }
}

impl<'p> Tape<'p> {
    /// [`norm::cond_instance_norm_pp`]: `levels` [N] (integer values, a constant), `embed`
    /// [n_classes, 3C] (gamma | alpha | beta).
    pub fn cond_instance_norm_pp(
        &mut self,
        x: &Var<'p>,
        levels: &Var<'p>,
        embed: &Var<'p>,
    ) -> Result<Var<'p>> {
        let (y, saved) = norm::cond_instance_norm_pp(x.value(), levels.value(), embed.value())?;
        Ok(self.record_norm(y, saved, x, levels, embed))
    }

    /// `elu(cond_instance_norm_pp(..))` as one op, forward and backward
    /// ([`norm::cond_instance_norm_pp_elu`]): one pass and one launch fewer each way.
    pub fn cond_instance_norm_pp_elu(
        &mut self,
        x: &Var<'p>,
        levels: &Var<'p>,
        embed: &Var<'p>,
    ) -> Result<Var<'p>> {
        let (y, saved) = norm::cond_instance_norm_pp_elu(x.value(), levels.value(), embed.value())?;
        Ok(self.record_norm(y, saved, x, levels, embed))
    }

    fn record_norm(
        &mut self,
        y: Tensor,
        saved: CinPpSaved,
        x: &Var<'p>,
        levels: &Var<'p>,
        embed: &Var<'p>,
    ) -> Var<'p> {
        self.apply(y, &[x, embed], || {
            Box::new(CondInstanceNormPpBackward {
                x: x.clone(),
                levels: levels.clone(),
                embed: embed.clone(),
                saved,
            })
        })
    }
}
