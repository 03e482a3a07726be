//! Running the `dml` binary from a test: its output, success or a clear error (never a panic),
//! and small fake datasets to point it at.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `dml` binary under test: `DML_BIN` when set, else the one cargo built with the tests.
/// scripts/gpu-proof sets it, since a test executable run on another machine (a GPU machine
/// without Rust) carries this machine's path to the binary.
pub fn dml_exe() -> PathBuf {
    std::env::var_os("DML_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_dml")))
}

/// `dml --device cpu ARGS`, run to completion.
pub fn dml(args: &[&str]) -> Output {
    Command::new(dml_exe())
        .arg("--device")
        .arg("cpu")
        .args(args)
        .output()
        .expect("the dml binary runs")
}

/// Runs a command that must succeed and returns its stdout and stderr.
pub fn ok(args: &[&str]) -> String {
    let out = dml(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "dml {args:?} failed:\n{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned() + &stderr
}

/// Runs a command that must fail and returns its error message.
pub fn fails(args: &[&str]) -> String {
    let out = dml(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "dml {args:?} succeeded, expected an error"
    );
    assert!(
        !stderr.contains("panicked"),
        "dml {args:?} panicked:\n{stderr}"
    );
    assert!(
        stderr.contains("error:"),
        "dml {args:?}: no error line:\n{stderr}"
    );
    stderr
}

/// A run directory `name` (under the test temp dir) holding the tiny preset trained on the built-in
/// shapes: 16 images, batch 2, `levels` levels, `steps` steps.
pub fn train_tiny_run(name: &str, levels: u32, steps: u32) -> PathBuf {
    train_tiny_run_with(name, levels, steps, &[])
}

/// [`train_tiny_run`] with `extra` training options (e.g. `--diffusion additive`).
pub fn train_tiny_run_with(name: &str, levels: u32, steps: u32, extra: &[&str]) -> PathBuf {
    let dir = super::tempdir(name);
    let (levels, steps) = (levels.to_string(), steps.to_string());
    let mut args = vec![
        "train",
        "--data",
        "shapes",
        "--preset",
        "tiny",
        "--max-images",
        "16",
        "--levels",
        &levels,
        "--batch",
        "2",
        "--steps",
        &steps,
        "--out",
        s(&dir),
    ];
    args.extend_from_slice(extra);
    ok(&args);
    dir
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A directory with Fashion-MNIST-style IDX files of `n` images of `side` x `side`, the images
/// file cut to `keep` bytes when given.
pub fn fake_idx_dir(name: &str, n: u32, side: u32, keep: Option<usize>) -> PathBuf {
    let dir = super::tempdir(name);
    let mut images = vec![0, 0, 8, 3];
    for d in [n, side, side] {
        images.extend(d.to_be_bytes());
    }
    images.extend((0..n * side * side).map(|i| (i % 251) as u8));
    if let Some(k) = keep {
        images.truncate(k);
    }
    let mut labels = vec![0, 0, 8, 1];
    labels.extend(n.to_be_bytes());
    labels.extend((0..n).map(|i| (i % 10) as u8));
    std::fs::write(dir.join("train-images-idx3-ubyte"), images).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), labels).unwrap();
    dir
}

/// `train` arguments for a quick run on the built-in data into `dir`: the tiny network, 10
/// levels, batch 2, the first 64 images, then `extra`.
pub fn shapes_run(dir: &Path, extra: &[&str]) -> Vec<String> {
    let base = [
        "train",
        "--data",
        "shapes",
        "--max-images",
        "64",
        "--levels",
        "10",
        "--batch",
        "2",
        "--out",
        s(dir),
    ];
    base.iter().chain(extra).map(|a| a.to_string()).collect()
}

/// Borrowed views of owned arguments, for [`ok`] and [`fails`].
pub fn args_ref(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}
