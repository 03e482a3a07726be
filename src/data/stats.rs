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
    /// images is an error.
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
        if let Some(c) = counts.iter().position(|&k| k == 0) {
            return Err(Error::invalid(format!(
                "dataset '{}' has no image of class {c}: no class mean",
                self.name
            )));
        }
        Ok(sums
            .chunks(d)
            .zip(&counts)
            .flat_map(|(s, &k)| s.iter().map(move |v| (v / k as f64) as f32))
            .collect())
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
