//! `dml bench`: item keys and byte/FLOP counts agree with PyTorch's results for the same
//! keys (reference/BENCH.md), the network constants are BENCH.md's, memory is measured, and the
//! command line lists, runs, and refuses what it should.
mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use dalemeetslangevin::bench::{self, BenchConfig, NetworkTrace, TorchResults};
use dalemeetslangevin::nn::inception;
use dalemeetslangevin::nn::ncsn::NcsnConfig;
use dalemeetslangevin::nn::Preset;
use dalemeetslangevin::{Device, Tensor};

fn torch_cpu() -> TorchResults {
    TorchResults::load(Path::new("benches/torch_cpu.json")).expect("benches/torch_cpu.json")
}

fn dml(args: &[&str]) -> Output {
    Command::new(common::cli::dml_exe())
        .args(args)
        .output()
        .expect("run dml")
}

#[test]
fn counts_match_pytorch_for_every_key() {
    let items = bench::select(&BenchConfig::defaults(&Device::Cpu), &[]).unwrap();
    let ours: HashMap<&str, (f64, f64)> = items
        .iter()
        .map(|i| (i.key.as_str(), (i.bytes, i.flops)))
        .collect();
    let torch = torch_cpu();
    assert!(!torch.items.is_empty());
    for (key, theirs) in &torch.items {
        let &(bytes, flops) = ours
            .get(key.as_str())
            .unwrap_or_else(|| panic!("PyTorch key {key} has no item here"));
        assert_eq!((bytes, flops), (theirs.bytes, theirs.flops), "{key}");
    }
    // Every item but the plain element-wise ones has a PyTorch counterpart.
    let elementwise = ["copy/", "exp/", "add/", "sum/", "philox_normals/"];
    for key in ours.keys() {
        if !elementwise.iter().any(|e| key.starts_with(e)) {
            assert!(
                torch.get(key).is_some(),
                "{key} missing from PyTorch's results"
            );
        }
    }
}

/// BENCH.md's "Network constants" tables: NCSN's 75 conv / 71 CIN++ calls, DDPM++'s convolutions.
#[test]
fn network_trace_gives_bench_md_constants() {
    for (preset, flops, p, p0, r) in [
        (
            Preset::Paper,
            3_786_280_960.0,
            29_117_697,
            7_421_697,
            21_696,
        ),
        (Preset::Tiny, 59_358_208.0, 143_505, 116_385, 2_712),
    ] {
        let t = NetworkTrace::of(preset).unwrap();
        assert_eq!(t.convs.len(), 75, "{preset}");
        assert_eq!(t.norms.len(), 71, "{preset}");
        assert_eq!(t.conv_flops_per_image(), flops, "{preset}");
        assert_eq!(t.params(), p, "{preset}");
        assert_eq!(t.params_without_embeddings, p0, "{preset}");
        assert_eq!(t.embedding_row_width, r, "{preset}");
        let cfg = NcsnConfig::new(preset, 1, 28, preset.default_levels()).unwrap();
        assert_eq!(t.params(), cfg.parameter_count(), "{preset}");
    }
    let paper = NetworkTrace::of(Preset::Paper).unwrap();
    assert_eq!(paper.distinct_convs().len(), 10);
    assert_eq!(paper.distinct_norms().len(), 3);
    // DDPM++ on 3x32x32: no norm embeddings.
    for (preset, flops, calls, p) in [
        (Preset::Ddpmpp, 35_254_697_984.0, 197, 106_632_579),
        (Preset::DdpmppTiny, 36_241_408.0, 29, 48_275),
    ] {
        let t = NetworkTrace::of(preset).unwrap();
        assert_eq!(t.image, [3, 32, 32], "{preset}");
        assert_eq!(t.convs.len(), calls, "{preset}");
        assert!(t.norms.is_empty(), "{preset}");
        assert_eq!(t.conv_flops_per_image(), flops, "{preset}");
        assert_eq!(
            (t.params(), t.params_without_embeddings),
            (p, p),
            "{preset}"
        );
    }
}

