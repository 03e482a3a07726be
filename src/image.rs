//! PNG figures: a grid of images, and the nearest-neighbour figure of SPEC section 10 (each row a
//! sample followed by its nearest training images). Values in the pixel range are mapped back to
//! [0, 255] and clamped (SPEC section 1).
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use crate::data::PixelRange;
use crate::error::{Error, Result};

/// The separator colour between tiles: mid grey, visible on dark and light images alike.
const PAD_BYTE: u8 = 128;

/// The layout of one image (CHW, channel-planar).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

/// `CxHxW`, as the messages print an image's size.
impl std::fmt::Display for ImageShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.channels, self.height, self.width)
    }
}

impl ImageShape {
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An 8-bit picture, rows of interleaved channels (grey or RGB), as PNG stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Picture {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub pixels: Vec<u8>,
}

/// Tiles `images` (concatenated CHW images in `range`) `per_row` to a row, `padding` pixels
/// around and between the tiles.
pub fn grid(
    images: &[f32],
    shape: ImageShape,
    per_row: usize,
    padding: usize,
    range: PixelRange,
) -> Result<Picture> {
    if shape.channels != 1 && shape.channels != 3 {
        return Err(Error::invalid(format!(
            "image grid: {} channels, expected 1 (grey) or 3 (RGB)",
            shape.channels
        )));
    }
    if shape.is_empty()
        || per_row == 0
        || images.is_empty()
        || !images.len().is_multiple_of(shape.len())
    {
        return Err(Error::invalid(format!(
            "image grid: {} values are not a positive number of {shape} images, {per_row} per row",
            images.len()
        )));
    }
    let count = images.len() / shape.len();
    let rows = count.div_ceil(per_row);
    let (tile_w, tile_h) = (shape.width + padding, shape.height + padding);
    let mut pic = Picture {
        width: per_row * tile_w + padding,
        height: rows * tile_h + padding,
        channels: shape.channels,
        pixels: Vec::new(),
    };
    pic.pixels = vec![PAD_BYTE; pic.width * pic.height * pic.channels];
    for (i, image) in images.chunks_exact(shape.len()).enumerate() {
        let (x0, y0) = (
            padding + (i % per_row) * tile_w,
            padding + (i / per_row) * tile_h,
        );
        blit(&mut pic, image, shape, x0, y0, range);
    }
    Ok(pic)
}

fn blit(
    pic: &mut Picture,
    image: &[f32],
    shape: ImageShape,
    x0: usize,
    y0: usize,
    range: PixelRange,
) {
    let plane = shape.height * shape.width;
    for y in 0..shape.height {
        for x in 0..shape.width {
            let at = ((y0 + y) * pic.width + x0 + x) * pic.channels;
            for c in 0..shape.channels {
                pic.pixels[at + c] = range.to_byte(image[c * plane + y * shape.width + x]);
            }
        }
    }
}

/// Rows of `[sample | its k nearest neighbours]`: `neighbours` holds `k` images per sample, in
/// the samples' order, nearest first.
pub fn neighbour_grid(
    samples: &[f32],
    neighbours: &[f32],
    k: usize,
    shape: ImageShape,
    padding: usize,
    range: PixelRange,
) -> Result<Picture> {
    let d = shape.len();
    if d == 0 || k == 0 || !samples.len().is_multiple_of(d) || neighbours.len() != samples.len() * k
    {
        return Err(Error::invalid(format!(
            "neighbour grid: {} sample values and {} neighbour values are not n and n*{k} (k >= 1) images of {shape}",
            samples.len(),
            neighbours.len()
        )));
    }
    let mut tiles = Vec::with_capacity(samples.len() + neighbours.len());
    for (s, near) in samples.chunks_exact(d).zip(neighbours.chunks_exact(d * k)) {
        tiles.extend_from_slice(s);
        tiles.extend_from_slice(near);
    }
    grid(&tiles, shape, k + 1, padding, range)
}

/// Writes `pic` as an 8-bit grey or RGB PNG.
pub fn write_png(path: impl AsRef<Path>, pic: &Picture) -> Result<()> {
    let path = path.as_ref();
    let fail = |what: &str, e: &dyn std::fmt::Display| Error::file(path, format!("{what}: {e}"));
    let file = File::create(path).map_err(|e| fail("cannot create", &e))?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), pic.width as u32, pic.height as u32);
    encoder.set_color(if pic.channels == 3 {
        png::ColorType::Rgb
    } else {
        png::ColorType::Grayscale
    });
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .map_err(|e| fail("cannot write PNG", &e))?;
    writer
        .write_image_data(&pic.pixels)
        .map_err(|e| fail("cannot write PNG", &e))?;
    writer.finish().map_err(|e| fail("cannot write PNG", &e))
}

/// [`grid`] written to a PNG file.
pub fn write_grid(
    path: impl AsRef<Path>,
    images: &[f32],
    shape: ImageShape,
    per_row: usize,
    padding: usize,
    range: PixelRange,
) -> Result<()> {
    write_png(path, &grid(images, shape, per_row, padding, range)?)
}
