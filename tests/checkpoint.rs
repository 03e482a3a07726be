//! Checkpoints: round trip, atomic replacement, and clear errors for damaged files.
mod common;

use common::*;
use dalemeetslangevin::checkpoint::Checkpoint;
use dalemeetslangevin::{Device, Tensor};

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
