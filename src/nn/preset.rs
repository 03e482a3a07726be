//! The named networks a run can train (`--preset`, stored in checkpoints): the NCSN RefineNet
//! presets of SPEC section 9 and the DDPM++ presets of section 11.
use crate::error::{Error, Result};

crate::named::value_names! {
    /// Named networks: an architecture with its widths (reference/NETWORK.md section 1 for NCSN).
    #[derive(Hash)]
    pub enum Preset parsed as "network preset" {
        /// NCSN, four stages, f = 8, for CPU runs and tests (golden files `ncsn_tiny_28`, `ncsn_tiny_32`).
        Tiny = "tiny" => "NCSN, four stages, f = 8: CPU runs and tests",
        /// ncsn's published widths: four stages, f = 64 at 28x28 and 128 at 32x32.
        Paper = "paper" => "NCSN, four stages, the published widths (f = 64 at 28x28, 128 at 32x32)",
        /// The five-stage network (paper 001 App. D.1, "NCSNDeeper"), the paper's widths.
        Deep = "deep" => "NCSN, five stages (paper 001's NCSNDeeper), the published widths",
        /// Five stages, f = 4 (golden file `ncsn_tiny_deep_28`).
        TinyDeep = "tiny_deep" | "tiny-deep" => "NCSN, five stages, f = 4: tests",
        /// DDPM++ as the paper's released code trains CIFAR-10 (106.6M parameters at 3x32x32).
        Ddpmpp = "ddpmpp" => "DDPM++ (score_sde), the released CIFAR-10 configuration: nf 128, 8 blocks per resolution",
        /// DDPM++ at nf = 8, two resolutions (golden files `ddpmpp_tiny_28`, `ddpmpp_tiny_32`).
        DdpmppTiny = "ddpmpp_tiny" | "ddpmpp-tiny" => "DDPM++, nf 8, two resolutions: CPU runs and tests",
    }
}

/// The architecture behind a preset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Ncsn,
    Ddpmpp,
}

impl Preset {
    pub fn family(self) -> Family {
        match self {
            Preset::Tiny | Preset::Paper | Preset::Deep | Preset::TinyDeep => Family::Ncsn,
            Preset::Ddpmpp | Preset::DdpmppTiny => Family::Ddpmpp,
        }
    }

    /// The number of levels N the preset is usually trained with: one per discretisation step of
    /// paper 001 (N = 1000) for the paper widths, 10 for the test presets.
    pub fn default_levels(self) -> usize {
        match self {
            Preset::Paper | Preset::Deep | Preset::Ddpmpp => 1000,
            Preset::Tiny | Preset::TinyDeep | Preset::DdpmppTiny => 10,
        }
    }

    /// What every network checks of its images and levels: 1 (greyscale) or 3 (colour)
    /// channels, at least one noise level.
    pub(crate) fn check_channels_and_levels(self, channels: usize, n_levels: usize) -> Result<()> {
        if !matches!(channels, 1 | 3) {
            return Err(Error::invalid(format!(
                "network preset '{self}': {channels} image channels; supported: 1 (greyscale) or 3 (colour)"
            )));
        }
        if n_levels == 0 {
            return Err(Error::invalid(format!(
                "network preset '{self}': needs at least one noise level (n_levels = 0)"
            )));
        }
        Ok(())
    }
}
