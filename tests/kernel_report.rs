//! `dml info --kernels`: the build-time report of what the compiler made of every kernel
//! (src/device/kernel_report.rs), and the sm_90 occupancy rule it applies.
mod common;

use common::cli::ok;
use dalemeetslangevin::device::cuda;
use dalemeetslangevin::device::launch::KERNEL_SIGNATURES;
use dalemeetslangevin::device::occupancy::{self, Limiter};
use dalemeetslangevin::ops::conv::MMA_PIPELINED_SHARED_BYTES;
use serde_json::Value;

/// The architectures build.rs compiles SASS for.
const ARCHS: [&str; 2] = ["sm_80", "sm_90"];

/// The kernels whose source calls `nvcuda::wmma` (grep wmma kernels/), with the operand type
/// their SASS must name in its tensor-core instructions (HMMA.1688.F32.TF32,
/// HMMA.16816.F32.BF16), or the tensor-core path silently runs on the FMA units or in another
/// format. The three tf32 convolution passes are each pass's default kernel on cuda (issue 13),
/// the channel-slice forms where the channels allow; bf16 is `--precision bf16`.
const WMMA_KERNELS: [(&str, &str); 16] = [
    ("conv2d_forward_tf32_f32", "TF32"),
    ("conv2d_forward_tf32_channel_slices_f32", "TF32"),
    ("conv2d_backward_data_tf32_f32", "TF32"),
    ("conv2d_backward_data_tf32_channel_slices_f32", "TF32"),
    ("conv2d_backward_weight_tf32_f32", "TF32"),
    ("conv2d_backward_weight_tf32_channel_slices_f32", "TF32"),
    ("matmul_tf32_f32", "TF32"),
    ("selftest_wmma_tf32_f32", "TF32"),
    ("conv2d_forward_bf16_f32", "BF16"),
    ("conv2d_forward_bf16_channel_slices_f32", "BF16"),
    ("conv2d_backward_data_bf16_f32", "BF16"),
    ("conv2d_backward_data_bf16_channel_slices_f32", "BF16"),
    ("conv2d_backward_weight_bf16_f32", "BF16"),
    ("conv2d_backward_weight_bf16_channel_slices_f32", "BF16"),
    ("matmul_bf16_f32", "BF16"),
    ("selftest_wmma_bf16_f32", "BF16"),
];

/// The JSON report's kernel entries, or None (said on stderr) for a binary built without nvcc.
fn reported_kernels(test: &str) -> Option<Vec<Value>> {
    if !cuda::kernels_compiled() {
        assert!(
            !common::cuda_required(),
            "{test}: DML_REQUIRE_CUDA is set but the binary was built without CUDA kernels"
        );
        eprintln!("{test}: skipped: binary built without CUDA kernels (no nvcc at build time)");
        return None;
    }
    let report: Value = serde_json::from_str(&ok(&["info", "--kernels", "--json"]))
        .expect("dml info --kernels --json prints JSON");
    Some(
        report["kernels"]
            .as_array()
            .expect("a kernels array")
            .clone(),
    )
}

fn entry<'a>(kernels: &'a [Value], kernel: &str, arch: &str) -> Option<&'a Value> {
    kernels
        .iter()
        .find(|k| k["kernel"] == kernel && k["arch"] == arch)
}

#[test]
fn every_signed_kernel_is_reported_for_sm80_and_sm90() {
    let Some(kernels) = reported_kernels("every_signed_kernel_is_reported_for_sm80_and_sm90")
    else {
        return;
    };
    let missing: Vec<String> = KERNEL_SIGNATURES
        .iter()
        .flat_map(|sig| ARCHS.map(|arch| (sig.name, arch)))
        .filter(|(kernel, arch)| entry(&kernels, kernel, arch).is_none())
        .map(|(kernel, arch)| format!("{kernel} ({arch})"))
        .collect();
    assert!(missing.is_empty(), "not in the kernel report: {missing:?}");
    for k in &kernels {
        assert!(
            k["registers"].as_u64().unwrap() > 0,
            "{k}: no register count"
        );
        assert!(
            k["mma_instructions"].is_u64(),
            "{k}: the SASS was not read (is cuobjdump installed beside nvcc?)"
        );
    }
}

#[test]
fn no_kernel_spills_registers() {
    let Some(kernels) = reported_kernels("no_kernel_spills_registers") else {
        return;
    };
    let spilling: Vec<String> = kernels
        .iter()
        .filter(|k| k["spill_store_bytes"] != 0 || k["spill_load_bytes"] != 0)
        .map(|k| {
            format!(
                "{} ({}): {} bytes stored, {} loaded",
                k["kernel"], k["arch"], k["spill_store_bytes"], k["spill_load_bytes"]
            )
        })
        .collect();
    assert!(
        spilling.is_empty(),
        "kernels spill registers: {spilling:#?}"
    );
}

