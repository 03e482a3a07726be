//! Property test of the file parsers (IDX, CIFAR-10, checkpoints): random bytes and mutated valid
//! files (bit flips, truncation, huge header values, random bytes) are answered with Ok or an
//! error naming the file, never a panic. Each parser gets a fixed time budget, so the test takes
//! a few seconds in any build.
mod common;

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use dalemeetslangevin::checkpoint::Checkpoint;
use dalemeetslangevin::data::{read_idx, Dataset, Split};
use dalemeetslangevin::{Device, Tensor};
use rand::rngs::StdRng;
use rand::Rng;

const BUDGET_PER_PARSER: Duration = Duration::from_millis(1500);

/// Sizes a hostile header may declare: zero, the largest, powers of two that overflow products.
const HUGE: [u32; 6] = [0, 1, u32::MAX, 1 << 31, 1 << 16, 0x7fff_ffff];

fn idx_file(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    dims.iter().for_each(|d| b.extend(d.to_be_bytes()));
    b.extend_from_slice(data);
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// `valid` damaged in one random way.
fn mutate(rng: &mut StdRng, valid: &[u8]) -> Vec<u8> {
    let mut b = valid.to_vec();
    match rng.random_range(0..6) {
        0 => {
            for _ in 0..rng.random_range(1..8) {
                if !b.is_empty() {
                    let i = rng.random_range(0..b.len());
                    b[i] ^= 1 << rng.random_range(0..8);
                }
            }
        }
        1 => b.truncate(rng.random_range(0..=b.len())),
        2 => {
            // A huge value over a 4- or 8-byte field near the start (a header's sizes).
            let at = rng.random_range(0..b.len().clamp(1, 64));
            let value = HUGE[rng.random_range(0..HUGE.len())];
            let bytes = if rng.random() {
                value.to_be_bytes().to_vec()
            } else {
                (u64::from(value) << rng.random_range(0..32))
                    .to_le_bytes()
                    .to_vec()
            };
            b.resize(b.len().max(at + bytes.len()), 0);
            b[at..at + bytes.len()].copy_from_slice(&bytes);
        }
        3 => b.extend((0..rng.random_range(1..300)).map(|_| rng.random::<u8>())),
        4 => {
            b = (0..rng.random_range(0..200))
                .map(|_| rng.random())
                .collect()
        }
        _ => {
            let i = rng.random_range(0..=b.len());
            b.insert(i, rng.random());
        }
    }
    b
}

/// Runs `parse` on inputs from `make` until the budget is spent: a panic fails the test with
/// the input; an error must name `path`.
fn fuzz<T>(
    what: &str,
    path: &Path,
    rng: &mut StdRng,
    make: &mut dyn FnMut(&mut StdRng) -> Vec<u8>,
    parse: &dyn Fn() -> dalemeetslangevin::Result<T>,
) {
    let start = Instant::now();
    let (mut runs, mut errors) = (0, 0);
    while start.elapsed() < BUDGET_PER_PARSER {
        let input = make(rng);
        std::fs::write(path, &input).unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(parse));
        let Ok(result) = outcome else {
            panic!(
                "{what} panicked on {} bytes: {:02x?}",
                input.len(),
                &input[..input.len().min(96)]
            );
        };
        if let Err(e) = result {
            let message = e.to_string();
            let name = path.file_name().unwrap().to_string_lossy();
            assert!(message.contains(name.as_ref()), "{what}: {message}");
            errors += 1;
        }
        runs += 1;
    }
    eprintln!("{what}: {runs} inputs, {errors} refused");
    assert!(runs > 20, "{what}: only {runs} inputs in the budget");
}

#[test]
fn idx_parser_never_panics() {
    let mut rng = test_rng("fuzz_idx");
    let dir = tempdir("fuzz_idx");
    let path = dir.join("images-idx3-ubyte");
    let valid = idx_file(&[3, 4, 5], &[9; 60]);
    let valid_gz = gzip(&valid);
    fuzz(
        "IDX",
        &path,
        &mut rng,
        &mut |rng| match rng.random_range(0..3) {
            0 => mutate(rng, &valid),
            1 => gzip(&mutate(rng, &valid)),
            _ => mutate(rng, &valid_gz),
        },
        &|| read_idx(&path, 3),
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// Whole IDX directories: the images file mutated, the labels valid, so the loader's use of
/// the header sizes (image length, count) is exercised too.
#[test]
fn idx_dataset_loader_never_panics() {
    let mut rng = test_rng("fuzz_idx_dir");
    let dir = tempdir("fuzz_idx_dir");
    let images = idx_file(&[3, 4, 5], &[9; 60]);
    std::fs::write(
        dir.join("train-labels-idx1-ubyte"),
        idx_file(&[3], &[0, 1, 2]),
    )
    .unwrap();
    let path = dir.join("train-images-idx3-ubyte");
    fuzz(
        "IDX dataset",
        &path,
        &mut rng,
        &mut |rng| mutate(rng, &images),
        &|| {
            let data = Dataset::load_dir(&dir, Split::Train)?;
            (0..data.n).for_each(|i| assert_eq!(data.image(i).len(), data.image_len()));
            Ok(data)
        },
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn cifar_parser_never_panics() {
    let mut rng = test_rng("fuzz_cifar");
    let dir = tempdir("fuzz_cifar");
    let path = dir.join("test_batch.bin");
    let valid: Vec<u8> = (0..2 * 3073)
        .map(|i| if i % 3073 == 0 { 3 } else { i as u8 })
        .collect();
    fuzz(
        "CIFAR-10",
        &path,
        &mut rng,
        &mut |rng| mutate(rng, &valid),
        &|| Dataset::load_dir(&dir, Split::Test),
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn checkpoint_parser_never_panics() {
    let mut rng = test_rng("fuzz_ckpt");
    let dir = tempdir("fuzz_ckpt");
    let path = dir.join("model.safetensors");
    let mut c = Checkpoint::new();
    let w = Tensor::from_vec(random_vec(&mut rng, 12, -1.0, 1.0), &[3, 4], &Device::Cpu).unwrap();
    c.put_tensor("param/w", &w).unwrap();
    c.put_tensor("ema/b", &Tensor::scalar(0.5, &Device::Cpu).unwrap())
        .unwrap();
    c.put_meta("step", 3);
    c.save(&path).unwrap();
    let valid = std::fs::read(&path).unwrap();
    fuzz(
        "checkpoint",
        &path,
        &mut rng,
        &mut |rng| mutate(rng, &valid),
        &|| {
            let c = Checkpoint::load(&path)?;
            for (name, (shape, _)) in &c.tensors {
                c.tensor(name, shape, &Device::Cpu)?;
            }
            Ok(c)
        },
    );
    std::fs::remove_dir_all(dir).unwrap();
}
