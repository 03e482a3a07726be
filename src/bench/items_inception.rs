//! `inception_features/1x28x28/b{B}` (BENCH.md): the FID InceptionV3's 2048 features of a batch
//! of grey 28x28 images in [0, 1] (Fashion-MNIST's shape), as `dml eval --inception` computes
//! them: repeat to three channels, resize to 299x299, the 94 convolutions and the pools. The
//! network (470 tensors, 21.8M parameters) is built on the formula weights in `prepare`, outside
//! the timed call; its throughput in images/s is reported under the table.
use super::network_trace::IMAGE;
use super::rotation::{unit, Rotation};
use super::{BenchConfig, Item, Run};
use crate::device::Device;
use crate::error::Result;
use crate::nn::inception::{self, FidInception, FEATURES};

pub(super) const KEY_ROOTS: &[&str] = &["inception_features"];

pub(super) fn items(cfg: &BenchConfig) -> Vec<Item> {
    let batch = cfg.inception_batch;
    let [c, h, w] = IMAGE;
    // The folded parameters read once, the images read and the features written; only
    // convolution FLOPs.
    let elements = inception::folded_parameter_count() + batch * (c * h * w + FEATURES);
    let flops = batch as f64 * inception::conv_flops_per_image();
    let device = cfg.device.clone();
    vec![Item::new(
        format!("inception_features/{c}x{h}x{w}/b{batch}"),
        4.0 * elements as f64,
        flops,
        move || prepare(batch, &device),
    )
    .with_memory()
    .with_images(batch)]
}

fn prepare(batch: usize, device: &Device) -> Result<Run> {
    let net = FidInception::with_formula_weights(device)?;
    let [c, h, w] = IMAGE;
    let mut images = Rotation::with_copies(2, |i| unit(&[batch, c, h, w], i, device))?;
    Ok(Box::new(move || net.features(images.next_set()).map(drop)))
}
