//! Known answers of the profiling emulator (docs/DESIGN.md section 8): kernels whose memory
//! traffic, bank conflicts, divergence and FLOPs follow from their source
//! (kernels/profile_selftest.cu), and a small convolution whose FLOPs follow from its shape.
mod common;

use common::*;
use dalemeetslangevin::device::emu::EmuProfileStats;
use dalemeetslangevin::device::launch::{launch, KernelArg, LaunchGeometry};
use dalemeetslangevin::device::profile::{record, LaunchProfile};
use dalemeetslangevin::device::EmuSchedule;
use dalemeetslangevin::ops::conv::{conv2d, Conv2dCfg};
use dalemeetslangevin::ops::ConvPrecision;
use dalemeetslangevin::{Device, Tensor};

const SCHEDULES: [EmuSchedule; 2] = [EmuSchedule::Forward, EmuSchedule::Reverse];

/// The single launch `run` makes, profiled.
fn one_launch(run: impl FnOnce() -> dalemeetslangevin::Result<()>) -> EmuProfileStats {
    let ((), launches) = record(run).unwrap();
    assert_eq!(launches.len(), 1, "{launches:?}");
    let stats = launches[0].stats;
    assert_eq!(
        stats.unclassified_accesses, 0,
        "every access is global, shared or the thread's own: {stats:?}"
    );
    stats
}

fn load_efficiency(s: &EmuProfileStats) -> f64 {
    s.global_load_min_sectors as f64 / s.global_load_sectors as f64
}

fn store_efficiency(s: &EmuProfileStats) -> f64 {
    s.global_store_min_sectors as f64 / s.global_store_sectors as f64
}

#[test]
fn coalesced_copy_is_fully_efficient_and_computes_the_copy() {
    let mut rng = test_rng("profile_copy");
    // 1024: whole warps; 1000: the last warp has 8 live lanes, so its load and store diverge.
    for (n, divergent) in [(1024usize, 0u64), (1000, 2)] {
        for schedule in SCHEDULES {
            let dev = Device::Emu(schedule);
            let x = random_vec(&mut rng, n, -1.0, 1.0);
            let xt = Tensor::from_slice(&x, &[n], &dev).unwrap();
            let mut y = Tensor::uninit(&[n], &dev).unwrap();
            let s = one_launch(|| {
                launch(
                    &dev,
                    "profile_copy_f32",
                    LaunchGeometry::elementwise(n),
                    &mut [
                        KernelArg::In(xt.buffer()),
                        KernelArg::Out(y.buffer_mut()),
                        KernelArg::I32(n as i32),
                    ],
                )
            });
            assert_eq!(
                y.to_vec().unwrap(),
                x,
                "the profiled launch computes the copy"
            );
            let sectors = (4 * n as u64).div_ceil(32);
            assert_eq!(s.global_load_sectors, sectors, "{s:?}");
            assert_eq!(s.global_store_sectors, sectors, "{s:?}");
            assert_eq!(load_efficiency(&s), 1.0);
            assert_eq!(store_efficiency(&s), 1.0);
            assert_eq!(
                (s.dram_read_sectors, s.dram_write_sectors),
                (sectors, sectors)
            );
            assert_eq!(s.global_load_bytes, 4 * n as u64);
            assert_eq!(s.global_load_requests, n.div_ceil(32) as u64);
            assert_eq!(s.divergent_warp_accesses, divergent, "{s:?}");
            assert_eq!(s.shared_load_requests + s.shared_store_requests, 0);
        }
    }
}

