//! `dml train --recipe` and `--target`: a recipe fills the options not given, the options given
//! win, and the checkpoint records what was used (SPEC 3.1).
mod common;

use common::cli::{args_ref, fails, ok, s, shapes_run};
use dalemeetslangevin::checkpoint::Checkpoint;

fn train(dir: &std::path::Path, extra: &[&str]) -> Checkpoint {
    // Batch 2 is given on the command line by the quick run, so it wins over a recipe.
    let mut more = vec!["--steps", "2"];
    more.extend_from_slice(extra);
    ok(&args_ref(&shapes_run(dir, &more)));
    Checkpoint::load(dir.join("checkpoint.safetensors")).unwrap()
}

#[test]
fn the_released_recipe_fills_what_was_not_given() {
    let base = common::tempdir("recipe");
    let ckpt = train(
        &base.join("released"),
        &["--recipe", "released", "--target", "released-offset"],
    );
    for (key, value) in [
        ("loss.weighting", "sk4"),
        ("parameterisation", "stein"),
        ("loss.target", "released-offset"),
        ("train.lr", "0.0001"),
        ("train.warmup", "0"),
        ("train.clip", "0.0"),
        ("train.ema", "0.999"),
        // Given on the command line: the options win over the recipe.
        ("train.batch", "2"),
        ("train.steps", "2"),
    ] {
        assert_eq!(ckpt.meta(key).unwrap(), value, "{key}");
    }
    let engine = train(&base.join("engine"), &[]);
    assert_eq!(engine.meta("loss.target").unwrap(), "exact");
    assert_eq!(engine.meta("loss.weighting").unwrap(), "sk2");
    // A recipe is for new runs; a resumed run keeps its own settings.
    let e = fails(&[
        "train",
        "--resume",
        "--out",
        s(&base.join("engine")),
        "--recipe",
        "released",
    ]);
    assert!(e.contains("--recipe released"), "{e}");
}

#[test]
fn a_sampler_preset_sets_the_released_numbers_and_options_given_win() {
    let dir = common::tempdir("sampler-preset").join("run");
    train(&dir, &[]);
    let sample = |extra: &[&str]| {
        let png = dir.join("p.png");
        let mut args = vec![
            "sample",
            "--checkpoint",
            s(&dir),
            "--count",
            "2",
            "--batch",
            "2",
            "--out",
            s(&png),
        ];
        args.extend_from_slice(extra);
        ok(&args)
    };
    let out = sample(&["--sampler-preset", "fashion-asams-class"]);
    assert!(
        out.contains(
            "sampler asams, delta_s 0.00025929438 inner steps 3 chi 0.9995 kappa 1 terminal steps 0, start class-average"
        ),
        "{out}"
    );
    let out = sample(&["--sampler-preset", "cifar10-adls", "--inner-steps", "1"]);
    assert!(
        out.contains("sampler adls, delta_s 0.000114210525 inner steps 1 chi 0.9995")
            && out.contains("terminal steps 25"),
        "{out}"
    );
}
