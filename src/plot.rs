//! Line charts as PNG pictures (sweep.png, the training curves): each series a coloured line
//! with a marker at each point, inside a frame, on white. There is no text (the engine carries
//! no font): the command that writes a chart prints what its axes and colours are.
use crate::image::Picture;

/// Colours of the series, in order (then again): distinct on white and for most colour
/// vision.
const PALETTE: [[u8; 3]; 8] = [
    [0, 114, 178],
    [213, 94, 0],
    [0, 158, 115],
    [204, 121, 167],
    [230, 159, 0],
    [86, 180, 233],
    [0, 0, 0],
    [240, 228, 66],
];
const FRAME: [u8; 3] = [128, 128, 128];
const MARGIN: usize = 12;
/// Series with more points than this are drawn without markers.
const MAX_MARKED_POINTS: usize = 64;

/// Points `(x, y)` joined in order (each marked when there are few); non-finite points (and non-positive ones on a log axis) are
/// left out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    pub points: Vec<(f64, f64)>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Chart {
    pub series: Vec<Series>,
    pub log_x: bool,
    pub log_y: bool,
    /// The x axis's span (after the log, when `log_x`) [default: the points'].
    pub x_range: Option<(f64, f64)>,
}

/// The colour of series `i`, as the commands name it: "blue, orange, green, ...".
pub fn colour_name(i: usize) -> &'static str {
    const NAMES: [&str; 8] = [
        "blue",
        "orange",
        "green",
        "pink",
        "yellow-orange",
        "sky blue",
        "black",
        "yellow",
    ];
    NAMES[i % NAMES.len()]
}

impl Chart {
    /// The points as drawn: on the log scale where asked, the unplottable ones dropped.
    fn plotted(&self) -> Vec<Vec<(f64, f64)>> {
        let axis = |v: f64, log: bool| match log {
            true if v > 0.0 => Some(v.log10()),
            true => None,
            false => Some(v),
        };
        self.series
            .iter()
            .map(|s| {
                s.points
                    .iter()
                    .filter_map(|&(x, y)| Some((axis(x, self.log_x)?, axis(y, self.log_y)?)))
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .collect()
            })
            .collect()
    }

    /// The smallest and largest x and y drawn, `(lo, hi)` each (a point's range widened so
    /// it maps to the middle); `None` when nothing can be drawn.
    pub fn ranges(&self) -> Option<[(f64, f64); 2]> {
        let points: Vec<(f64, f64)> = self.plotted().concat();
        let range = |values: Vec<f64>| {
            let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if lo == hi {
                (lo - 0.5, hi + 0.5)
            } else {
                (lo, hi)
            }
        };
        (!points.is_empty()).then(|| {
            [
                self.x_range
                    .unwrap_or_else(|| range(points.iter().map(|p| p.0).collect())),
                range(points.iter().map(|p| p.1).collect()),
            ]
        })
    }

    /// The chart drawn on a `width` x `height` RGB picture.
    pub fn render(&self, width: usize, height: usize) -> Picture {
        let mut canvas = Canvas::new(width.max(4 * MARGIN), height.max(4 * MARGIN));
        canvas.frame();
        let Some([(x0, x1), (y0, y1)]) = self.ranges() else {
            return canvas.picture;
        };
        let (w, h) = (canvas.picture.width, canvas.picture.height);
        let to_pixel = |(x, y): (f64, f64)| {
            let px = MARGIN as f64 + (x - x0) / (x1 - x0) * (w - 2 * MARGIN - 1) as f64;
            let py = (h - MARGIN - 1) as f64 - (y - y0) / (y1 - y0) * (h - 2 * MARGIN - 1) as f64;
            (px.round() as i64, py.round() as i64)
        };
        for (i, points) in self.plotted().iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            let pixels: Vec<(i64, i64)> = points.iter().map(|&p| to_pixel(p)).collect();
            for pair in pixels.windows(2) {
                canvas.line(pair[0], pair[1], colour);
            }
            // Markers show where the points are; on a dense series (a loss curve) they would
            // only hide the line.
            if pixels.len() <= MAX_MARKED_POINTS {
                for &p in &pixels {
                    canvas.marker(p, colour);
                }
            }
        }
        canvas.picture
    }
}