/// BENCH.md's FID Inception constants: conv FLOPs per image at 299x299 (torchvision's 5.71 G
/// multiply-adds) and the folded parameters the forward reads.
#[test]
fn inception_counts_are_bench_md_constants() {
    assert_eq!(inception::conv_flops_per_image(), 11_422_336_192.0);
    assert_eq!(inception::folded_parameter_count(), 21_768_352);
    let weights: usize = inception::expected_tensors()
        .iter()
        .filter(|(name, _)| name.ends_with(".conv.weight"))
        .map(|(_, shape)| shape.iter().product::<usize>())
        .sum();
    assert!(weights < 21_768_352 && 21_768_352 - weights < 20_000);
    let mut cfg = BenchConfig::defaults(&Device::Cpu);
    cfg.inception_batch = 3;
    let items = bench::select(&cfg, &["inception".to_string()]).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].key, "inception_features/1x28x28/b3");
    assert_eq!(items[0].images, Some(3));
    assert!(items[0].reports_memory);
    assert_eq!(items[0].flops, 3.0 * 11_422_336_192.0);
    assert_eq!(items[0].bytes, 4.0 * (21_768_352 + 3 * (784 + 2048)) as f64);
    // `dml profile` leaves it out unless named (over 10 minutes on the profiler).
    let families = bench::families();
    let family = families.iter().find(|f| f.name == "inception").unwrap();
    assert!(!family.profiled_by_default);
}

#[test]
fn tensor_memory_counts_a_training_step() {
    // A tensor made during the call is seen by the high-water mark.
    let mut alloc = || Tensor::zeros(&[1 << 20], &Device::Cpu).map(drop);
    let m = bench::peak_memory(&Device::Cpu, &mut alloc).unwrap();
    assert!(m.step_bytes >= 4 << 20, "{m:?}");

    // A training step holds at least parameters, gradients and both AdamW moments.
    let cfg = BenchConfig::defaults(&Device::Cpu);
    let items = bench::select(&cfg, &["train_step/tiny".to_string()]).unwrap();
    assert_eq!(items.len(), 1);
    assert!(items[0].reports_memory);
    let measured = bench::measure(&items[0], &Device::Cpu, Duration::ZERO).unwrap();
    let params = NetworkTrace::of(Preset::Tiny).unwrap().params();
    let memory = measured.memory.expect("train_step reports memory");
    assert!(memory.peak_bytes >= 4 * 4 * params, "{memory:?}");
    assert!(memory.step_bytes > 0, "{memory:?}");
}

#[test]
fn quick_run_prints_a_table_with_the_chosen_keys() {
    let json = std::env::temp_dir().join(format!("dml-bench-{}.json", std::process::id()));
    let out = dml(&[
        "bench",
        "--quick",
        "--items",
        "gbm_dale_step,mdsm_loss",
        "--device",
        "cpu",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("| item | time | GB/s |"), "{stdout}");
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| ---"))
        .collect();
    // Header and the two items, nothing else.
    assert_eq!(rows.len(), 3, "{stdout}");
    assert!(rows[1].starts_with("| gbm_dale_step/784000 |"), "{stdout}");
    assert!(rows[2].starts_with("| mdsm_loss/784000 |"), "{stdout}");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).unwrap();
    let time = written["items"]["mdsm_loss/784000"]["time_s"]
        .as_f64()
        .unwrap();
    assert!(time > 0.0);
    // benches/torch_cpu.json is read by default: the ratio is our time over PyTorch's.
    let ratio = written["items"]["mdsm_loss/784000"]["torch_eager_ratio"]
        .as_f64()
        .unwrap();
    let theirs = torch_cpu()
        .get("mdsm_loss/784000")
        .unwrap()
        .eager_s
        .unwrap();
    assert!((ratio - time / theirs).abs() <= 1e-9 * ratio);
}