#[test]
fn stride_32_reads_use_one_word_of_each_sector() {
    let n = 256;
    let stride = 32;
    let dev = Device::emu();
    let x = Tensor::from_vec(
        (0..n * stride).map(|i| i as f32).collect(),
        &[n * stride],
        &dev,
    )
    .unwrap();
    let mut y = Tensor::uninit(&[n], &dev).unwrap();
    let s = one_launch(|| {
        launch(
            &dev,
            "profile_strided_read_f32",
            LaunchGeometry::elementwise(n),
            &mut [
                KernelArg::In(x.buffer()),
                KernelArg::Out(y.buffer_mut()),
                KernelArg::I32(n as i32),
                KernelArg::I32(stride as i32),
            ],
        )
    });
    assert_eq!(s.global_load_sectors, n as u64, "{s:?}");
    assert_eq!(load_efficiency(&s), 1.0 / 8.0);
    assert_eq!(store_efficiency(&s), 1.0);
    let want: Vec<f32> = (0..n).map(|i| (i * stride) as f32).collect();
    assert_eq!(y.to_vec().unwrap(), want);
}

/// The transpose's counts, the same in both schedules.
fn transpose(padded: bool) -> EmuProfileStats {
    let [forward, reverse] = SCHEDULES.map(|schedule| transpose_on(Device::Emu(schedule), padded));
    assert_eq!(forward, reverse);
    forward
}

fn transpose_on(dev: Device, padded: bool) -> EmuProfileStats {
    let x = Tensor::from_vec((0..1024).map(|i| i as f32).collect(), &[1024], &dev).unwrap();
    let mut y = Tensor::uninit(&[1024], &dev).unwrap();
    let s = one_launch(|| {
        launch(
            &dev,
            "profile_transpose_f32",
            LaunchGeometry::new([1, 1, 1], [32, 32, 1], 0),
            &mut [
                KernelArg::In(x.buffer()),
                KernelArg::Out(y.buffer_mut()),
                KernelArg::I32(padded as i32),
            ],
        )
    });
    let want: Vec<f32> = (0..1024).map(|i| ((i % 32) * 32 + i / 32) as f32).collect();
    assert_eq!(y.to_vec().unwrap(), want);
    s
}

#[test]
fn unpadded_transpose_has_32_way_bank_conflicts_and_padded_none() {
    let s = transpose(false);
    // 32 warps: each stores one row (1 wavefront) and loads one column (32 wavefronts).
    assert_eq!(s.shared_max_ways, 32, "{s:?}");
    assert_eq!((s.shared_store_requests, s.shared_load_requests), (32, 32));
    assert_eq!(s.shared_wavefronts, 32 + 32 * 32);
    assert_eq!(s.shared_ideal_wavefronts, 64);
    assert_eq!(s.block_barriers, 1);

    let s = transpose(true);
    assert_eq!(s.shared_max_ways, 1, "{s:?}");
    assert_eq!(s.shared_wavefronts, 64);
    assert_eq!(s.shared_ideal_wavefronts, 64);
}

#[test]
fn a_warp_divergent_branch_is_counted() {
    let dev = Device::emu();
    let mut a = Tensor::zeros(&[64], &dev).unwrap();
    let mut b = Tensor::zeros(&[64], &dev).unwrap();
    let s = one_launch(|| {
        launch(
            &dev,
            "profile_divergent_f32",
            LaunchGeometry::new([1, 1, 1], [64, 1, 1], 0),
            &mut [
                KernelArg::Out(a.buffer_mut()),
                KernelArg::Out(b.buffer_mut()),
            ],
        )
    });
    // Two warps, each executing the two stores with half its lanes.
    assert_eq!(
        (s.warp_accesses, s.divergent_warp_accesses),
        (4, 4),
        "{s:?}"
    );
    let lower = |i: usize| i % 32 < 16;
    let want_a: Vec<f32> = (0..64).map(|i| if lower(i) { 1.0 } else { 0.0 }).collect();
    let want_b: Vec<f32> = (0..64).map(|i| if lower(i) { 0.0 } else { 2.0 }).collect();
    assert_eq!((a.to_vec().unwrap(), b.to_vec().unwrap()), (want_a, want_b));
    assert_eq!(s.global_store_requests, 4);
    assert_eq!(s.global_store_bytes, 64 * 4);
}

