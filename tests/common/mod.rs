//! Helpers shared by the integration tests.
#![allow(dead_code)]
use dalemeetslangevin::device::{cuda, CudaDevice, EmuSchedule};
use dalemeetslangevin::ops::ConvPrecision;
use dalemeetslangevin::Device;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The devices a kernel test runs on: the emulator in both schedules (threads resumed in forward
/// and in reverse order between barriers, so a race changes the result of one of them), and the
/// GPU when there is one. Without a GPU the CUDA part of the test says so; it never passes
/// silently.
///
/// With `DML_REQUIRE_CUDA=1` (scripts/gpu-proof on a GPU machine) a missing GPU fails the test
/// instead, so a proof run cannot pass on the emulator alone. `DML_TEST_DEVICES=cuda` leaves the
/// emulator out: the GPU machine is lent for minutes, and the emulator runs the same kernels
/// in CI; tests that compare the two schedules with each other still run them.
pub fn kernel_devices(test: &str) -> Vec<Device> {
    let mut devices = if cuda_only() {
        Vec::new()
    } else {
        vec![
            Device::Emu(EmuSchedule::Forward),
            Device::Emu(EmuSchedule::Reverse),
        ]
    };
    match CudaDevice::open(0) {
        Ok(dev) => devices.push(Device::Cuda(dev)),
        Err(e) => {
            let why = if cuda::kernels_compiled() {
                e.to_string()
            } else {
                "binary built without kernels".into()
            };
            // With the emulator left out as well, nothing would be tested.
            assert!(
                !cuda_required() && !cuda_only(),
                "{test}: DML_REQUIRE_CUDA=1 or DML_TEST_DEVICES=cuda is set but there is no \
                 usable CUDA device ({why})"
            );
            eprintln!("{test}: cuda skipped: no CUDA device ({why})");
        }
    }
    devices
}

/// Whether `DML_TEST_DEVICES=cuda`: kernel tests run on the GPU alone.
pub fn cuda_only() -> bool {
    std::env::var("DML_TEST_DEVICES").is_ok_and(|v| v == "cuda")
}

/// Whether `DML_REQUIRE_CUDA=1`: tests that would skip their CUDA part must fail instead.
pub fn cuda_required() -> bool {
    std::env::var("DML_REQUIRE_CUDA").is_ok_and(|v| v == "1")
}

/// The source tree (tests/data, scripts/): `DML_SOURCE_DIR` when set, else the one these tests
/// were built from. scripts/gpu-proof sets it to the tree it runs in, since a test executable
/// run on another machine carries this machine's path.
pub fn source_dir() -> std::path::PathBuf {
    std::env::var_os("DML_SOURCE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// A fresh random generator per run, its seed printed so a failure can be replayed with
/// `TEST_SEED=<seed>`.
pub fn test_rng(test: &str) -> StdRng {
    let seed = std::env::var("TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{test}: TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

pub fn random_vec(rng: &mut StdRng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// Element-wise comparison with a relative-and-absolute tolerance; NaN anywhere fails (so an
/// element the kernel never wrote, left at the NaN poison, is caught).
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f32, atol: f32) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs {}",
        got.len(),
        want.len()
    );
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = (g - w).abs() <= atol + rtol * w.abs();
        assert!(
            ok && g.is_finite() == w.is_finite(),
            "{what}: element {i}: got {g}, want {w}"
        );
    }
}

/// One unit in the last place of 1 (2^-23): the fp32 rounding unit the tolerances count in.
pub const ULP: f32 = 1.0 / (1 << 23) as f32;

/// The tensor-core kernels (conv and matmul) and the cpu's reference in their precision sum the
/// same exact products (of two 11-bit significands in tf32, two 8-bit ones in bf16) in other
/// orders, and tensor cores round their accumulations their own way: a few ulp of sum |a b|
/// apart, however much the sum cancels. A fixed tolerance failed by chance on 630-term sums that
/// cancelled to 0.05 (CI, TEST_SEED=1796303205113123763).
pub const MMA_REORDER_TOL: f32 = 32.0 * ULP;

/// How far a product of two operands rounded to `precision` may be from the exact one, relative
/// to its size: each operand is within half a unit of its last kept bit (2^-11 in tf32's 10
/// mantissa bits, 2^-8 in bf16's 7), so the product within twice that and its square (tf32's
/// square, 2^-22, is left to the fp32 rounding the checks allow beside it, as before bf16).
pub fn product_rounding(precision: ConvPrecision) -> f32 {
    match precision {
        ConvPrecision::Tf32 => 2f32.powi(-10),
        ConvPrecision::Bf16 => 2f32.powi(-7) * 1.01,
        ConvPrecision::Fp32 => 0.0,
    }
}

/// |got - want| <= rel magnitude element by element, where `magnitude` is each sum's sum |a||b|:
/// the size its rounding errors scale with, whatever the order it was summed in (a fixed
/// tolerance does not: it fails by chance on long sums that cancel). NaN anywhere fails.
pub fn assert_within(what: &str, got: &[f32], want: &[f32], magnitude: &[f32], rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(magnitude).enumerate() {
        let bound = rel * m;
        assert!(
            (g - w).abs() <= bound,
            "{what}: element {i}: got {g}, want {w}, bound {bound:e}"
        );
    }
}

/// Sizes that are not multiples of the block or tile sizes, and the degenerate ones.
pub const EDGE_SIZES: &[usize] = &[1, 31, 33, 255, 256, 257, 1000, 4099];

/// A fresh empty directory under the system temp dir, unique to this test and process.
pub fn tempdir(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dml-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub mod cli;
pub mod golden;
pub mod gradcheck;

/// `f()`, run on its own thread; a panic naming `what` when it has not returned within `secs`
/// (a read that blocks forever, on a FIFO say, then fails the test instead of hanging it).
pub fn finishes_within<T: Send + 'static>(
    what: &str,
    secs: u64,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("{what}: still running after {secs} s"))
}

/// A FIFO at `path` (made with mkfifo(1)): opening it for reading blocks until a writer comes.
pub fn make_fifo(path: &std::path::Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success(), "mkfifo {}", path.display());
}