/// The Inception item on the cpu at batch 1 (6 forwards, a few seconds): its row, the images/s
/// table under the main one, and images/s in the JSON.
#[test]
fn inception_features_run_and_report_images_per_second() {
    let json = std::env::temp_dir().join(format!("dml-bench-inc-{}.json", std::process::id()));
    let out = dml(&[
        "bench",
        "--quick",
        "--items",
        "inception",
        "--inception-batch",
        "1",
        "--device",
        "cpu",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = "inception_features/1x28x28/b1";
    assert!(stdout.contains(&format!("| {key} | ")), "{stdout}");
    assert!(
        stdout.contains("| item | images per call | images/s | torch eager images/s |"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("| {key} | 1 | ")), "{stdout}");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).unwrap();
    let item = &written["items"][key];
    let time = item["time_s"].as_f64().unwrap();
    assert_eq!(item["images"].as_u64(), Some(1));
    let per_s = item["images_per_s"].as_f64().unwrap();
    assert!((per_s * time - 1.0).abs() < 1e-9, "{item}");
    // The network's parameters are live during the call.
    let peak = item["memory_peak_bytes"].as_f64().unwrap();
    assert!(peak >= 4.0 * 21_768_352.0, "{item}");
    assert_eq!(written["settings"]["inception_batch"].as_u64(), Some(1));
}

#[test]
fn list_names_every_key() {
    let out = dml(&["bench", "--list", "--device", "cpu"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let listed: Vec<&str> = stdout
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    let expected: Vec<String> = bench::select(&BenchConfig::defaults(&Device::Cpu), &[])
        .unwrap()
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(listed, expected);
    for key in torch_cpu().items.keys() {
        assert!(listed.contains(&key.as_str()), "{key} not listed");
    }
}

#[test]
fn help_names_every_family() {
    for command in ["bench", "profile"] {
        let out = dml(&[command, "--help"]);
        let help = String::from_utf8_lossy(&out.stdout).replace(char::is_whitespace, "");
        for family in bench::families() {
            assert!(
                help.contains(&format!("{},", family.name))
                    || help.contains(&format!("{})", family.name)),
                "`dml {command} --help` does not name the family {}",
                family.name
            );
        }
    }
}

#[test]
fn unknown_item_is_an_error_naming_it() {
    let out = dml(&[
        "bench",
        "--list",
        "--items",
        "conv_fwd,nonsense",
        "--device",
        "cpu",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no item matches 'nonsense'"), "{stderr}");
}

#[test]
fn emulator_is_refused() {
    let out = dml(&["bench", "--quick", "--items", "gbm", "--device", "emu"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the emulator is for correctness"),
        "{stderr}"
    );
}

/// A family's name selects that family alone, though `train` and `sampler` are also prefixes of
/// DDPM++'s keys: `dml profile` names its default families, and must not pick up the full
/// DDPM++ (hours on the profiler).
#[test]
fn family_names_select_their_family_only() {
    let cfg = BenchConfig::defaults(&Device::Cpu);
    let keys = |wanted: &[&str]| -> Vec<String> {
        let wanted: Vec<String> = wanted.iter().map(|w| w.to_string()).collect();
        bench::select(&cfg, &wanted)
            .unwrap()
            .into_iter()
            .map(|i| i.key)
            .collect()
    };
    let ncsn = keys(&["train", "sampler"]);
    assert_eq!(ncsn.len(), 4, "{ncsn:?}");
    assert!(ncsn.iter().all(|k| !k.contains("ddpmpp")), "{ncsn:?}");
    let ddpmpp = keys(&["ddpmpp"]);
    assert_eq!(ddpmpp.len(), 4, "{ddpmpp:?}");
    assert!(ddpmpp.iter().all(|k| k.contains("/ddpmpp")), "{ddpmpp:?}");
    // A key prefix still reaches every family it names.
    assert_eq!(keys(&["train_step"]).len(), 4);
    assert_eq!(keys(&["sampler_step/ddpmpp_tiny"]).len(), 1);
}
