//! `dml info`: what this build can do and what this machine has.
use super::DeviceChoice;
use crate::device::{cuda, emu};
use crate::error::Result;

pub fn run(device_arg: DeviceChoice) -> Result<()> {
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
    Ok(())
}
