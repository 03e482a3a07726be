//! Deterministic batches: the order of each epoch is a Philox permutation (stream `DATA_ORDER`,
//! keyed by the seed, counter step = epoch), so batch `step` is a pure function of
//! (seed, step) and a resumed run sees exactly the batches the uninterrupted one would have.
use super::{Dataset, PixelRange};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::rng::{self, stream};
use crate::tensor::Tensor;

/// The order of epoch `epoch` of `n` examples: a Fisher-Yates shuffle driven by Philox.
pub fn epoch_permutation(n: usize, seed: u64, epoch: u64) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let bits = rng::philox_bits(seed, stream::DATA_ORDER, epoch as u32, i as u64)[0];
        // Multiply-shift maps 32 random bits onto 0..=i (bias below 2^-32 * n, negligible).
        let j = ((bits as u64 * (i as u64 + 1)) >> 32) as usize;
        order.swap(i, j);
    }
    order
}

/// One batch: images `[B, C, H, W]` in the pixel range, their labels and dataset indices.
pub struct Batch {
    pub images: Tensor,
    pub labels: Vec<u8>,
    pub indices: Vec<usize>,
}

pub struct Batcher {
    pub batch_size: usize,
    pub seed: u64,
    pub range: PixelRange,
    n: usize,
    /// The last permutation computed, with its epoch (a cache; results never depend on it).
    cached: Option<(u64, Vec<u32>)>,
}

impl Batcher {
    /// Batches of `batch_size` from a dataset of `n` examples.
    pub fn new(n: usize, batch_size: usize, seed: u64, range: PixelRange) -> Result<Self> {
        if n == 0 || batch_size == 0 {
            return Err(Error::invalid(format!(
                "batches of {batch_size} from {n} examples: both must be positive"
            )));
        }
        Ok(Self {
            batch_size,
            seed,
            range,
            n,
            cached: None,
        })
    }

    /// The dataset indices of batch `step`: positions `step * B .. (step + 1) * B` of the
    /// concatenated epoch orders (a batch may straddle two epochs).
    pub fn indices(&mut self, step: u64) -> Vec<usize> {
        let start = step * self.batch_size as u64;
        (start..start + self.batch_size as u64)
            .map(|pos| {
                let (epoch, within) = (pos / self.n as u64, (pos % self.n as u64) as usize);
                self.order(epoch)[within] as usize
            })
            .collect()
    }

    fn order(&mut self, epoch: u64) -> &[u32] {
        if self.cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
            self.cached = Some((epoch, epoch_permutation(self.n, self.seed, epoch)));
        }
        &self.cached.as_ref().expect("filled above").1
    }

    /// Batch `step` of `data` on `device`.
    pub fn batch(&mut self, data: &Dataset, step: u64, device: &Device) -> Result<Batch> {
        if data.n != self.n {
            return Err(Error::invalid(format!(
                "batcher made for {} examples used with dataset '{}' of {}",
                self.n, data.name, data.n
            )));
        }
        let indices = self.indices(step);
        let values = data.images_in_range(&indices, self.range);
        let shape = [self.batch_size, data.channels, data.height, data.width];
        Ok(Batch {
            images: Tensor::from_vec(values, &shape, device)?,
            labels: indices.iter().map(|&i| data.labels[i]).collect(),
            indices,
        })
    }
}
