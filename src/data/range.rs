//! The affine pixel map of SPEC section 1: intensities in [0, 255] to `[lo, hi]` (default
//! `[1, 2]`, so every pixel is positive) and back, clamped, for display.
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PixelRange {
    pub lo: f32,
    pub hi: f32,
}

impl Default for PixelRange {
    fn default() -> Self {
        Self { lo: 1.0, hi: 2.0 }
    }
}

impl PixelRange {
    /// A range for the multiplicative diffusion must be positive (log x must exist) and non-empty.
    pub fn new(lo: f32, hi: f32) -> Result<Self> {
        if !(lo > 0.0 && hi > lo && hi.is_finite()) {
            return Err(Error::invalid(format!(
                "pixel range [{lo}, {hi}]: need 0 < lo < hi"
            )));
        }
        Ok(Self { lo, hi })
    }

    /// `lo + (hi - lo) * byte / 255`.
    pub fn to_model(&self, byte: u8) -> f32 {
        self.lo + (self.hi - self.lo) * (byte as f32 / 255.0)
    }

    /// The inverse map, rounded and clamped to [0, 255] (NaN shows as 0).
    pub fn to_byte(&self, x: f32) -> u8 {
        let v = (x - self.lo) / (self.hi - self.lo) * 255.0;
        if v.is_nan() {
            0
        } else {
            v.round().clamp(0.0, 255.0) as u8
        }
    }

    /// `to_model` for all 256 intensities, so converting an image is one lookup per pixel.
    pub fn table(&self) -> [f32; 256] {
        std::array::from_fn(|b| self.to_model(b as u8))
    }
}

impl std::fmt::Display for PixelRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{}", self.lo, self.hi)
    }
}

impl std::str::FromStr for PixelRange {
    type Err = Error;

    /// `lo,hi`, as written by `Display` (for checkpoint metadata and the command line).
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::invalid(format!("pixel range '{s}': expected 'lo,hi', e.g. '1,2'"));
        let (lo, hi) = s.split_once(',').ok_or_else(bad)?;
        let lo = lo.trim().parse().map_err(|_| bad())?;
        let hi = hi.trim().parse().map_err(|_| bad())?;
        Self::new(lo, hi)
    }
}
