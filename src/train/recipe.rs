//! Named training recipes: a set of defaults for `dml train`, each documented with where its
//! numbers come from. An option given on the command line always wins over the recipe.
crate::named::value_names! {
    /// A named set of training defaults.
    pub enum Recipe {
        /// The engine's own defaults (the options' documented defaults).
        Engine = "engine" => "the engine's defaults (each option's [default])",
        /// The paper's released PyTorch code (SPEC 3.1).
        Released = "released" => "the paper's released code: sk4 weighting, Stein output, Adam lr 1e-4, batch 128, 300k steps (SPEC 3.1)",
    }
}

impl Recipe {
    /// The `dml train` options this recipe stands for, as (option, value) without the leading
    /// `--`; options given on the command line win. The released code's numbers, from
    /// `Madhavaprasath23/Dale-Meets-Langevin`:
    /// - `losses.py` `new_loss`: residual `s_k^2 (x_k s - target)`, squared: weight `s_k^4` with
    ///   the network giving the Stein score `s` (SPEC 3.1);
    /// - `yamal_configs/NCSNDEEPER/mnist.yml` (the Fashion-MNIST and MNIST NCSNDeeper runs):
    ///   `training.batch_size 128`, `training.n_iters 300001`, `optim: Adam, lr 0.0001,
    ///   beta1 0.9, eps 1e-8, weight_decay 0`, `model.ema_rate 0.999`; the file sets no warm-up
    ///   and no gradient clipping, so neither is used;
    /// - `gbm_configs/NCSNDEEPER/fmnist.py`: `N = 1000`, `sigma = 0.8` constant,
    ///   `mu = sigma^2/2`, which are the engine's GBM defaults already.
    ///
    /// The loop's `k + 1` level offset is not part of the recipe; `--target released-offset`
    /// adds it.
    pub fn options(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Self::Engine => vec![],
            Self::Released => vec![
                ("weighting", "sk4"),
                ("parameterisation", "stein"),
                ("batch", "128"),
                ("steps", "300000"),
                ("lr", "0.0001"),
                ("warmup", "0"),
                ("clip", "0"),
                ("weight-decay", "0"),
                ("ema", "0.999"),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_released_recipe_has_the_released_numbers() {
        let options: Vec<String> = Recipe::Released
            .options()
            .iter()
            .map(|(flag, value)| format!("--{flag} {value}"))
            .collect();
        assert_eq!(
            options.join(" "),
            "--weighting sk4 --parameterisation stein --batch 128 --steps 300000 --lr 0.0001 \
             --warmup 0 --clip 0 --weight-decay 0 --ema 0.999"
        );
        assert!(Recipe::Engine.options().is_empty());
    }
}
