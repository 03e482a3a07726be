//! The emulator's own tests (docs/DESIGN.md section 2): barriers, shared memory, warp shuffles, and the
//! two bug classes it must expose: a barrier not every thread reaches, and a race.
mod common;

use common::*;
use dalemeetslangevin::device::launch::{launch, KernelArg, LaunchGeometry};
use dalemeetslangevin::device::EmuSchedule;
use dalemeetslangevin::{Device, Error, Tensor};

const EMU: Device = Device::Emu(EmuSchedule::Forward);
const EMU_REVERSE: Device = Device::Emu(EmuSchedule::Reverse);

#[test]
fn block_reduction_with_barriers() {
    let mut rng = test_rng("block_sum");
    for &(n, block) in &[(1000usize, 256u32), (64, 64), (5000, 1024), (33, 32)] {
        let x = random_vec(&mut rng, n, -1.0, 1.0);
        let blocks = n.div_ceil(block as usize);
        for dev in [EMU, EMU_REVERSE] {
            let xt = Tensor::from_slice(&x, &[n], &dev).unwrap();
            let mut out = Tensor::uninit(&[blocks], &dev).unwrap();
            let g = LaunchGeometry::new([blocks as u32, 1, 1], [block, 1, 1], 0);
            launch(
                &dev,
                "selftest_block_sum_f32",
                g,
                &mut [
                    KernelArg::In(xt.buffer()),
                    KernelArg::Out(out.buffer_mut()),
                    KernelArg::I32(n as i32),
                ],
            )
            .unwrap();
            let want: Vec<f32> = x
                .chunks(block as usize)
                .map(|c| c.iter().map(|&v| v as f64).sum::<f64>() as f32)
                .collect();
            assert_close(
                &format!("block sums n={n} block={block} on {dev}"),
                &out.to_vec().unwrap(),
                &want,
                1e-5,
                1e-5,
            );
        }
    }
}

#[test]
fn shared_memory_transpose() {
    let mut rng = test_rng("transpose");
    for &(rows, cols) in &[(1usize, 1usize), (32, 32), (45, 70), (100, 3)] {
        let x = random_vec(&mut rng, rows * cols, -1.0, 1.0);
        let mut want = vec![0.0; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                want[c * rows + r] = x[r * cols + c];
            }
        }
        for dev in [EMU, EMU_REVERSE] {
            let xt = Tensor::from_slice(&x, &[rows, cols], &dev).unwrap();
            let mut out = Tensor::uninit(&[cols, rows], &dev).unwrap();
            let g = LaunchGeometry::new(
                [cols.div_ceil(32) as u32, rows.div_ceil(32) as u32, 1],
                [32, 8, 1],
                32 * 33 * 4,
            );
            launch(
                &dev,
                "selftest_transpose_f32",
                g,
                &mut [
                    KernelArg::In(xt.buffer()),
                    KernelArg::Out(out.buffer_mut()),
                    KernelArg::I32(rows as i32),
                    KernelArg::I32(cols as i32),
                ],
            )
            .unwrap();
            assert_eq!(
                out.to_vec().unwrap(),
                want,
                "transpose {rows}x{cols} on {dev}"
            );
        }
    }
}

#[test]
fn warp_shuffle_reductions() {
    let mut rng = test_rng("warp_sum");
    let n = 256;
    let x = random_vec(&mut rng, n, -1.0, 1.0);
    for dev in [EMU, EMU_REVERSE] {
        let xt = Tensor::from_slice(&x, &[n], &dev).unwrap();
        let mut out = Tensor::uninit(&[n / 32], &dev).unwrap();
        let mut all = Tensor::uninit(&[n], &dev).unwrap();
        let g = LaunchGeometry::new([2, 1, 1], [128, 1, 1], 0);
        launch(
            &dev,
            "selftest_warp_sum_f32",
            g,
            &mut [
                KernelArg::In(xt.buffer()),
                KernelArg::Out(out.buffer_mut()),
                KernelArg::Out(all.buffer_mut()),
                KernelArg::I32(n as i32),
            ],
        )
        .unwrap();
        let sums: Vec<f32> = x.chunks(32).map(|c| c.iter().sum()).collect();
        assert_close(
            &format!("warp sums on {dev}"),
            &out.to_vec().unwrap(),
            &sums,
            1e-5,
            1e-5,
        );
        let every: Vec<f32> = (0..n).map(|i| sums[i / 32]).collect();
        assert_close(
            &format!("butterfly on {dev}"),
            &all.to_vec().unwrap(),
            &every,
            1e-5,
            1e-5,
        );
    }
}

