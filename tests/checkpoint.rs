//! Checkpoints: round trip, atomic replacement, and clear errors for damaged files.
mod common;

use std::path::Path;

use common::cli::{fails, ok, s};
use common::*;
use dalemeetslangevin::checkpoint::Checkpoint;
use dalemeetslangevin::{Device, Tensor};
use rand::Rng;

fn sample_checkpoint(rng: &mut rand::rngs::StdRng, step: u64) -> Checkpoint {
    let mut c = Checkpoint::new();
    let w = random_vec(rng, 6 * 7, -1.0, 1.0);
    c.put_tensor(
        "net.conv1.weight",
        &Tensor::from_vec(w, &[6, 7], &Device::Cpu).unwrap(),
    )
    .unwrap();
    c.put_tensor(
        "ema/net.conv1.bias",
        &Tensor::scalar(0.25, &Device::Cpu).unwrap(),
    )
    .unwrap();
    c.put_meta("step", step);
    c.put_meta("preset", "fashion-mnist-small");
    c.put_meta("data_range", "1,2");
    c
}

#[test]
fn round_trip_keeps_every_bit() {
    let mut rng = test_rng("ckpt_round_trip");
    let dir = tempdir("ckpt_round_trip");
    let path = dir.join("model.safetensors");
    let c = sample_checkpoint(&mut rng, 1234);
    c.save(&path).unwrap();
    let back = Checkpoint::load(&path).unwrap();
    assert_eq!(back.tensors, c.tensors);
    assert_eq!(back.metadata, c.metadata);
    assert_eq!(back.meta_parse::<u64>("step").unwrap(), 1234);
    let t = back
        .tensor("net.conv1.weight", &[6, 7], &Device::emu())
        .unwrap();
    assert_eq!(t.to_vec().unwrap(), c.tensors["net.conv1.weight"].1);
    assert_eq!(back.tensors["ema/net.conv1.bias"].0, Vec::<usize>::new());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn failure_before_rename_keeps_the_previous_checkpoint() {
    let mut rng = test_rng("ckpt_kill");
    let dir = tempdir("ckpt_kill");
    let path = dir.join("model.safetensors");
    let old = sample_checkpoint(&mut rng, 1);
    old.save(&path).unwrap();
    let new = sample_checkpoint(&mut rng, 2);

    // A failure (an error, a panic) after the temporary file is written: the staged write is
    // dropped, its temporary file removed, the target untouched.
    let staged = new.stage(&path).unwrap();
    let temp = staged.temp_path().to_path_buf();
    assert!(temp.exists() && temp.parent() == path.parent());
    drop(staged);
    assert!(!temp.exists());
    assert_eq!(Checkpoint::load(&path).unwrap().tensors, old.tensors);

    // A kill at the same moment runs no destructor: the temporary file stays behind, and still
    // the target holds the previous checkpoint, and the next save succeeds over the leftover.
    std::mem::forget(new.stage(&path).unwrap());
    assert!(temp.exists());
    assert_eq!(Checkpoint::load(&path).unwrap().meta("step").unwrap(), "1");
    new.save(&path).unwrap();
    assert_eq!(Checkpoint::load(&path).unwrap().meta("step").unwrap(), "2");
    assert!(!temp.exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn damaged_files_are_errors_naming_the_file() {
    let mut rng = test_rng("ckpt_damaged");
    let dir = tempdir("ckpt_damaged");
    let path = dir.join("model.safetensors");
    sample_checkpoint(&mut rng, 7).save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let name = path.display().to_string();

    let missing = Checkpoint::load(dir.join("absent.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("absent.safetensors"), "{missing}");

    for cut in [0, 5, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = Checkpoint::load(&path).unwrap_err().to_string();
        assert!(err.contains(&name), "truncated to {cut}: {err}");
    }
    let mut garbage = bytes.clone();
    garbage[8..16].copy_from_slice(b"!garbage");
    std::fs::write(&path, &garbage).unwrap();
    let err = Checkpoint::load(&path).unwrap_err().to_string();
    assert!(err.contains(&name), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn missing_tensors_and_wrong_shapes_are_errors_naming_the_file() {
    let mut rng = test_rng("ckpt_shapes");
    let dir = tempdir("ckpt_shapes");
    let path = dir.join("model.safetensors");
    sample_checkpoint(&mut rng, 7).save(&path).unwrap();
    let c = Checkpoint::load(&path).unwrap();
    let name = path.display().to_string();

    let err = c
        .tensor("net.conv2.weight", &[1], &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&name) && err.contains("net.conv2.weight"),
        "{err}"
    );
    let err = c
        .tensor("net.conv1.weight", &[7, 6], &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&name) && err.contains("[6, 7]") && err.contains("[7, 6]"),
        "{err}"
    );
    let err = c.meta("schedule").unwrap_err().to_string();
    assert!(err.contains(&name) && err.contains("schedule"), "{err}");
    let err = c.meta_parse::<u64>("preset").unwrap_err().to_string();
    assert!(err.contains("preset"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The byte range of each tensor's data in a safetensors file.
fn tensor_data_ranges(bytes: &[u8]) -> Vec<(String, std::ops::Range<usize>)> {
    let (header_len, header) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let start = 8 + header_len;
    header
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let (a, b) = info.data_offsets;
            (name, start + a..start + b)
        })
        .collect()
}

#[test]
fn a_flipped_bit_in_any_tensor_is_an_error_naming_file_and_tensor() {
    let mut rng = test_rng("ckpt_bitflip");
    let dir = tempdir("ckpt_bitflip");
    let path = dir.join("model.safetensors");
    sample_checkpoint(&mut rng, 3).save(&path).unwrap();
    let good = std::fs::read(&path).unwrap();
    let name = path.display().to_string();
    for (tensor, range) in tensor_data_ranges(&good) {
        let mut bad = good.clone();
        let byte = rng.random_range(range);
        bad[byte] ^= 1 << rng.random_range(0..8);
        std::fs::write(&path, &bad).unwrap();
        let err = Checkpoint::load(&path).unwrap_err().to_string();
        assert!(
            err.contains(&name) && err.contains(&format!("'{tensor}'")) && err.contains("checksum"),
            "bit flipped at byte {byte}: {err}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Checkpoints written before checksums existed carry none; they load unverified.
#[test]
fn checkpoints_without_checksums_still_load() {
    let dir = tempdir("ckpt_no_checksums");
    let path = dir.join("old.safetensors");
    let data: Vec<u8> = [1.5f32, -2.0, 0.25]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![3], &data).unwrap();
    let meta = std::collections::HashMap::from([("step".to_string(), "9".to_string())]);
    let bytes = safetensors::serialize([("w", view)], Some(meta)).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let c = Checkpoint::load(&path).unwrap();
    assert_eq!(c.tensors["w"], (vec![3], vec![1.5, -2.0, 0.25]));
    assert_eq!(c.meta("step").unwrap(), "9");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn non_finite_tensor_values_are_refused_naming_the_tensor() {
    let dir = tempdir("ckpt_non_finite");
    let path = dir.join("model.safetensors");
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut c = Checkpoint::new();
        let t = Tensor::from_vec(vec![1.0, bad, 2.0], &[3], &Device::Cpu).unwrap();
        c.put_tensor("param/conv.weight", &t).unwrap();
        c.save(&path).unwrap();
        let err = Checkpoint::load(&path)
            .unwrap()
            .tensor("param/conv.weight", &[3], &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&path.display().to_string())
                && err.contains("'param/conv.weight'")
                && err.contains("index 1"),
            "{bad}: {err}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A trained model with one NaN weight: sampling refuses it, naming the tensor.
#[test]
fn sampling_refuses_a_checkpoint_with_a_nan_weight() {
    let dir = tempdir("ckpt_nan_sample");
    let run = dir.join("run");
    ok(&[
        "train",
        "--data",
        "shapes",
        "--preset",
        "tiny",
        "--steps",
        "1",
        "--levels",
        "10",
        "--batch",
        "4",
        "--out",
        s(&run),
    ]);
    let path = run.join("checkpoint.safetensors");
    let mut c = Checkpoint::load(&path).unwrap();
    let name = c
        .tensors
        .keys()
        .find(|k| k.starts_with("ema/"))
        .unwrap()
        .clone();
    c.tensors.get_mut(&name).unwrap().1[0] = f32::NAN;
    c.save(&path).unwrap();
    let err = fails(&[
        "sample",
        "--checkpoint",
        s(&path),
        "--count",
        "1",
        "--out",
        s(&dir.join("x.png")),
    ]);
    assert!(err.contains(&format!("'{name}'")), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Devices, FIFOs and directories are refused at once (reading /dev/zero would never end, a FIFO
/// would block forever); so is a header length beyond the limit.
#[test]
fn non_regular_files_and_oversized_headers_are_refused() {
    let dir = tempdir("ckpt_non_regular");
    let fifo = dir.join("fifo.safetensors");
    make_fifo(&fifo);
    let reading = fifo.clone();
    let err = finishes_within("loading a FIFO", 10, move || {
        Checkpoint::load(&reading).unwrap_err().to_string()
    });
    assert!(
        err.contains("fifo.safetensors") && err.contains("not a regular file"),
        "{err}"
    );
    for special in [
        dir.as_path(),
        Path::new("/dev/zero"),
        Path::new("/dev/null"),
    ] {
        let err = Checkpoint::load(special).unwrap_err().to_string();
        assert!(
            err.contains(&special.display().to_string()) && err.contains("not a regular file"),
            "{err}"
        );
    }
    let err = fails(&["sample", "--checkpoint", "/dev/zero"]);
    assert!(
        err.contains("/dev/zero") && err.contains("not a regular file"),
        "{err}"
    );

    let huge = dir.join("huge-header.safetensors");
    let mut bytes = (200u64 << 20).to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}      ");
    std::fs::write(&huge, bytes).unwrap();
    let err = Checkpoint::load(&huge).unwrap_err().to_string();
    assert!(
        err.contains("huge-header.safetensors") && err.contains("100 MiB"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
