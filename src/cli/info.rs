//! `dml info`: what this build can do and what this machine has; `dml info --kernels`: what the
//! compiler made of each kernel (src/device/kernel_report.rs).
use super::DeviceChoice;
use crate::device::kernel_report::{
    fixed_dynamic_shared_bytes, KernelResources, KERNEL_RESOURCES, SASS_READER,
};
use crate::device::launch::ELEMENTWISE_BLOCK;
use crate::device::occupancy::{self, Occupancy};
use crate::device::{cuda, emu};
use crate::error::Result;
use crate::ops::norm::NORM_THREADS;

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// Instead of the build and devices, print for every compiled kernel and architecture its
    /// registers per thread, stack, spills, shared memory (static, and the dynamic stages of the
    /// pipelined convolutions), theoretical sm_90 occupancy, tensor-core instructions and
    /// asynchronous copies, as ptxas and cuobjdump reported them at build time.
    #[arg(long)]
    pub kernels: bool,
    /// With --kernels: print the report as JSON.
    #[arg(long, requires = "kernels")]
    pub json: bool,
}

/// The block sizes the launchers use: 256 threads for element-wise kernels, reductions and
/// convolutions (ops/launch.rs, ops/conv.rs), 128 for the per-plane CIN++ kernels (ops/norm.rs).
const LAUNCH_BLOCK_SIZES: [u32; 2] = [NORM_THREADS, ELEMENTWISE_BLOCK];

pub fn run(device_arg: DeviceChoice, args: &InfoArgs) -> Result<()> {
    match (args.kernels, args.json) {
        (false, _) => print_build_and_devices(device_arg),
        (true, false) => print_kernel_table(),
        (true, true) => print_kernel_json(),
    }
    Ok(())
}

fn print_build_and_devices(device_arg: DeviceChoice) {
    println!("dml {}", env!("CARGO_PKG_VERSION"));
    println!("build:");
    match cuda::NVCC_VERSION {
        Some(v) => {
            println!(
                "  CUDA kernels: compiled ({} modules)",
                cuda::CUDA_MODULES.len()
            );
            println!("  nvcc: {v}");
            println!("  architectures: {}", cuda::CUDA_ARCHS.join(", "));
        }
        None => {
            println!("  CUDA kernels: not compiled (nvcc was not found at build time; see README)")
        }
    }
    println!("  emulated kernels: {}", emu::kernel_names().count());
    println!("devices:");
    println!(
        "  cpu: {} threads",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    match cuda::device_count() {
        Ok(0) => println!("  cuda: driver present, no device"),
        Ok(n) => {
            for i in 0..n {
                match cuda::CudaDevice::open(i) {
                    Ok(d) => {
                        let cc = d
                            .compute_capability()
                            .map(|(a, b)| format!("sm_{a}{b}"))
                            .unwrap_or_default();
                        let mem = d
                            .total_memory()
                            .map(|m| m as f64 / (1u64 << 30) as f64)
                            .unwrap_or(0.0);
                        println!("  cuda:{i}: {} ({cc}, {mem:.1} GiB)", d.name());
                    }
                    Err(e) => println!("  cuda:{i}: unusable: {e}"),
                }
            }
        }
        Err(e) => println!("  cuda: none ({e})"),
    }
    match device_arg.open() {
        Ok(d) => println!("backend chosen (--device {device_arg}): {d}"),
        Err(e) => println!("backend chosen (--device {device_arg}): unavailable: {e}"),
    }
}

/// Why there is no report, when there is none.
fn no_kernels_reason() -> Option<&'static str> {
    KERNEL_RESOURCES
        .is_empty()
        .then_some("CUDA kernels: not compiled (nvcc was not found at build time; see README): no kernel report")
}

