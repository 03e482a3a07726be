//! The FID InceptionV3 (src/nn/inception.rs) against reference/inception.py: the formula weights
//! bit for bit, and the features, block outputs and resized input of the golden file
//! (tests/data/inception_fid_formula.safetensors, float64 PyTorch) within f32 tolerance; the
//! loader's refusals of files that are not the network's weights.
mod common;

use std::collections::BTreeMap;

use common::source_dir;
use dalemeetslangevin::checkpoint::{Checkpoint, HostTensor};
use dalemeetslangevin::nn::inception::{formula_state_dict, FidInception, FEATURES, INPUT_SIZE};
use dalemeetslangevin::ops::{self, pool::resize_bilinear};
use dalemeetslangevin::{Device, Tensor};
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

/// The golden file's bytes.
fn golden_bytes() -> Vec<u8> {
    let path = source_dir().join("tests/data/inception_fid_formula.safetensors");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A tensor of the golden file as f64 values, with its shape.
fn golden(bytes: &[u8], name: &str) -> (Vec<usize>, Vec<f64>) {
    let st = SafeTensors::deserialize(bytes).unwrap();
    let view = st.tensor(name).unwrap();
    let data = match view.dtype() {
        Dtype::F32 => view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect(),
        Dtype::F64 => view
            .data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        other => panic!("{name}: unexpected dtype {other:?}"),
    };
    (view.shape().to_vec(), data)
}

fn golden_meta(bytes: &[u8], key: &str) -> String {
    let (_, header) = SafeTensors::read_metadata(bytes).unwrap();
    header.metadata().as_ref().unwrap()[key].clone()
}

fn golden_images(bytes: &[u8], name: &str) -> Tensor {
    let (shape, data) = golden(bytes, name);
    let data: Vec<f32> = data.into_iter().map(|v| v as f32).collect();
    Tensor::from_vec(data, &shape, &Device::Cpu).unwrap()
}

/// `got` (f32) against the float64 reference `want`: every element within `rtol` of the largest
/// reference magnitude, so a wrong layer (an O(1) change) fails while f32 rounding through ~50
/// layers passes.
fn assert_matches(what: &str, got: &[f32], want: &[f64], rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{what}: the reference is all zeros");
    let (worst, at) = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs())
        .enumerate()
        .fold((0.0f64, 0), |(m, i), (j, d)| {
            if d.is_nan() || d > m {
                (d, j)
            } else {
                (m, i)
            }
        });
    eprintln!("{what}: max |diff| {worst:.3e} at {at} (reference scale {scale:.3e})");
    assert!(
        worst <= rtol * scale,
        "{what}: element {at} is {} vs {} (|diff| {worst:.3e} > {rtol} x {scale:.3e})",
        got[at],
        want[at]
    );
}

#[test]
fn formula_weights_are_the_reference_generators_bit_for_bit() {
    let bytes = golden_bytes();
    let weights = formula_state_dict();
    let bit_sum: u64 = weights
        .values()
        .flat_map(|(_, data)| data.iter().map(|v| v.to_bits() as u64))
        .sum();
    let want: u64 = golden_meta(&bytes, "check.bit_sum_engine_tensors")
        .parse()
        .unwrap();
    assert_eq!(weights.len(), 470, "tensor count (94 layers of 5)");
    assert_eq!(bit_sum, want, "sum of the f32 bit patterns of every tensor");
    for name in [
        "Conv2d_1a_3x3.conv.weight",
        "Mixed_7c.branch_pool.bn.running_var",
    ] {
        let first3: Vec<String> = weights[name].1[..3]
            .iter()
            .map(|v| format!("{:#010x}", v.to_bits()))
            .collect();
        let want = golden_meta(&bytes, &format!("check.{name}.first3_f32_bits"));
        assert_eq!(first3.join(","), want, "{name}");
    }
}

#[test]
fn resize_to_299_matches_pytorch_interpolate() {
    // F.interpolate(x.repeat(1, 3, 1, 1), (299, 299), mode='bilinear') * 2 - 1, image 0.
    let bytes = golden_bytes();
    let images = golden_images(&bytes, "gray_images");
    let first = Tensor::from_slice(
        &images.to_vec().unwrap()[..28 * 28],
        &[1, 1, 28, 28],
        &Device::Cpu,
    )
    .unwrap();
    let rgb = ops::concat_channels(&[&first, &first, &first]).unwrap();
    let resized = resize_bilinear(&rgb, (INPUT_SIZE, INPUT_SIZE)).unwrap();
    let got = ops::scale(&resized, 2.0, -1.0).unwrap().to_vec().unwrap();
    let (_, want) = golden(&bytes, "gray_resized0");
    assert_matches("resized input", &got, &want, 4e-6);
}

/// The channel means of an NCHW block output, [N, C] flattened.
fn channel_means(t: &Tensor) -> Vec<f32> {
    let &[_, _, h, w] = t.shape() else {
        panic!("{:?} is not NCHW", t.shape())
    };
    let v = t.to_vec().unwrap();
    v.chunks(h * w)
        .map(|plane| (plane.iter().map(|&x| x as f64).sum::<f64>() / (h * w) as f64) as f32)
        .collect()
}

