//! The sampler settings the paper's released code ships per dataset and network (chosen there by
//! grid search minimising FID/KID, paper 003 section 6), by name. A preset is the `sample`/`eval`
//! options it stands for; options given on the command line win. Each number is the released
//! code's, from `Madhavaprasath23/Dale-Meets-Langevin`'s `gbm_configs/<network>/<dataset>.py`
//! (`update_configs`: `delta` is `--delta-s`, `L` is `--inner-steps`, `anneal_factor` is `--chi`;
//! its 'dls' sampler is `adls`, its 'ums' sampler is `asams`; `start_from_average` is the
//! class-average start; CIFAR-10's `tweedie_steps = 25` are the terminal denoising steps).
//! All were tuned for N = 1000 levels of constant sigma 0.8 (the `paper` and `deep` presets'
//! schedule).

crate::named::value_names! {
    /// A released sampler setting.
    pub enum SamplerPreset {
        FashionAdls = "fashion-adls" => "Fashion-MNIST, NCSNDeeper: adls, delta_s 5.86e-4, L 1, chi 0.995",
        FashionAsams = "fashion-asams" => "Fashion-MNIST, NCSNDeeper: asams, delta_s 1.47e-3, L 3, chi 0.9995",
        FashionAsamsClass = "fashion-asams-class" => "Fashion-MNIST, NCSNDeeper: asams from class averages, delta_s 2.59e-4, L 3, chi 0.9995",
        MnistAdls = "mnist-adls" => "MNIST, NCSNDeeper: adls, delta_s 6.17e-4, L 1, chi 0.995",
        MnistAsams = "mnist-asams" => "MNIST, NCSNDeeper: asams, delta_s 1.44e-4, L 4, chi 0.995",
        KmnistAdls = "kmnist-adls" => "Kuzushiji-MNIST, NCSNDeeper: adls, delta_s 2.11e-4, L 3, chi 0.995",
        KmnistAsams = "kmnist-asams" => "Kuzushiji-MNIST, NCSNDeeper: asams, delta_s 2.11e-4, L 3, chi 1",
        KmnistAsamsClass = "kmnist-asams-class" => "Kuzushiji-MNIST, NCSNDeeper: asams from class averages, delta_s 3.36e-4, L 2, chi 0.995",
        Cifar10Adls = "cifar10-adls" => "CIFAR-10, NCSN++: adls, delta_s 1.14e-4, L 6, chi 0.9995, 25 terminal steps",
        Cifar10Asams = "cifar10-asams" => "CIFAR-10, NCSN++: asams, delta_s 1.44e-4, L 5, chi 0.9995, 25 terminal steps",
    }
}

impl SamplerPreset {
    /// The options this preset stands for, as (option, value) without the leading `--`.
    pub fn options(self) -> Vec<(&'static str, &'static str)> {
        // (sampler, delta, L, anneal_factor, the start or terminal steps when set)
        let (sampler, delta_s, inner_steps, chi, extra) = match self {
            Self::FashionAdls => ("adls", "0.0005862727272727274", "1", "0.995", None),
            Self::FashionAsams => ("asams", "0.001467799267622069", "3", "0.9995", None),
            Self::FashionAsamsClass => ("asams", "0.000259294380", "3", "0.9995", CLASS_START),
            Self::MnistAdls => ("adls", "0.0006165454545454547", "1", "0.995", None),
            Self::MnistAsams => ("asams", "0.000143844988828766", "4", "0.995", None),
            Self::KmnistAdls => ("adls", "0.00021131578947368424", "3", "0.995", None),
            Self::KmnistAsams => ("asams", "0.00021131578947368424", "3", "1.0", None),
            Self::KmnistAsamsClass => ("asams", "0.0003359818286283781", "2", "0.995", CLASS_START),
            Self::Cifar10Adls => ("adls", "0.00011421052631578947", "6", "0.9995", TWEEDIE),
            Self::Cifar10Asams => ("asams", "0.000143844988828766", "5", "0.9995", TWEEDIE),
        };
        let mut options = vec![
            ("sampler", sampler),
            ("delta-s", delta_s),
            ("inner-steps", inner_steps),
            ("chi", chi),
        ];
        options.extend(extra);
        options
    }
}

/// The released code's `start_from_average`.
const CLASS_START: Option<(&str, &str)> = Some(("init", "class-average"));
/// The released CIFAR-10 code's `tweedie_steps = 25`.
const TWEEDIE: Option<(&str, &str)> = Some(("terminal-steps", "25"));

#[cfg(test)]
mod tests {
    use super::*;

    /// Each preset's numbers, as the released code writes them (`delta`, `L`, `anneal_factor`).
    #[test]
    fn presets_hold_the_released_numbers() {
        let value = |p: SamplerPreset, flag: &str| {
            p.options()
                .iter()
                .find(|(f, _)| *f == flag)
                .map(|(_, v)| v.parse::<f64>().unwrap())
        };
        let expected = [
            (
                SamplerPreset::FashionAdls,
                0.0005862727272727274,
                1.0,
                0.995,
            ),
            (
                SamplerPreset::FashionAsams,
                0.001467799267622069,
                3.0,
                0.9995,
            ),
            (
                SamplerPreset::FashionAsamsClass,
                2.59294380e-04,
                3.0,
                0.9995,
            ),
            (SamplerPreset::MnistAdls, 0.0006165454545454547, 1.0, 0.995),
            (SamplerPreset::MnistAsams, 0.000143844988828766, 4.0, 0.995),
            (
                SamplerPreset::KmnistAdls,
                0.00021131578947368424,
                3.0,
                0.995,
            ),
            (SamplerPreset::KmnistAsams, 0.00021131578947368424, 3.0, 1.0),
            (
                SamplerPreset::KmnistAsamsClass,
                0.0003359818286283781,
                2.0,
                0.995,
            ),
            (
                SamplerPreset::Cifar10Adls,
                0.00011421052631578947,
                6.0,
                0.9995,
            ),
            (
                SamplerPreset::Cifar10Asams,
                0.000143844988828766,
                5.0,
                0.9995,
            ),
        ];
        assert_eq!(expected.len(), SamplerPreset::ALL.len());
        for (preset, delta_s, inner, chi) in expected {
            assert_eq!(value(preset, "delta-s"), Some(delta_s), "{preset}");
            assert_eq!(value(preset, "inner-steps"), Some(inner), "{preset}");
            assert_eq!(value(preset, "chi"), Some(chi), "{preset}");
        }
        for preset in [SamplerPreset::Cifar10Adls, SamplerPreset::Cifar10Asams] {
            assert_eq!(value(preset, "terminal-steps"), Some(25.0));
        }
    }
}