#[test]
fn divergent_barrier_is_reported() {
    let mut out = Tensor::uninit(&[64], &EMU).unwrap();
    let g = LaunchGeometry::new([1, 1, 1], [64, 1, 1], 0);
    let err = launch(
        &EMU,
        "selftest_divergent_barrier_f32",
        g,
        &mut [KernelArg::Out(out.buffer_mut()), KernelArg::I32(40)],
    )
    .unwrap_err();
    match &err {
        Error::Emulator { kernel, message } => {
            assert_eq!(kernel, "selftest_divergent_barrier_f32");
            assert!(message.contains("divergent __syncthreads()"), "{message}");
            assert!(message.contains("40 of 64 threads"), "{message}");
        }
        other => panic!("expected an emulator error, got {other}"),
    }
    // All threads active: the same kernel is fine.
    launch(
        &EMU,
        "selftest_divergent_barrier_f32",
        g,
        &mut [KernelArg::Out(out.buffer_mut()), KernelArg::I32(64)],
    )
    .unwrap();
    assert!(out.to_vec().unwrap().iter().all(|&v| v == 2.0));
}

#[test]
fn divergent_shuffle_is_reported() {
    let mut out = Tensor::uninit(&[32], &EMU).unwrap();
    let g = LaunchGeometry::new([1, 1, 1], [32, 1, 1], 0);
    let err = launch(
        &EMU,
        "selftest_divergent_shuffle_f32",
        g,
        &mut [KernelArg::Out(out.buffer_mut())],
    )
    .unwrap_err();
    assert!(err.to_string().contains("had exited"), "{err}");
}

/// Runs the neighbour kernel in both schedules; returns whether the outputs differ.
fn neighbour_race_shows(with_barrier: bool) -> bool {
    let n = 256;
    let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let run = |dev: &Device| {
        let xt = Tensor::from_slice(&x, &[n], dev).unwrap();
        let mut out = Tensor::uninit(&[n], dev).unwrap();
        let g = LaunchGeometry::new([1, 1, 1], [n as u32, 1, 1], 0);
        launch(
            dev,
            "selftest_neighbour_f32",
            g,
            &mut [
                KernelArg::In(xt.buffer()),
                KernelArg::Out(out.buffer_mut()),
                KernelArg::I32(with_barrier as i32),
            ],
        )
        .unwrap();
        out.to_vec().unwrap()
    };
    let forward = run(&EMU);
    let reverse = run(&EMU_REVERSE);
    if with_barrier {
        let want: Vec<f32> = (0..n).map(|i| ((i + 1) % n) as f32).collect();
        assert_eq!(forward, want);
    }
    forward
        .iter()
        .zip(&reverse)
        .any(|(a, b)| a.to_bits() != b.to_bits())
}

#[test]
fn race_is_caught_by_schedule_comparison() {
    assert!(
        neighbour_race_shows(false),
        "the missing barrier went unnoticed"
    );
    assert!(
        !neighbour_race_shows(true),
        "a correct kernel differed between schedules"
    );
}

/// The cp.async self-test (kernels/emu_selftest.cu) in one schedule, with or without its wait.
fn async_copy_selftest(dev: &Device, wait: bool) -> Vec<f32> {
    let n = 64;
    let x: Vec<f32> = (0..5 * n).map(|i| i as f32 + 0.5).collect();
    let xt = Tensor::from_slice(&x, &[5 * n], dev).unwrap();
    let mut out = Tensor::uninit(&[5 * n], dev).unwrap();
    let shared = (5 * n * std::mem::size_of::<f32>()) as u32;
    let g = LaunchGeometry::new([1, 1, 1], [n as u32, 1, 1], shared);
    launch(
        dev,
        "selftest_async_copy_f32",
        g,
        &mut [
            KernelArg::In(xt.buffer()),
            KernelArg::Out(out.buffer_mut()),
            KernelArg::I32(wait as i32),
        ],
    )
    .unwrap();
    out.to_vec().unwrap()
}

#[test]
fn async_copies_land_by_their_wait_and_zero_fill() {
    let n = 64;
    // Thread t's copies are zero-filled where t % 3 == 2; each thread reads its neighbour's.
    let copied = |t: usize, v: f32| if t % 3 == 2 { 0.0 } else { v };
    let mut want = vec![0.0; 5 * n];
    for t in 0..n {
        let next = (t + 1) % n;
        for i in 0..4 {
            want[4 * t + i] = copied(next, (4 * next + i) as f32 + 0.5);
        }
        want[4 * n + t] = copied(next, (4 * n + next) as f32 + 0.5);
    }
    for dev in kernel_devices("async_copies_land_by_their_wait_and_zero_fill") {
        assert_eq!(async_copy_selftest(&dev, true), want, "{dev}");
    }
    // Without the wait, the forward schedule's copies land at issue and the result looks
    // right; the reverse schedule's land only at a wait, so the reads find the poison of
    // never-written shared memory.
    assert_eq!(async_copy_selftest(&EMU, false), want);
    let early = async_copy_selftest(&EMU_REVERSE, false);
    assert!(
        early.iter().all(|v| v.is_nan()),
        "reads before the wait saw landed copies: {early:?}"
    );
}

