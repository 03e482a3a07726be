//! The per-level test loss (SPEC 3.2): a model's own loss on held-out images noised at one
//! level at a time. A training run's loss log mixes levels drawn at random; this shows which
//! levels a model has learnt, and, since the noise depends only on the seed, the level and the
//! image, where one checkpoint is better than another.
use super::model::ScoreModel;
use crate::error::{Error, Result};
use crate::rng::{fill_normals, stream};
use crate::tensor::Tensor;

/// The loss of one level, averaged over the images.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LevelLoss {
    pub level: usize,
    /// `s_k` (GBM) or `sigma_i` (additive) at this level.
    pub noise_scale: f32,
    pub loss: f64,
}

/// `count` of the model's trainable levels spread evenly from the first to the last, both
/// included (all of them when there are no more than `count`).
pub fn spread_levels(model: &ScoreModel, count: usize) -> Vec<usize> {
    let trainable = model.spec.objective.trainable_levels();
    let n = trainable.len();
    if count >= n {
        return trainable.collect();
    }
    let last = (n - 1) as f64;
    let mut levels: Vec<usize> = (0..count)
        .map(|i| {
            let at = i as f64 * last / (count - 1).max(1) as f64;
            trainable.start + at.round() as usize
        })
        .collect();
    levels.dedup();
    levels
}

/// The mean loss of `model` at each of `levels` on `images` (`[n, C, H, W]` values in the
/// model's pixel range, flattened), `batch` images per network pass. Image `i` at level `k`
/// is noised with the normals of the LEVEL_LOSS stream at step `k`, from element `i` times
/// the image size (SPEC 3.2). `done(levels finished)` is called after each level.
pub fn level_losses(
    model: &ScoreModel,
    images: &[f32],
    levels: &[usize],
    (seed, batch): (u64, usize),
    mut done: impl FnMut(usize),
) -> Result<Vec<LevelLoss>> {
    let image_shape = model.spec.image_shape();
    let image_len: usize = image_shape.iter().product();
    let n = images.len() / image_len;
    if n == 0 || batch == 0 || !images.len().is_multiple_of(image_len) {
        return Err(Error::invalid(format!(
            "level loss: {} values are not a positive number of {image_shape:?} images, or \
             the batch {batch} is 0",
            images.len()
        )));
    }
    let objective = &model.spec.objective;
    let device = model.store.device();
    let mut losses = Vec::with_capacity(levels.len());
    for (finished, &level) in levels.iter().enumerate() {
        let mut sum = 0.0f64;
        for first in (0..n).step_by(batch) {
            let b = batch.min(n - first);
            let range = first * image_len..(first + b) * image_len;
            let shape = [b, image_shape[0], image_shape[1], image_shape[2]];
            let mut z = vec![0.0f32; range.len()];
            fill_normals(
                seed,
                stream::LEVEL_LOSS,
                level as u32,
                range.start as u64,
                &mut z,
            );
            let x0 = Tensor::from_slice(&images[range], &shape, device)?;
            let z = Tensor::from_vec(z, &shape, device)?;
            let input = objective.noise_given(&x0, &vec![level; b], &z)?;
            let output = model.output(&input.x, &input.levels)?;
            // The objective's loss is the batch's mean: weigh it by the batch's size.
            sum += objective.loss(&output, &input)?.loss.item()? as f64 * b as f64;
        }
        let loss = sum / n as f64;
        if !loss.is_finite() {
            return Err(Error::invalid(format!(
                "level loss: the loss at level {level} is {loss}: the network's output is not \
                 finite there"
            )));
        }
        losses.push(LevelLoss {
            level,
            noise_scale: objective.noise_scale(level),
            loss,
        });
        done(finished + 1);
    }
    Ok(losses)
}