#[test]
fn wmma_kernels_issue_tensor_core_instructions() {
    let Some(kernels) = reported_kernels("wmma_kernels_issue_tensor_core_instructions") else {
        return;
    };
    for (kernel, operand) in WMMA_KERNELS {
        for arch in ARCHS {
            let k = entry(&kernels, kernel, arch).expect("reported");
            assert!(
                k["mma_instructions"].as_u64().unwrap() > 0,
                "{kernel} ({arch}) has no MMA instruction in its SASS: {k}"
            );
            assert!(
                k["mma_opcodes"].as_str().unwrap().contains(operand),
                "{kernel} ({arch}): not a {operand} MMA: {k}"
            );
        }
    }
}

/// The kernels that stage their operands by cp.async (kernels/conv.cu, ConvMmaTile::PIPELINED),
/// which their SASS must show as LDGSTS, or the copies went through registers after all.
const PIPELINED_KERNELS: [&str; 2] = [
    "conv2d_forward_tf32_channel_slices_f32",
    "conv2d_backward_data_tf32_channel_slices_f32",
];

#[test]
fn pipelined_convolutions_copy_asynchronously_into_their_stages() {
    let Some(kernels) =
        reported_kernels("pipelined_convolutions_copy_asynchronously_into_their_stages")
    else {
        return;
    };
    for kernel in PIPELINED_KERNELS {
        for arch in ARCHS {
            let k = entry(&kernels, kernel, arch).expect("reported");
            assert!(
                k["async_copy_instructions"].as_u64().unwrap() > 0,
                "{kernel} ({arch}) has no LDGSTS in its SASS: {k}"
            );
            assert_eq!(
                k["dynamic_shared_bytes"].as_u64().unwrap(),
                MMA_PIPELINED_SHARED_BYTES as u64,
                "{kernel} ({arch})"
            );
        }
    }
    // The other kernels, but the emulator's cp.async self-test, copy through registers (and the
    // report says so).
    for k in &kernels {
        let name = k["kernel"].as_str().unwrap();
        if !PIPELINED_KERNELS.contains(&name) && name != "selftest_async_copy_f32" {
            assert_eq!(k["async_copy_instructions"], 0, "{k}");
            assert_eq!(k["dynamic_shared_bytes"], 0, "{k}");
        }
    }
}

#[test]
fn pipelined_shared_memory_is_the_size_the_kernels_declare() {
    // src/ops/conv.rs launches the pipelined kernels with the size kernels/conv.cu asserts its
    // stages have (a static_assert there); a launch with less would overrun shared memory.
    let source = include_str!("../kernels/conv.cu");
    let declared: u32 = source
        .lines()
        .find_map(|l| l.strip_prefix("#define CONV_MMA_PIPELINED_SHARED_BYTES "))
        .expect("conv.cu defines CONV_MMA_PIPELINED_SHARED_BYTES")
        .trim()
        .parse()
        .expect("a number");
    assert_eq!(declared, MMA_PIPELINED_SHARED_BYTES);
}

#[test]
fn the_table_names_every_kernel_and_the_spill_verdict() {
    let Some(kernels) = reported_kernels("the_table_names_every_kernel_and_the_spill_verdict")
    else {
        return;
    };
    let table = ok(&["info", "--kernels"]);
    assert!(
        table.contains("occupancy: theoretical, on sm_90"),
        "{table}"
    );
    assert!(table.contains("no kernel spills registers"), "{table}");
    for k in &kernels {
        assert!(
            table.contains(k["kernel"].as_str().unwrap()),
            "{} missing from:\n{table}",
            k["kernel"]
        );
    }
}

/// Worked cases of the rule in src/device/occupancy.rs, one per limiter.
#[test]
fn sm90_occupancy_follows_the_calculator_rules() {
    // 72 registers: 2304 per warp, 28 warps' worth of registers, 3 blocks of 8 warps.
    let regs = occupancy::sm90(72, 8320, 256);
    assert_eq!((regs.blocks_per_sm, regs.warps_per_sm), (3, 24));
    assert_eq!(regs.limiter, Limiter::Registers);
    assert_eq!(regs.fraction(), 0.375);
    // 32 registers at 256 threads: 8 blocks fill all 64 warps.
    let full = occupancy::sm90(32, 0, 256);
    assert_eq!((full.blocks_per_sm, full.fraction()), (8, 1.0));
    assert_eq!(full.limiter, Limiter::Warps);
    // 100 KB per block plus the 1 KB reserve: two blocks in 228 KB.
    let smem = occupancy::sm90(16, 100 * 1024, 128);
    assert_eq!(
        (smem.blocks_per_sm, smem.limiter),
        (2, Limiter::SharedMemory)
    );
    // One-warp blocks stop at 32 blocks per SM: half the warps.
    let blocks = occupancy::sm90(16, 0, 32);
    assert_eq!(
        (blocks.blocks_per_sm, blocks.limiter),
        (32, Limiter::Blocks)
    );
    assert_eq!(blocks.fraction(), 0.5);
}
