//! scripts/gpu-proof up to the point where a GPU is needed: the pack step's file list, manifest
//! and size limit, with a fake cargo that reports fake executables (a real pack builds release
//! binaries, minutes here), then the run step on that pack, which must unpack it, stop before
//! anything that needs a GPU, say why, and leave its summary within the result-file limit.
mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::cli::s;

/// The most files the run step may leave in its output folder.
const MAX_RESULT_FILES: usize = 8;

/// The steps the run step performs on a GPU, each named in the summary.
const GPU_STEPS: [&str; 14] = [
    "machine",
    "tests",
    "bench torch (tf32 off)",
    "bench dml (cuda, fp32)",
    "bench torch (tf32 on)",
    "bench dml (cuda, tf32)",
    "bench torch (bf16)",
    "bench dml (cuda, bf16)",
    "train paper 200 steps",
    "ncu conv passes",
    "kernel times",
    "sample adls 1000 levels",
    "sample batch 16 (graphs)",
    "sample batch 16 (no graphs)",
];

fn script() -> PathBuf {
    common::source_dir().join("scripts/gpu-proof")
}

fn write_executable(path: &Path, body: &str) {
    fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// A fake `dml` (printing what `dml info` prints about kernels), a fake test executable, and a
/// fake cargo reporting them as `cargo build --message-format=json` and `cargo test --no-run`
/// would.
fn fake_build(dir: &Path, kernels: &str) -> PathBuf {
    let dml = dir.join("dml");
    let test = dir.join("conv-0123456789abcdef");
    write_executable(&dml, &format!("echo '  CUDA kernels: {kernels}'"));
    write_executable(
        &test,
        "echo \"devices=$DML_TEST_DEVICES required=$DML_REQUIRE_CUDA\"; echo 'test result: ok. 1 passed'",
    );
    let cargo = dir.join("cargo");
    let artifact = |kind: &str, name: &str, test: bool, exe: &Path| {
        format!(
            r#"{{"reason":"compiler-artifact","target":{{"kind":["{kind}"],"name":"{name}"}},"profile":{{"test":{test}}},"executable":"{}"}}"#,
            exe.display()
        )
    };
    write_executable(
        &cargo,
        &format!(
            "case \"$1\" in\n  build) echo '{}' ;;\n  test) echo '{}' ;;\nesac",
            artifact("bin", "dml", false, &dml),
            artifact("test", "conv", true, &test)
        ),
    );
    cargo
}

fn gpu_proof(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new("bash")
        .arg(script())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("bash runs scripts/gpu-proof")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn pack(dir: &Path, kernels: &str, limit: Option<&str>) -> (PathBuf, Output) {
    let cargo = fake_build(dir, kernels);
    let pack = dir.join("pack");
    let mut env = vec![("GPU_PROOF_CARGO", s(&cargo))];
    if let Some(limit) = limit {
        env.push(("GPU_PROOF_LIMIT_BYTES", limit));
    }
    let out = gpu_proof(&["pack", "--pack", s(&pack)], &env);
    (pack, out)
}

#[test]
fn pack_holds_dml_the_tests_and_the_torch_benchmark_with_a_manifest() {
    let dir = common::tempdir("gpu_proof_pack");
    let (pack, out) = pack(&dir, "compiled (9 modules)", None);
    assert!(out.status.success(), "pack failed:\n{}", text(&out));
    for file in ["payload.tar.xz", "manifest.txt", "gpu-proof"] {
        assert!(pack.join(file).is_file(), "{file} missing from the pack");
    }
    let manifest = fs::read_to_string(pack.join("manifest.txt")).unwrap();
    for file in [
        "./bin/dml",
        "./tests/conv",
        "./reference/bench_torch.py",
        "./reference/profile_torch.py",
    ] {
        assert!(manifest.contains(file), "{file} not in:\n{manifest}");
    }
    // Every reference module bench_torch.py imports (`import name  # noqa: E402`) travels with it.
    let bench_torch = fs::read_to_string(common::source_dir().join("reference/bench_torch.py"));
    let modules: Vec<String> = bench_torch
        .unwrap()
        .lines()
        .filter(|l| l.contains("# noqa: E402"))
        .filter_map(|l| {
            l.strip_prefix("import ")?
                .split_whitespace()
                .next()
                .map(str::to_string)
        })
        .collect();
    assert!(
        modules.len() >= 3,
        "bench_torch.py's local imports: {modules:?}"
    );
    for module in modules {
        let file = format!("./reference/{module}.py");
        assert!(manifest.contains(&file), "{file} not in:\n{manifest}");
    }
    assert!(manifest.contains("bytes (limit 58720256)"), "{manifest}");
}

#[test]
fn pack_refuses_a_dml_built_without_kernels() {
    let dir = common::tempdir("gpu_proof_no_kernels");
    let (_, out) = pack(&dir, "not compiled (nvcc was not found)", None);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("built without CUDA kernels: set NVCC"),
        "{}",
        text(&out)
    );
}

#[test]
fn pack_refuses_to_exceed_its_size_limit() {
    let dir = common::tempdir("gpu_proof_too_big");
    let (pack, out) = pack(&dir, "compiled (9 modules)", Some("1000"));
    assert!(!out.status.success());
    assert!(
        text(&out).contains("over the limit of 1000"),
        "{}",
        text(&out)
    );
    assert!(!pack.exists(), "an oversized pack was left behind");
}

#[test]
fn run_without_a_gpu_stops_naming_what_needs_one() {
    let dir = common::tempdir("gpu_proof_run");
    let (pack, out) = pack(&dir, "compiled (9 modules)", None);
    assert!(out.status.success(), "pack failed:\n{}", text(&out));
    let results = dir.join("out");
    // A missing nvidia-smi is how a machine without a GPU looks, even on one that has a GPU.
    let run = gpu_proof(
        &["run", "--pack", s(&pack), "--out", s(&results)],
        &[("NVIDIA_SMI", "/nonexistent/nvidia-smi")],
    );
    assert_eq!(run.status.code(), Some(3), "{}", text(&run));
    assert!(
        text(&run).contains("no GPU here (/nonexistent/nvidia-smi not found"),
        "{}",
        text(&run)
    );
    let summary = fs::read_to_string(results.join("summary.txt")).expect("a summary");
    for step in GPU_STEPS {
        let row = summary
            .lines()
            .find(|l| l.starts_with(step))
            .unwrap_or_else(|| panic!("no row for {step}:\n{summary}"));
        assert!(
            row.contains("skipped") && row.contains("needs a GPU"),
            "{row}"
        );
    }
    let files = fs::read_dir(&results).unwrap().count();
    assert!(files <= MAX_RESULT_FILES, "{files} result files");
}

/// A machine whose nvidia-smi lists a GPU, for the steps that need no more than that.
fn fake_gpu(dir: &Path) -> PathBuf {
    let smi = dir.join("nvidia-smi");
    write_executable(&smi, "echo 'GPU 0: Fake GPU (UUID: GPU-0)'");
    smi
}

#[test]
fn run_on_a_gpu_runs_only_the_steps_and_tests_named() {
    let dir = common::tempdir("gpu_proof_steps");
    let (pack, out) = pack(&dir, "compiled (9 modules)", None);
    assert!(out.status.success(), "pack failed:\n{}", text(&out));
    let smi = fake_gpu(&dir);
    let run_with = |tests: &str, results: &Path| {
        let args = [
            "run",
            "--pack",
            s(&pack),
            "--out",
            s(results),
            "--steps",
            "tests",
        ];
        gpu_proof(
            &[&args[..], &["--tests", tests]].concat(),
            &[("NVIDIA_SMI", s(&smi))],
        )
    };

    let results = dir.join("conv");
    let run = run_with("conv", &results);
    assert!(run.status.success(), "{}", text(&run));
    let summary = fs::read_to_string(results.join("summary.txt")).unwrap();
    assert!(summary.contains("test conv"), "{summary}");
    assert!(
        !summary.contains("bench") && !summary.contains("train"),
        "{summary}"
    );
    // The kernel tests run on the GPU alone, and must find it.
    let log = fs::read_to_string(results.join("tests.log")).unwrap();
    assert!(log.contains("devices=cuda required=1"), "{log}");

    let results = dir.join("other");
    let run = run_with("norm", &results);
    assert!(run.status.success(), "{}", text(&run));
    let summary = fs::read_to_string(results.join("summary.txt")).unwrap();
    assert!(!summary.contains("test conv"), "{summary}");
}

#[test]
fn run_refuses_an_unknown_step() {
    let dir = common::tempdir("gpu_proof_bad_step");
    let (pack, _) = pack(&dir, "compiled (9 modules)", None);
    let run = gpu_proof(
        &[
            "run",
            "--pack",
            s(&pack),
            "--out",
            s(&dir.join("out")),
            "--steps",
            "tests bogus",
        ],
        &[("NVIDIA_SMI", s(&fake_gpu(&dir)))],
    );
    assert_eq!(run.status.code(), Some(2), "{}", text(&run));
    assert!(
        text(&run).contains("unknown step 'bogus'"),
        "{}",
        text(&run)
    );
}

#[test]
fn run_without_a_pack_says_how_to_make_one() {
    let dir = common::tempdir("gpu_proof_no_pack");
    let run = gpu_proof(
        &[
            "run",
            "--pack",
            s(&dir.join("missing")),
            "--out",
            s(&dir.join("out")),
        ],
        &[],
    );
    assert!(!run.status.success());
    assert!(
        text(&run).contains("run scripts/gpu-proof pack on the build machine first"),
        "{}",
        text(&run)
    );
}
