//! The built-in dataset: 28x28 grayscale pictures of five kinds of shape, generated from Philox,
//! so a machine with no dataset installed can still train, sample and evaluate. Every image is a
//! pure function of (split, index): the same bytes everywhere.
use crate::rng::{self, stream};

pub const SIDE: usize = 28;
pub const CLASS_NAMES: [&str; 5] = ["disc", "square", "ring", "cross", "stripes"];
pub const TRAIN_IMAGES: usize = 6000;
pub const TEST_IMAGES: usize = 1000;
/// The Philox key of the built-in dataset ("SHAPES").
const SEED: u64 = 0x5348_4150_4553;
/// Sub-pixel samples per axis for anti-aliased edges.
const SUPERSAMPLE: usize = 3;

/// Images (N x 1 x 28 x 28 bytes) and labels; `split` 0 is train, 1 is test. Classes cycle, so
/// they are balanced.
pub fn generate(split: u32, n: usize) -> (Vec<u8>, Vec<u8>) {
    let mut images = Vec::with_capacity(n * SIDE * SIDE);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % CLASS_NAMES.len();
        images.extend(draw(class, &Placement::random(split, i as u64)));
        labels.push(class as u8);
    }
    (images, labels)
}

/// Where and how one shape is drawn.
struct Placement {
    cx: f32,
    cy: f32,
    radius: f32,
    intensity: f32,
    /// Stripes run horizontally rather than vertically.
    horizontal: bool,
}

impl Placement {
    fn random(split: u32, index: u64) -> Self {
        let b = rng::philox_bits(SEED, stream::DATA_ORDER, split, index);
        let u = |w: u32| rng::uniform_closed_open(w);
        let radius = 5.0 + 5.0 * u(b[0]);
        // The centre keeps the whole shape one pixel inside the frame.
        let span = SIDE as f32 - 2.0 * (radius + 1.0);
        Self {
            cx: radius + 1.0 + span * u(b[1]),
            cy: radius + 1.0 + span * u(b[2]),
            radius,
            intensity: 150.0 + 105.0 * u(b[3]),
            horizontal: b[3] & 1 == 1,
        }
    }
}

fn draw(class: usize, p: &Placement) -> Vec<u8> {
    let mut out = vec![0u8; SIDE * SIDE];
    let step = 1.0 / SUPERSAMPLE as f32;
    for y in 0..SIDE {
        for x in 0..SIDE {
            let mut hits = 0;
            for sy in 0..SUPERSAMPLE {
                for sx in 0..SUPERSAMPLE {
                    let dx = x as f32 + (sx as f32 + 0.5) * step - p.cx;
                    let dy = y as f32 + (sy as f32 + 0.5) * step - p.cy;
                    hits += inside(class, dx, dy, p) as usize;
                }
            }
            let coverage = hits as f32 / (SUPERSAMPLE * SUPERSAMPLE) as f32;
            out[y * SIDE + x] = (p.intensity * coverage).round() as u8;
        }
    }
    out
}

/// Whether the point (dx, dy), relative to the centre, lies in the shape of `class`.
fn inside(class: usize, dx: f32, dy: f32, p: &Placement) -> bool {
    let r = p.radius;
    let dist = (dx * dx + dy * dy).sqrt();
    let box_ = dx.abs().max(dy.abs());
    match class {
        0 => dist <= r,
        1 => box_ <= r * 0.8,
        2 => dist <= r && dist >= r * 0.55,
        3 => {
            let arm = r * 0.25;
            (dx.abs() <= arm && dy.abs() <= r) || (dy.abs() <= arm && dx.abs() <= r)
        }
        _ => {
            let along = if p.horizontal { dy } else { dx };
            let period = r * 0.5;
            box_ <= r * 0.9 && ((along + r) / period).floor() as i64 % 2 == 0
        }
    }
}