/// Pictures of one width, one above the other, for charts that share an x axis.
pub fn stack(pictures: &[Picture]) -> Picture {
    let width = pictures.iter().map(|p| p.width).max().unwrap_or(0);
    let mut pixels = Vec::new();
    for p in pictures {
        for row in p.pixels.chunks_exact(p.width * 3) {
            pixels.extend_from_slice(row);
            pixels.resize(pixels.len() + (width - p.width) * 3, 255);
        }
    }
    Picture {
        width,
        height: pictures.iter().map(|p| p.height).sum(),
        channels: 3,
        pixels,
    }
}

struct Canvas {
    picture: Picture,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Self {
        Self {
            picture: Picture {
                width,
                height,
                channels: 3,
                pixels: vec![255; width * height * 3],
            },
        }
    }

    fn set(&mut self, (x, y): (i64, i64), colour: [u8; 3]) {
        let (w, h) = (self.picture.width as i64, self.picture.height as i64);
        if (0..w).contains(&x) && (0..h).contains(&y) {
            let at = ((y * w + x) * 3) as usize;
            self.picture.pixels[at..at + 3].copy_from_slice(&colour);
        }
    }

    /// The rectangle the data is drawn inside, a few pixels out from it.
    fn frame(&mut self) {
        let (w, h) = (self.picture.width as i64, self.picture.height as i64);
        let (lo, right, bottom) = (
            MARGIN as i64 / 2,
            w - MARGIN as i64 / 2,
            h - MARGIN as i64 / 2,
        );
        self.line((lo, lo), (right, lo), FRAME);
        self.line((right, lo), (right, bottom), FRAME);
        self.line((right, bottom), (lo, bottom), FRAME);
        self.line((lo, bottom), (lo, lo), FRAME);
    }

    /// Bresenham's line, both ends included.
    fn line(&mut self, (mut x, mut y): (i64, i64), (x1, y1): (i64, i64), colour: [u8; 3]) {
        let (dx, dy) = ((x1 - x).abs(), -(y1 - y).abs());
        let (sx, sy) = ((x1 - x).signum(), (y1 - y).signum());
        let mut err = dx + dy;
        loop {
            self.set((x, y), colour);
            if (x, y) == (x1, y1) {
                return;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// A 5 x 5 square centred on `p`.
    fn marker(&mut self, (x, y): (i64, i64), colour: [u8; 3]) {
        for dy in -2..=2 {
            for dx in -2..=2 {
                self.set((x + dx, y + dy), colour);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_draws_its_points_and_skips_what_a_log_axis_cannot_show() {
        let chart = Chart {
            series: vec![Series {
                points: vec![(1e-4, 2.0), (1e-3, 1.0), (0.0, 5.0), (1e-2, f64::NAN)],
            }],
            log_x: true,
            ..Chart::default()
        };
        let [(x0, x1), (y0, y1)] = chart.ranges().unwrap();
        assert!((x0 + 4.0).abs() < 1e-12 && (x1 + 3.0).abs() < 1e-12);
        assert_eq!((y0, y1), (1.0, 2.0));
        let picture = chart.render(100, 80);
        assert_eq!(picture.pixels.len(), 100 * 80 * 3);
        // The first point, at the top left of the data area, is blue.
        let at = (MARGIN * 100 + MARGIN) * 3;
        assert_eq!(picture.pixels[at..at + 3], PALETTE[0]);
        let stacked = stack(&[picture.clone(), picture]);
        assert_eq!((stacked.width, stacked.height), (100, 160));
    }
}