#[test]
fn a_wmma_tile_counts_2_m_n_k_tensor_flops() {
    let dev = Device::emu();
    let mut rng = test_rng("profile_wmma");
    let a = Tensor::from_slice(&random_vec(&mut rng, 128, -1.0, 1.0), &[128], &dev).unwrap();
    let b = Tensor::from_slice(&random_vec(&mut rng, 128, -1.0, 1.0), &[128], &dev).unwrap();
    let c = Tensor::from_slice(&random_vec(&mut rng, 256, -1.0, 1.0), &[256], &dev).unwrap();
    let mut d = Tensor::uninit(&[256], &dev).unwrap();
    let s = one_launch(|| {
        launch(
            &dev,
            "selftest_wmma_tf32_f32",
            LaunchGeometry::new([1, 1, 1], [32, 1, 1], 0),
            &mut [
                KernelArg::In(a.buffer()),
                KernelArg::In(b.buffer()),
                KernelArg::In(c.buffer()),
                KernelArg::Out(d.buffer_mut()),
                KernelArg::I32(32),
            ],
        )
    });
    assert_eq!(s.tensor_flops, 2 * 16 * 16 * 8, "{s:?}");
    assert_eq!(s.simt_flops, 0);
    // Fragment loads are one warp-level access per element a lane holds: 4 (a) + 4 (b) + 8 (c).
    assert!(s.shared_load_requests >= 16, "{s:?}");
}

/// The FLOPs of every launch of one convolution, (SIMT, tensor, of which bf16).
fn conv_flops(
    c_in: usize,
    c_out: usize,
    hw: usize,
    k: usize,
    precision: ConvPrecision,
) -> (u64, u64, u64) {
    let dev = Device::emu();
    let mut rng = test_rng("profile_conv");
    let x = Tensor::from_slice(
        &random_vec(&mut rng, c_in * hw * hw, -1.0, 1.0),
        &[1, c_in, hw, hw],
        &dev,
    )
    .unwrap();
    let w = Tensor::from_slice(
        &random_vec(&mut rng, c_out * c_in * k * k, -1.0, 1.0),
        &[c_out, c_in, k, k],
        &dev,
    )
    .unwrap();
    let cfg = Conv2dCfg::same(k, 1).with_precision(precision);
    let (_, launches) = record(|| conv2d(&x, &w, None, cfg)).unwrap();
    let total = |f: fn(&LaunchProfile) -> u64| launches.iter().map(f).sum::<u64>();
    (
        total(|l| l.stats.simt_flops),
        total(|l| l.stats.tensor_flops),
        total(|l| l.stats.bf16_tensor_flops),
    )
}

#[test]
fn conv_flops_match_2_cout_cin_taps_pixels() {
    // Shapes that fill the tiles (64x64; 64x128 for the channel-slice forward, c_in a multiple
    // of 32) and the K slices exactly: issued FLOPs are the formula's, at bf16's rate in bf16.
    let formula = |c_in: usize, c_out: usize, hw: usize, k: usize| {
        (2 * c_out * c_in * k * k * hw * hw) as u64
    };
    assert_eq!(
        conv_flops(16, 64, 8, 1, ConvPrecision::Fp32),
        (formula(16, 64, 8, 1), 0, 0)
    );
    assert_eq!(
        conv_flops(32, 64, 16, 1, ConvPrecision::Tf32),
        (0, formula(32, 64, 16, 1), 0)
    );
    assert_eq!(
        conv_flops(32, 64, 16, 1, ConvPrecision::Bf16),
        (0, formula(32, 64, 16, 1), formula(32, 64, 16, 1))
    );
    // A ragged shape issues whole tiles: at least the formula, padded up to the tile.
    let (simt, _, _) = conv_flops(3, 5, 7, 3, ConvPrecision::Fp32);
    let padded =
        2 * 64 * 64 * 16 * (7 * 7usize).div_ceil(64) as u64 * (3usize * 9).div_ceil(16) as u64;
    assert!(simt >= formula(3, 5, 7, 3), "{simt}");
    assert_eq!(simt, padded);
}

