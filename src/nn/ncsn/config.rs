//! NCSN's presets and the one description of stages both topologies are built from (reference/NETWORK.md
//! sections 1 and 5, SPEC section 9).
use crate::error::{Error, Result};
use crate::nn::Preset;
use crate::ops::ConvPrecision;

/// Four encoder stages (ncsn's `CondRefineNetDilated`) or five (`CondRefineNetDeeperDilated`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topology {
    Standard,
    Deeper,
}

/// NCSN's topology and base width f (`ngf`) for a preset: the paper's 64 for 28x28 and 128 for
/// 32x32 (ncsn's configs/anneal.yml), fixed for the test presets; `None` for another family.
fn ncsn_shape(preset: Preset, image_size: usize) -> Option<(Topology, usize)> {
    Some(match preset {
        Preset::Paper if image_size <= 28 => (Topology::Standard, 64),
        Preset::Paper => (Topology::Standard, 128),
        Preset::Deep if image_size <= 28 => (Topology::Deeper, 64),
        Preset::Deep => (Topology::Deeper, 128),
        Preset::Tiny => (Topology::Standard, 8),
        Preset::TinyDeep => (Topology::Deeper, 4),
        Preset::Ddpmpp | Preset::DdpmppTiny => return None,
    })
}

/// One conditional residual block `resS.i`; widths in units of f (NETWORK.md section 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResidualSpec {
    pub in_mult: usize,
    pub out_mult: usize,
    /// ncsn's resample='down'. Only undilated down blocks halve the resolution.
    pub down: bool,
    pub dilation: Option<usize>,
}

/// One refine block `refineR`: input widths (the skip first, then the previous refine output)
/// and output width, in units of f.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefineSpec {
    pub in_mults: Vec<usize>,
    pub out_mult: usize,
}

const fn res(in_mult: usize, out_mult: usize, down: bool, dilation: Option<usize>) -> ResidualSpec {
    ResidualSpec {
        in_mult,
        out_mult,
        down,
        dilation,
    }
}

impl Topology {
    /// The encoder: per stage its two residual blocks (NETWORK.md section 5, stage table).
    pub fn stages(self) -> Vec<[ResidualSpec; 2]> {
        match self {
            Topology::Standard => vec![
                [res(1, 1, false, None), res(1, 1, false, None)],
                [res(1, 2, true, None), res(2, 2, false, None)],
                [res(2, 2, true, Some(2)), res(2, 2, false, Some(2))],
                [res(2, 2, true, Some(4)), res(2, 2, false, Some(4))],
            ],
            Topology::Deeper => vec![
                [res(1, 1, false, None), res(1, 1, false, None)],
                [res(1, 2, true, None), res(2, 2, false, None)],
                [res(2, 2, true, None), res(2, 2, false, None)],
                [res(2, 4, true, Some(2)), res(4, 4, false, Some(2))],
                [res(4, 4, true, Some(4)), res(4, 4, false, Some(4))],
            ],
        }
    }

    /// The decoder, refine1 first (it takes the deepest stage alone).
    pub fn refines(self) -> Vec<RefineSpec> {
        let table: &[(&[usize], usize)] = match self {
            Topology::Standard => &[(&[2], 2), (&[2, 2], 2), (&[2, 2], 1), (&[1, 1], 1)],
            Topology::Deeper => &[
                (&[4], 4),
                (&[4, 4], 2),
                (&[2, 2], 2),
                (&[2, 2], 1),
                (&[1, 1], 1),
            ],
        };
        table
            .iter()
            .map(|&(ins, out)| RefineSpec {
                in_mults: ins.to_vec(),
                out_mult: out,
            })
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Topology::Standard => "standard",
            Topology::Deeper => "deeper",
        }
    }
}

/// Image sizes the network supports: every mean pool then sees an even size (NETWORK.md
/// section 5, "The 28x28 padding question").
pub const IMAGE_SIZES: [usize; 2] = [28, 32];

