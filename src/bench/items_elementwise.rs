//! Plain element-wise kernels over 1000 images of 28x28, to see how close the simplest memory-
//! bound work gets to the copy ceiling: copy, exp, add, sum and the Philox normal generator.
use super::items_gbm::IMAGE_ELEMENTS;
use super::rotation::{normal, positive, Rotation};
use super::{BenchConfig, Item, Run};
use crate::device::Device;
use crate::error::Result;
use crate::ops;
use crate::tensor::Tensor;

pub(super) const KEY_ROOTS: &[&str] = &["copy", "exp", "add", "sum", "philox_normals"];

#[derive(Clone, Copy, Debug)]
enum Kernel {
    Copy,
    Exp,
    Add,
    Sum,
    PhiloxNormals,
}

impl Kernel {
    const ALL: [Kernel; 5] = [
        Kernel::Copy,
        Kernel::Exp,
        Kernel::Add,
        Kernel::Sum,
        Kernel::PhiloxNormals,
    ];

    fn key_root(self) -> &'static str {
        KEY_ROOTS[self as usize]
    }

    /// (tensors read, tensors written, FLOPs per element).
    fn work(self) -> (usize, usize, f64) {
        match self {
            Kernel::Copy | Kernel::Exp => (1, 1, 0.0),
            Kernel::Add => (2, 1, 1.0),
            Kernel::Sum => (1, 0, 1.0),
            Kernel::PhiloxNormals => (0, 1, 0.0),
        }
    }
}

pub(super) fn items(cfg: &BenchConfig) -> Vec<Item> {
    let n = cfg.elementwise_images * IMAGE_ELEMENTS;
    Kernel::ALL
        .into_iter()
        .map(|kernel| {
            let (reads, writes, flops) = kernel.work();
            let device = cfg.device.clone();
            Item::new(
                format!("{}/{n}", kernel.key_root()),
                4.0 * ((reads + writes) * n) as f64,
                flops * n as f64,
                move || prepare(kernel, n, &device),
            )
        })
        .collect()
}

fn prepare(kernel: Kernel, n: usize, device: &Device) -> Result<Run> {
    let (reads, _, _) = kernel.work();
    let make = |i: u32| {
        Ok((
            positive(&[n], 2 * i, device)?,
            normal(&[n], 2 * i + 1, device)?,
        ))
    };
    // The generator reads nothing: one set, unused, keeps the call uniform.
    let mut inputs: Rotation<(Tensor, Tensor)> = match reads {
        0 => Rotation::with_copies(1, make)?,
        _ => Rotation::exceeding_cache(4.0 * (reads * n) as f64, make)?,
    };
    let device = device.clone();
    let mut draw = 0u32;
    Ok(Box::new(move || {
        let (x, y) = inputs.next_set();
        match kernel {
            Kernel::Copy => ops::copy(x),
            Kernel::Exp => ops::exp(x),
            Kernel::Add => ops::add(x, y),
            Kernel::Sum => ops::sum(x),
            Kernel::PhiloxNormals => {
                draw = draw.wrapping_add(1);
                ops::normal(&[n], ops::PhiloxDraw::new(3, 0, draw), &device)
            }
        }
        .map(drop)
    }))
}