#[test]
fn the_roofline_names_the_limit_and_scales_small_grids() {
    use dalemeetslangevin::profile::roofline::{predict, Limit, H100_SXM, H200};
    // 1e6 sectors read once from DRAM (32 MB), over a grid that fills the GPU.
    let stats = EmuProfileStats {
        global_load_sectors: 1_000_000,
        global_load_min_sectors: 1_000_000,
        dram_read_sectors: 1_000_000,
        ..Default::default()
    };
    let full = LaunchGeometry::new([1000, 1, 1], [256, 1, 1], 0);
    let p = predict(&H200, &full, &stats);
    assert_eq!(p.limit, Limit::Dram);
    assert!((p.seconds - (3e-6 + 32e6 / 4.8e12)).abs() < 1e-12, "{p:?}");
    // The H100's slower HBM: the same bytes take longer.
    assert!(predict(&H100_SXM, &full, &stats).seconds > p.seconds);
    // One block gets 1/132 of every rate.
    let one = LaunchGeometry::new([1, 1, 1], [256, 1, 1], 0);
    let p1 = predict(&H200, &one, &stats);
    assert!(
        (p1.seconds - (3e-6 + 132.0 * 32e6 / 4.8e12)).abs() < 1e-9,
        "{p1:?}"
    );
    // Tensor FLOPs at the dense TF32 peak, or BF16's (twice it) for the bf16 part.
    let tensor = EmuProfileStats {
        tensor_flops: 3_000_000_000,
        bf16_tensor_flops: 1_000_000_000,
        ..Default::default()
    };
    let p = predict(&H200, &full, &tensor);
    assert_eq!(p.limit, Limit::Tensor);
    let want = 3e-6 + 2e9 / 494.7e12 + 1e9 / 989.4e12;
    assert!((p.seconds - want).abs() < 1e-12, "{p:?}");
    // Nothing to do: the launch overhead is the time.
    let idle = predict(&H200, &full, &EmuProfileStats::default());
    assert_eq!((idle.limit, idle.seconds), (Limit::Launch, 3e-6));
}

fn dml_profile(args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::cli::dml_exe())
        .arg("profile")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn dml_profile_writes_a_table_and_json_and_refuses_other_devices() {
    let dir = tempdir("profile_cli");
    let json_path = dir.join("profile.json");
    let out = dml_profile(&[
        "--items",
        "copy,add",
        "--elementwise-batch",
        "1",
        "--json",
        json_path.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("| copy/784 | 1 |"), "{stdout}");
    assert!(stdout.contains("not yet calibrated"), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(v["calibrated"], false);
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let copy = &items[0]["kernels"][0];
    assert_eq!(copy["kernel"], "copy_f32");
    assert_eq!(copy["load_efficiency"], 1.0);
    assert_eq!(copy["counts"]["global_load_bytes"], 4 * 784);
    assert!(items[1]["predicted_seconds"]["H200"].as_f64().unwrap() >= 3e-6);

    let out = std::process::Command::new(common::cli::dml_exe())
        .args(["--device", "cpu", "profile", "--items", "copy"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("emulator") && !stderr.contains("panicked"),
        "{stderr}"
    );
    let out = dml_profile(&["--items", "no_such_item"]);
    assert!(!out.status.success());
    let out = dml_profile(&["--batch", "0"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 1"));
}

#[test]
fn every_access_of_a_tiny_training_step_is_classified() {
    use dalemeetslangevin::bench::{select, BenchConfig};
    use dalemeetslangevin::profile::profile_item;
    // A training step launches nearly every kernel family (forward, backward, optimiser): each
    // of their loads and stores must be global, shared or the thread's own.
    let mut cfg = BenchConfig::defaults(&Device::emu());
    cfg.batch = 1;
    let items = select(&cfg, &["train_step/tiny".to_string()]).unwrap();
    let profile = profile_item(&items[0]).unwrap();
    assert!(profile.launches() > 500, "{}", profile.launches());
    for k in &profile.kernels {
        assert_eq!(
            k.stats.unclassified_accesses, 0,
            "{}: {:?}",
            k.kernel, k.stats
        );
        assert!(
            k.stats.warp_accesses > 0,
            "{} made no memory access",
            k.kernel
        );
    }
}