/// Everything that fixes the network's parameter shapes and forward computation.
#[derive(Clone, Debug, PartialEq)]
pub struct NcsnConfig {
    pub preset: Preset,
    /// Image channels C (1 or 3).
    pub channels: usize,
    /// H = W.
    pub image_size: usize,
    /// Number of noise levels N = classes of the conditional norms (embedding rows).
    pub n_levels: usize,
    /// Base width f (`ngf`).
    pub ngf: usize,
    pub topology: Topology,
    /// The forward arithmetic of every convolution (does not change the parameters).
    pub precision: ConvPrecision,
}

impl NcsnConfig {
    /// Validates: channels in {1, 3}, image_size in {28, 32}, n_levels >= 1.
    pub fn new(
        preset: Preset,
        channels: usize,
        image_size: usize,
        n_levels: usize,
    ) -> Result<Self> {
        let Some((topology, ngf)) = ncsn_shape(preset, image_size) else {
            return Err(Error::invalid(format!(
                "network preset '{preset}' is not an NCSN preset"
            )));
        };
        preset.check_channels_and_levels(channels, n_levels)?;
        if !IMAGE_SIZES.contains(&image_size) {
            return Err(Error::invalid(format!(
                "network preset '{preset}': image size {image_size}x{image_size} is not supported; \
                 supported sizes: 28x28 and 32x32"
            )));
        }
        Ok(Self {
            preset,
            channels,
            image_size,
            n_levels,
            ngf,
            topology,
            precision: ConvPrecision::Fp32,
        })
    }

    /// This network with every convolution's forward pass in `precision`.
    pub fn with_precision(self, precision: ConvPrecision) -> Self {
        Self { precision, ..self }
    }

    /// One line, e.g. "tiny c1 28x28 L10 ngf8".
    pub fn describe(&self) -> String {
        format!(
            "{} c{} {s}x{s} L{} ngf{}",
            self.preset,
            self.channels,
            self.n_levels,
            self.ngf,
            s = self.image_size
        )
    }

    /// The expected input shape for a batch of `batch` images.
    pub fn input_shape(&self, batch: usize) -> [usize; 4] {
        [batch, self.channels, self.image_size, self.image_size]
    }

    /// The number of scalar parameters, counted from the stage description without allocating
    /// (NETWORK.md section 8 lists it for every preset).
    pub fn parameter_count(&self) -> usize {
        let (f, n) = (self.ngf, self.n_levels);
        let conv = |c_in: usize, c_out: usize, k: usize, bias: bool| {
            c_out * c_in * k * k + if bias { c_out } else { 0 }
        };
        let norm = |w: usize| n * 3 * w;
        let rcu = |w: usize, blocks: usize| blocks * 2 * (norm(w) + conv(w, w, 3, false));
        let mut total = conv(self.channels, f, 3, true) + norm(f) + conv(f, self.channels, 3, true);
        for spec in self.topology.stages().iter().flatten() {
            let (a, b) = (spec.in_mult * f, spec.out_mult * f);
            // normalize1, then conv1, normalize2, conv2 and the shortcut per variant (section 4).
            total += norm(a);
            total += match (spec.down, spec.dilation) {
                (true, None) => {
                    conv(a, a, 3, true) + norm(a) + conv(a, b, 3, true) + conv(a, b, 1, true)
                }
                (true, Some(_)) => {
                    conv(a, a, 3, true) + norm(a) + conv(a, b, 3, true) + conv(a, b, 3, true)
                }
                (false, _) => {
                    let shortcut = if a != b { conv(a, b, 3, true) } else { 0 };
                    conv(a, b, 3, true) + norm(b) + conv(b, b, 3, true) + shortcut
                }
            };
        }
        let refines = self.topology.refines();
        for (r, spec) in refines.iter().enumerate() {
            let out = spec.out_mult * f;
            for &p in &spec.in_mults {
                total += rcu(p * f, 2);
            }
            total += rcu(out, if r + 1 == refines.len() { 3 } else { 1 });
            if spec.in_mults.len() > 1 {
                for &p in &spec.in_mults {
                    total += conv(p * f, out, 3, true) + norm(p * f);
                }
            }
            total += 2 * (conv(out, out, 3, false) + norm(out));
        }
        total
    }
}