fn print_kernel_table() {
    if let Some(why) = no_kernels_reason() {
        println!("{why}");
        return;
    }
    println!(
        "kernels compiled by {}; resources as ptxas reported them",
        cuda::NVCC_VERSION.unwrap_or("nvcc")
    );
    match SASS_READER {
        Ok(tool) => println!("tensor-core (MMA) instructions counted in the SASS by {tool}"),
        Err(why) => println!("tensor-core instructions: unknown, the SASS was not read: {why}"),
    }
    println!(
        "occupancy: theoretical, on sm_90 (65536 registers allocated per warp in units of 256, \
         228 KB shared memory with 1 KB reserved per block, 2048 threads and 32 blocks per SM), \
         at {} threads per block (CIN++ per-plane kernels) and {} (all others)",
        LAUNCH_BLOCK_SIZES[0], LAUNCH_BLOCK_SIZES[1]
    );
    let width = KERNEL_RESOURCES
        .iter()
        .map(|k| k.kernel.len())
        .max()
        .unwrap_or(0);
    println!(
        "{:<12} {:<width$} {:<6} {:>4} {:>5} {:>11} {:>6} {:>14} {:>14}  tensor cores; async copies",
        "module",
        "kernel",
        "arch",
        "regs",
        "stack",
        "spill st/ld",
        "smem",
        format!("occ@{}", LAUNCH_BLOCK_SIZES[0]),
        format!("occ@{}", LAUNCH_BLOCK_SIZES[1]),
    );
    for k in KERNEL_RESOURCES {
        let [small, large] = sm90_occupancy(k).map(|o| o.map_or("-".into(), occupancy_cell));
        println!(
            "{:<12} {:<width$} {:<6} {:>4} {:>5} {:>11} {:>6} {:>14} {:>14}  {}",
            k.module,
            k.kernel,
            k.arch,
            k.registers,
            k.stack_bytes,
            format!("{}/{}", k.spill_store_bytes, k.spill_load_bytes),
            k.shared_bytes(),
            small,
            large,
            tensor_core_cell(k),
        );
    }
    let spilling: Vec<String> = KERNEL_RESOURCES
        .iter()
        .filter(|k| k.spills())
        .map(|k| format!("{} ({})", k.kernel, k.arch))
        .collect();
    if spilling.is_empty() {
        println!("no kernel spills registers");
    } else {
        println!("kernels that spill registers: {}", spilling.join(", "));
    }
}

/// Theoretical sm_90 occupancy at each launch block size; None for other architectures.
fn sm90_occupancy(k: &KernelResources) -> [Option<Occupancy>; 2] {
    LAUNCH_BLOCK_SIZES.map(|threads| {
        (k.arch == "sm_90").then(|| occupancy::sm90(k.registers, k.shared_bytes(), threads))
    })
}

fn occupancy_cell(o: Occupancy) -> String {
    format!("{:.0}% {}", 100.0 * o.fraction(), o.limiter.name())
}

fn tensor_core_cell(k: &KernelResources) -> String {
    let mma = match k.mma_instructions {
        None => "unknown".into(),
        Some(0) => "no".into(),
        Some(n) => format!("yes: {n} {}", k.mma_opcodes),
    };
    match k.async_copy_instructions {
        Some(n) if n > 0 => format!("{mma}; cp.async: {n} LDGSTS"),
        _ => mma,
    }
}

fn print_kernel_json() {
    let kernels: Vec<serde_json::Value> = KERNEL_RESOURCES.iter().map(kernel_json).collect();
    let report = serde_json::json!({
        "nvcc": cuda::NVCC_VERSION,
        "not_compiled": no_kernels_reason(),
        "sass_reader": SASS_READER.ok(),
        "sass_not_read": SASS_READER.err(),
        "occupancy_block_sizes": LAUNCH_BLOCK_SIZES,
        "kernels": kernels,
    });
    println!("{report:#}");
}

fn kernel_json(k: &KernelResources) -> serde_json::Value {
    let occupancy: Vec<serde_json::Value> = LAUNCH_BLOCK_SIZES
        .iter()
        .zip(sm90_occupancy(k))
        .filter_map(|(threads, o)| {
            o.map(|o| {
                serde_json::json!({
                    "block_threads": threads,
                    "blocks_per_sm": o.blocks_per_sm,
                    "warps_per_sm": o.warps_per_sm,
                    "fraction": o.fraction(),
                    "limiter": o.limiter.name(),
                })
            })
        })
        .collect();
    serde_json::json!({
        "module": k.module,
        "kernel": k.kernel,
        "arch": k.arch,
        "registers": k.registers,
        "stack_bytes": k.stack_bytes,
        "spill_store_bytes": k.spill_store_bytes,
        "spill_load_bytes": k.spill_load_bytes,
        "static_shared_bytes": k.static_shared_bytes,
        "dynamic_shared_bytes": fixed_dynamic_shared_bytes(k.kernel),
        "mma_instructions": k.mma_instructions,
        "async_copy_instructions": k.async_copy_instructions,
        "mma_opcodes": k.mma_opcodes,
        "sm90_occupancy": occupancy,
    })
}
