//! DDPM++ end to end from the command line on a small synthetic colour set in CIFAR-10's binary
//! format (CI has no CIFAR-10): train the tiny preset (dropout masks and all), resume it, sample
//! with the per-channel fitted log-normal initialisation and CIFAR-10's 25 terminal steps, and
//! evaluate; the presets' refusals.
mod common;

use std::path::{Path, PathBuf};

use common::cli::{fails, ok, s};

/// A CIFAR-10 directory (`cifar-10-batches-bin`) of `per_file` records per training batch and
/// as many test records: class `c` is a square of its own colour on a darker background, with
/// noise, so the channels have different statistics.
fn synthetic_cifar(name: &str, per_file: usize) -> PathBuf {
    let root = common::tempdir(name);
    let dir = root.join("cifar-10-batches-bin");
    std::fs::create_dir(&dir).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 32) as u8
    };
    let mut write = |file: &str| {
        let mut bytes = Vec::new();
        for r in 0..per_file {
            let class = (r % 10) as u8;
            bytes.push(class);
            let colour = [40 + 20 * class, 200 - 15 * class, 90 + 10 * (class % 3)];
            for (c, &value) in colour.iter().enumerate() {
                for y in 0..32 {
                    for x in 0..32 {
                        let inside = (8..24).contains(&y) && (8..24).contains(&x);
                        let base = if inside { value } else { 20 + 10 * c as u8 };
                        bytes.push(base.saturating_add(noise()));
                    }
                }
            }
        }
        std::fs::write(dir.join(file), bytes).unwrap();
    };
    for i in 1..=5 {
        write(&format!("data_batch_{i}.bin"));
    }
    write("test_batch.bin");
    root
}

fn train_args<'a>(data: &'a Path, out: &'a Path, steps: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        s(data),
        "--preset",
        "ddpmpp_tiny",
        "--levels",
        "10",
        "--batch",
        "2",
        "--steps",
        steps,
        "--out",
        s(out),
    ]
}

#[test]
fn ddpmpp_tiny_trains_resumes_samples_and_evaluates_on_colour_images() {
    let data = synthetic_cifar("ddpmpp-cifar", 8);
    let run = common::tempdir("ddpmpp-run");
    let out = ok(&train_args(&data, &run, "2"));
    assert!(out.contains("ddpmpp_tiny c3 32x32 L10 nf8"), "{out}");
    let resumed = ok(&[train_args(&data, &run, "3"), vec!["--resume"]].concat());
    assert!(resumed.contains("done: 3 steps (1 this run"), "{resumed}");

    let png = run.join("samples.png");
    let ckpt = run.join("checkpoint.safetensors");
    let sampled = ok(&[
        "sample",
        "--checkpoint",
        s(&ckpt),
        "--count",
        "2",
        "--batch",
        "2",
        "--sampler-preset",
        "cifar10-adls",
        "--inner-steps",
        "1",
        "--out",
        s(&png),
    ]);
    assert!(
        sampled.contains("terminal steps 25") && sampled.contains("start lognormal"),
        "{sampled}"
    );
    assert!(png.is_file());

    let report = ok(&[
        "eval",
        "--checkpoint",
        s(&ckpt),
        "--count",
        "2",
        "--max-reference",
        "8",
        "--classifier-steps",
        "2",
        "--sampler-preset",
        "cifar10-adls",
        "--inner-steps",
        "1",
    ]);
    assert!(
        report.contains("Frechet distance in classifier features"),
        "{report}"
    );
}

#[test]
fn ddpmpp_presets_refuse_what_they_cannot_run() {
    let run = common::tempdir("ddpmpp-refusals");
    // The full preset halves the image three times: 28x28 does not divide by 8.
    let e = fails(&[
        "train",
        "--data",
        "shapes",
        "--preset",
        "ddpmpp",
        "--steps",
        "1",
        "--out",
        s(&run),
    ]);
    assert!(e.contains("ddpmpp") && e.contains("multiple of 8"), "{e}");
    // A resumed run cannot change its network.
    let first = common::tempdir("ddpmpp-switch");
    ok(&[
        "train",
        "--data",
        "shapes",
        "--preset",
        "ddpmpp_tiny",
        "--max-images",
        "8",
        "--levels",
        "5",
        "--batch",
        "2",
        "--steps",
        "1",
        "--out",
        s(&first),
    ]);
    let e = fails(&[
        "train",
        "--data",
        "shapes",
        "--preset",
        "tiny",
        "--max-images",
        "8",
        "--levels",
        "5",
        "--batch",
        "2",
        "--steps",
        "2",
        "--resume",
        "--out",
        s(&first),
    ]);
    assert!(e.contains("preset"), "{e}");
}
