//! Dataset statistics for the samplers' initialisations (SPEC section 4): per-class mean images
//! (class-average init) and per-channel mean and variance of `log x` (log-normal init).
use super::{Dataset, PixelRange};
use crate::error::{Error, Result};

/// Mean and variance of `log x` over all pixels of one channel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogStats {
    pub mean: f64,
    pub var: f64,
}

impl Dataset {
    /// `[n_classes, C, H, W]` in the pixel range: the mean image of each class. A class with no
    /// images (a single-class set, or the first few images of one) takes the mean of all
    /// images, so that the class-average start still has a picture for every class; only an
    /// empty dataset is an error.
    pub fn class_means(&self, range: PixelRange) -> Result<Vec<f32>> {
        let d = self.image_len();
        let table = range.table();
        let mut sums = vec![0f64; self.n_classes * d];
        let mut counts = vec![0usize; self.n_classes];
        for i in 0..self.n {
            let c = self.labels[i] as usize;
            counts[c] += 1;
            let acc = &mut sums[c * d..(c + 1) * d];
            for (s, &b) in acc.iter_mut().zip(self.image(i)) {
                *s += table[b as usize] as f64;
            }
        }
        if self.n == 0 {
            return Err(Error::invalid(format!(
                "dataset '{}' has no images: no class means",
                self.name
            )));
        }
        let mut overall = vec![0f64; d];
        for class in sums.chunks(d) {
            overall.iter_mut().zip(class).for_each(|(o, v)| *o += v);
        }
        let mut means = Vec::with_capacity(sums.len());
        for (class, &k) in sums.chunks(d).zip(&counts) {
            let (total, count) = if k == 0 {
                (&overall, self.n)
            } else {
                (&class.to_vec(), k)
            };
            means.extend(total.iter().map(|v| (v / count as f64) as f32));
        }
        Ok(means)
    }

    /// Per channel: mean and (population) variance of `log x`, `x` in the pixel range.
    pub fn log_stats(&self, range: PixelRange) -> Vec<LogStats> {
        let table = range.table().map(|x| (x as f64).ln());
        let plane = self.height * self.width;
        (0..self.channels)
            .map(|c| {
                // Histogram of bytes first: exact, and 256 logs instead of one per pixel.
                let mut hist = [0u64; 256];
                for i in 0..self.n {
                    for &b in &self.image(i)[c * plane..(c + 1) * plane] {
                        hist[b as usize] += 1;
                    }
                }
                let count = hist.iter().sum::<u64>() as f64;
                let mean = hist
                    .iter()
                    .zip(&table)
                    .map(|(&h, &l)| h as f64 * l)
                    .sum::<f64>()
                    / count;
                let var = hist
                    .iter()
                    .zip(&table)
                    .map(|(&h, &l)| h as f64 * (l - mean) * (l - mean))
                    .sum::<f64>()
                    / count;
                LogStats { mean, var }
            })
            .collect()
    }
}
