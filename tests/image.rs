//! PNG grids: layout, the map back to bytes, and the files decoded again.
mod common;

use std::path::Path;

use common::*;
use dalemeetslangevin::data::PixelRange;
use dalemeetslangevin::image::{self, ImageShape, Picture};

fn decode(path: &Path) -> Picture {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    pixels.truncate(info.buffer_size());
    Picture {
        width: info.width as usize,
        height: info.height as usize,
        channels: info.color_type.samples(),
        pixels,
    }
}

#[test]
fn grey_grid_places_tiles_and_maps_values_back() {
    let mut rng = test_rng("grey_grid");
    let range = PixelRange::default();
    let shape = ImageShape {
        channels: 1,
        height: 3,
        width: 2,
    };
    // Five images, 2 per row: 3 rows, the last one half empty; values beyond the range clamp.
    let images = random_vec(&mut rng, 5 * 6, 0.5, 2.5);
    let pic = image::grid(&images, shape, 2, 1, range).unwrap();
    assert_eq!(
        (pic.width, pic.height, pic.channels),
        (2 * 3 + 1, 3 * 4 + 1, 1)
    );
    for i in 0..5 {
        let (x0, y0) = (1 + (i % 2) * 3, 1 + (i / 2) * 4);
        for y in 0..3 {
            for x in 0..2 {
                let want = range.to_byte(images[i * 6 + y * 2 + x]);
                assert_eq!(
                    pic.pixels[(y0 + y) * pic.width + x0 + x],
                    want,
                    "image {i} ({x}, {y})"
                );
            }
        }
    }
    // Padding and the empty sixth tile keep the separator colour.
    assert_eq!(pic.pixels[0], 128);
    assert_eq!(pic.pixels[9 * pic.width + 4], 128);

    let dir = tempdir("grey_grid");
    let path = dir.join("grid.png");
    image::write_grid(&path, &images, shape, 2, 1, range).unwrap();
    assert_eq!(decode(&path), pic);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn rgb_grid_interleaves_planar_channels() {
    let range = PixelRange::default();
    let shape = ImageShape {
        channels: 3,
        height: 1,
        width: 2,
    };
    // One image, channel-planar: red plane, green plane, blue plane.
    let images = [1.0, 2.0, 1.5, 1.0, 2.0, 2.0];
    let pic = image::grid(&images, shape, 4, 0, range).unwrap();
    assert_eq!((pic.width, pic.height), (8, 1));
    assert_eq!(&pic.pixels[..6], &[0, 128, 255, 255, 0, 255]);
    let dir = tempdir("rgb_grid");
    let path = dir.join("rgb.png");
    image::write_png(&path, &pic).unwrap();
    assert_eq!(decode(&path), pic);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn neighbour_grid_puts_each_sample_before_its_neighbours() {
    let range = PixelRange::default();
    let shape = ImageShape {
        channels: 1,
        height: 1,
        width: 1,
    };
    let samples = [1.0, 2.0];
    let neighbours = [1.2, 1.4, 1.6, 1.8, 1.9, 1.1];
    let pic = image::neighbour_grid(&samples, &neighbours, 3, shape, 0, range).unwrap();
    assert_eq!((pic.width, pic.height), (4, 2));
    let bytes = |v: &[f32]| v.iter().map(|&x| range.to_byte(x)).collect::<Vec<u8>>();
    assert_eq!(pic.pixels[..4], bytes(&[1.0, 1.2, 1.4, 1.6]));
    assert_eq!(pic.pixels[4..], bytes(&[2.0, 1.8, 1.9, 1.1]));
    assert!(image::neighbour_grid(&samples, &neighbours[..5], 3, shape, 0, range).is_err());
}

#[test]
fn bad_layouts_are_errors_not_panics() {
    let range = PixelRange::default();
    let grey = ImageShape {
        channels: 1,
        height: 2,
        width: 2,
    };
    assert!(image::grid(&[1.0; 7], grey, 2, 1, range).is_err());
    assert!(image::grid(&[], grey, 2, 1, range).is_err());
    assert!(image::grid(&[1.0; 8], grey, 0, 1, range).is_err());
    let two = ImageShape {
        channels: 2,
        height: 2,
        width: 2,
    };
    assert!(image::grid(&[1.0; 8], two, 1, 1, range).is_err());
    let err = image::write_grid("/nonexistent/dir/x.png", &[1.0; 4], grey, 1, 0, range)
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/dir/x.png"), "{err}");
}