#[test]
fn bad_launches_are_errors() {
    let mut out = Tensor::uninit(&[4], &EMU).unwrap();
    let g = LaunchGeometry::new([1, 1, 1], [2048, 1, 1], 0);
    let err = launch(
        &EMU,
        "fill_f32",
        g,
        &mut [
            KernelArg::Out(out.buffer_mut()),
            KernelArg::F32(0.0),
            KernelArg::U64(4),
        ],
    )
    .unwrap_err();
    assert!(err.to_string().contains("1024 threads"), "{err}");
    let err = launch(&EMU, "no_such_kernel", g, &mut []).unwrap_err();
    assert!(matches!(err, Error::UnknownKernel(_)));
}

/// One warp of a wmma self-test kernel (kernels/emu_selftest.cu) of depth `k`: a (16 x k,
/// row-major) times b (k x 16 column-major, so b[n][k]) plus c (16x16, row-major), d written
/// column-major; lanes at or past `active` skip the matrix operations.
fn wmma_selftest(
    dev: &Device,
    kernel: &str,
    k: usize,
    (a, b, c): (&[f32], &[f32], &[f32]),
    active: i32,
) -> Result<Vec<f32>, Error> {
    let (at, bt, ct) = (
        Tensor::from_slice(a, &[16, k], dev)?,
        Tensor::from_slice(b, &[16, k], dev)?,
        Tensor::from_slice(c, &[16, 16], dev)?,
    );
    let mut d = Tensor::uninit(&[16, 16], dev)?;
    launch(
        dev,
        kernel,
        LaunchGeometry::new([1, 1, 1], [32, 1, 1], 0),
        &mut [
            KernelArg::In(at.buffer()),
            KernelArg::In(bt.buffer()),
            KernelArg::In(ct.buffer()),
            KernelArg::Out(d.buffer_mut()),
            KernelArg::I32(active),
        ],
    )?;
    d.to_vec()
}

/// A self-test kernel of depth `k` against the product of the operands rounded by `round`, in
/// f64, on every kernel device and in both schedules. The operands have bits below the kept
/// mantissa, so a kernel that skipped or mis-rounded the conversion lands far from the want.
fn check_wmma_selftest(test: &str, kernel: &str, k: usize, round: fn(f32) -> f32) {
    let mut rng = test_rng(test);
    let (a, b, c) = (
        random_vec(&mut rng, 16 * k, -1.0, 1.0),
        random_vec(&mut rng, 16 * k, -1.0, 1.0),
        random_vec(&mut rng, 256, -1.0, 1.0),
    );
    let mut want = vec![0.0; 256];
    for m in 0..16 {
        for n in 0..16 {
            let dot: f64 = (0..k)
                .map(|kk| round(a[m * k + kk]) as f64 * round(b[n * k + kk]) as f64)
                .sum();
            want[n * 16 + m] = (c[m * 16 + n] as f64 + dot) as f32;
        }
    }
    let mut devices = kernel_devices(test);
    devices.push(EMU_REVERSE);
    for dev in devices {
        let got = wmma_selftest(&dev, kernel, k, (&a, &b, &c), 32).unwrap();
        assert_close(&format!("{kernel} on {dev}"), &got, &want, 1e-5, 1e-5);
    }
}

#[test]
fn wmma_tf32_product() {
    let tf32 = dalemeetslangevin::ops::conv_precision::round_to_tf32;
    check_wmma_selftest("wmma_tf32", "selftest_wmma_tf32_f32", 8, tf32);
}

#[test]
fn wmma_bf16_product() {
    let bf16 = dalemeetslangevin::ops::conv_precision::round_to_bf16;
    check_wmma_selftest("wmma_bf16", "selftest_wmma_bf16_f32", 16, bf16);
}

#[test]
fn divergent_wmma_is_reported() {
    let z = vec![0.0; 256];
    let kernel = "selftest_wmma_tf32_f32";
    let err = wmma_selftest(&EMU, kernel, 8, (&z[..128], &z[..128], &z), 16).unwrap_err();
    assert!(err.to_string().contains("had exited"), "{err}");
}
