//! Softmax cross-entropy with its gradient in one pass (kernels/softmax.cu), for the classifier
//! whose features the evaluation metrics use (SPEC section 10).
use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops::launch::{launch, Arg, LaunchGeometry};
use crate::tensor::Tensor;

/// Mean cross-entropy of `logits` [B, K] against integer `labels` [B] (as floats), and its
/// gradient with respect to the logits.
pub fn softmax_cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<(Tensor, Tensor)> {
    let (rows, classes) = match logits.shape() {
        [b, k] => (*b, *k),
        s => {
            return Err(Error::shape(
                "softmax_cross_entropy",
                format!("logits must be [B, K], got {s:?}"),
            ))
        }
    };
    if labels.shape() != [rows] {
        return Err(Error::shape(
            "softmax_cross_entropy",
            format!(
                "labels {:?} for logits {:?}",
                labels.shape(),
                logits.shape()
            ),
        ));
    }
    if classes == 0 {
        return Err(Error::shape("softmax_cross_entropy", "zero classes"));
    }
    let dev = logits.device();
    let mut loss_rows = Tensor::uninit(&[rows], dev)?;
    let mut dlogits = Tensor::uninit(logits.shape(), dev)?;
    match dev {
        Device::Cpu => {
            let (z, y) = (logits.host()?, labels.host()?);
            check_labels(y, classes)?;
            let losses = loss_rows.host_mut()?;
            let grad = dlogits.host_mut()?;
            for b in 0..rows {
                let row = &z[b * classes..(b + 1) * classes];
                let label = y[b] as usize;
                let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let denom: f32 = row.iter().map(|&v| (v - m).exp()).sum();
                losses[b] = denom.ln() + m - row[label];
                for (j, &v) in row.iter().enumerate() {
                    let p = (v - m).exp() / denom;
                    grad[b * classes + j] = (p - (j == label) as u8 as f32) / rows as f32;
                }
            }
        }
        dev => {
            if dev.is_host() {
                check_labels(labels.host()?, classes)?;
            }
            let g = LaunchGeometry::elementwise(rows);
            launch(
                dev,
                "softmax_xent_f32",
                g,
                &mut [
                    Arg::In(logits),
                    Arg::In(labels),
                    Arg::Out(&mut loss_rows),
                    Arg::Out(&mut dlogits),
                    Arg::I32(rows as i32),
                    Arg::I32(classes as i32),
                ],
            )?;
        }
    }
    Ok((super::mean(&loss_rows)?, dlogits))
}

fn check_labels(labels: &[f32], classes: usize) -> Result<()> {
    match labels
        .iter()
        .find(|&&l| !(l >= 0.0 && (l as usize) < classes && l.fract() == 0.0))
    {
        Some(bad) => Err(Error::invalid(format!(
            "label {bad} is not a class index below {classes}"
        ))),
        None => Ok(()),
    }
}
