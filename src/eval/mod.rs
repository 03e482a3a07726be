//! Evaluation (SPEC section 10): distances between sample and data distributions in a feature
//! space, and pixel-space nearest neighbours.
mod classifier;
mod copying;
mod frechet;
pub mod inception;
mod kid;
mod neighbours;
mod report;

pub use classifier::{accuracy_of, Classifier, ClassifierSpec, ClassifierTraining};
pub use copying::{copy_test, CopyTest};
pub use frechet::frechet_distance;
pub use kid::{kernel_inception_distance as kid, KidReference};
pub use neighbours::{nearest_neighbours, Neighbour};
pub use report::{
    evaluate, nearest_training_images, subset as fixed_subset, EvalOptions, EvalReport, Samples,
    EVAL_CSV_HEADER,
};

/// Feature vectors, one row per image.
pub struct Features<'a> {
    pub data: &'a [f32],
    pub dim: usize,
}

impl Features<'_> {
    pub fn rows(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}
