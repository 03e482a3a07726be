//! Pixel-space nearest neighbours of samples in the training set (paper 003, G.1): evidence of
//! memorisation when a sample is a near-copy of a training image.
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Neighbour {
    pub index: usize,
    /// Euclidean distance in pixel space.
    pub distance: f32,
}

/// The `k` nearest training images of each sample, closest first. Images are flattened rows of
/// `dim` values.
pub fn nearest_neighbours(
    samples: &[f32],
    train: &[f32],
    dim: usize,
    k: usize,
) -> Result<Vec<Vec<Neighbour>>> {
    if dim == 0 || !samples.len().is_multiple_of(dim) || !train.len().is_multiple_of(dim) {
        return Err(Error::invalid(format!(
            "nearest neighbours: {} sample values and {} training values are not rows of {dim}",
            samples.len(),
            train.len()
        )));
    }
    let n_train = train.len() / dim;
    if k == 0 || k > n_train {
        return Err(Error::invalid(format!(
            "nearest neighbours: k = {k} with {n_train} training images"
        )));
    }
    Ok(samples
        .chunks(dim)
        .map(|s| {
            let mut all: Vec<Neighbour> = train
                .chunks(dim)
                .enumerate()
                .map(|(index, t)| {
                    let d2: f32 = s.iter().zip(t).map(|(a, b)| (a - b) * (a - b)).sum();
                    Neighbour {
                        index,
                        distance: d2.sqrt(),
                    }
                })
                .collect();
            all.select_nth_unstable_by(k - 1, |a, b| a.distance.total_cmp(&b.distance));
            all.truncate(k);
            all.sort_by(|a, b| a.distance.total_cmp(&b.distance));
            all
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_closest_rows_in_order() {
        let train = [0.0, 0.0, 3.0, 4.0, 1.0, 1.0, 10.0, 10.0];
        let samples = [0.9, 1.2];
        let nn = nearest_neighbours(&samples, &train, 2, 2).unwrap();
        assert_eq!(nn[0][0].index, 2);
        assert_eq!(nn[0][1].index, 0);
        assert!((nn[0][1].distance - (0.81f32 + 1.44).sqrt()).abs() < 1e-6);
        assert!(nearest_neighbours(&samples, &train, 2, 5).is_err());
    }
}