#[test]
fn features_match_pytorch_in_float64() {
    let bytes = golden_bytes();
    let net = FidInception::with_formula_weights(&Device::Cpu).unwrap();
    let outputs = net.blocks(&golden_images(&bytes, "gray_images")).unwrap();
    let [b0, b1, b2, features] = &outputs.blocks;
    for (i, block) in [b0, b1, b2].into_iter().enumerate() {
        let (_, want) = golden(&bytes, &format!("gray_block{i}_mean"));
        assert_matches(
            &format!("block {i} channel means"),
            &channel_means(block),
            &want,
            1e-5,
        );
    }
    assert_eq!(features.shape(), &[3, FEATURES]);
    let (_, want) = golden(&bytes, "gray_features");
    assert_matches("grey features", &features.to_vec().unwrap(), &want, 1e-5);

    let colour = net
        .features(&golden_images(&bytes, "colour_images"))
        .unwrap();
    let (_, want) = golden(&bytes, "colour_features");
    assert_matches("colour features", &colour.to_vec().unwrap(), &want, 1e-5);
}

/// The first golden image alone, [1, 1, 28, 28].
fn one_image() -> Tensor {
    let bytes = golden_bytes();
    let all = golden_images(&bytes, "gray_images").to_vec().unwrap();
    Tensor::from_slice(&all[..28 * 28], &[1, 1, 28, 28], &Device::Cpu).unwrap()
}

#[test]
fn a_converted_weights_file_loads_to_the_same_network() {
    let dir = common::tempdir("inception_load");
    let path = dir.join("fid_inception.safetensors");
    let mut file = Checkpoint::new();
    file.tensors = formula_state_dict();
    file.put_meta("format", "dml-fid-inception-v3");
    file.save(&path).unwrap();
    let loaded = FidInception::load(&path, &Device::Cpu).unwrap();
    let direct = FidInception::with_formula_weights(&Device::Cpu).unwrap();
    let x = one_image();
    assert_eq!(
        loaded.features(&x).unwrap().to_vec().unwrap(),
        direct.features(&x).unwrap().to_vec().unwrap()
    );

    // Any other safetensors file (here an NCSN-like checkpoint) is refused, naming the file.
    let other = dir.join("other.safetensors");
    let mut ck = Checkpoint::new();
    ck.tensors
        .insert("conv.weight".into(), (vec![2], vec![0.0, 1.0]));
    ck.save(&other).unwrap();
    let e = FidInception::load(&other, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("other.safetensors") && e.contains("convert_inception.py"),
        "{e}"
    );
    assert!(
        e.contains("missing: Conv2d_1a_3x3.conv.weight") && e.contains("unexpected: conv.weight"),
        "{e}"
    );
}

fn refusal(edit: impl FnOnce(&mut BTreeMap<String, HostTensor>)) -> String {
    let mut weights = formula_state_dict();
    edit(&mut weights);
    match FidInception::from_state_dict(&weights, &Device::Cpu) {
        Ok(_) => panic!("an edited state dict was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn state_dicts_that_are_not_the_networks_are_refused() {
    let e = refusal(|w| {
        w.remove("Mixed_6c.branch7x7_2.conv.weight");
    });
    assert!(
        e.contains("missing: Mixed_6c.branch7x7_2.conv.weight"),
        "{e}"
    );

    // A 7x1 where a 1x7 belongs: the transposed kernel a careless conversion would give.
    let e = refusal(|w| {
        w.get_mut("Mixed_6c.branch7x7_2.conv.weight").unwrap().0 = vec![160, 160, 7, 1];
    });
    assert!(
        e.contains("wrong shape: Mixed_6c.branch7x7_2.conv.weight is [160, 160, 7, 1]"),
        "{e}"
    );

    let e = refusal(|w| {
        w.insert("AuxLogits.fc.weight".into(), (vec![1], vec![0.0]));
    });
    assert!(e.contains("unexpected: AuxLogits.fc.weight"), "{e}");

    let e = refusal(|w| w.get_mut("Mixed_7b.branch_pool.bn.running_var").unwrap().1[5] = f32::NAN);
    assert!(
        e.contains("Mixed_7b.branch_pool") && e.contains("NaN"),
        "{e}"
    );

    // pytorch-fid's classifier head is allowed (and unused): a file converted without dropping it.
    let mut weights = formula_state_dict();
    weights.insert("fc.bias".into(), (vec![1008], vec![0.0; 1008]));
    assert!(FidInception::from_state_dict(&weights, &Device::Cpu).is_ok());
}

#[test]
fn images_of_other_channel_counts_are_refused() {
    let net = FidInception::with_formula_weights(&Device::Cpu).unwrap();
    let x = Tensor::zeros(&[1, 2, 28, 28], &Device::Cpu).unwrap();
    let e = net.features(&x).err().unwrap().to_string();
    assert!(e.contains("[1, 2, 28, 28]") && e.contains("1 or 3"), "{e}");
}

#[test]
fn the_network_on_the_emulator_and_gpu_matches_the_cpu() {
    // Every kernel of the network (strided and 1x7/7x1 convolutions, both pools, the resize,
    // ReLU, concatenation) in place, on one image: ~40 s on the emulator, one schedule (the
    // kernels' own tests run both on edge sizes); on the GPU too when there is one.
    use dalemeetslangevin::device::EmuSchedule;
    let x = one_image();
    let cpu = FidInception::with_formula_weights(&Device::Cpu).unwrap();
    let want = cpu.blocks(&x).unwrap();
    let devices = common::kernel_devices("inception_network")
        .into_iter()
        .filter(|d| !matches!(d, Device::Emu(EmuSchedule::Reverse)));
    for dev in devices {
        let net = FidInception::with_formula_weights(&dev).unwrap();
        let got = net.blocks(&x).unwrap();
        for (i, (g, w)) in got.blocks.iter().zip(&want.blocks).enumerate() {
            let w: Vec<f64> = w.to_vec().unwrap().into_iter().map(f64::from).collect();
            assert_matches(
                &format!("block {i} on {dev}"),
                &g.to_vec().unwrap(),
                &w,
                1e-5,
            );
        }
    }
}
