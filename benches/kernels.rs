//! Criterion over `dml bench`'s item families (reference/BENCH.md keys), on the cpu and, when a
//! GPU with compiled kernels is present, on cuda. The items, their inputs and their byte counts
//! are the library's (`dalemeetslangevin::bench`), so this and `dml bench` time the same work.
//!
//! `cargo bench --bench kernels -- conv_fwd` times only the keys containing `conv_fwd`; inputs
//! are made only for the items criterion actually runs.
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dalemeetslangevin::bench::{self, BenchConfig};
use dalemeetslangevin::device::CudaDevice;
use dalemeetslangevin::Device;

fn devices() -> Vec<Device> {
    let mut devices = vec![Device::Cpu];
    if let Ok(cuda) = CudaDevice::open(0) {
        devices.push(Device::Cuda(cuda));
    }
    devices
}

fn families(c: &mut Criterion) {
    for device in devices() {
        let cfg = BenchConfig::defaults(&device);
        for family in bench::families() {
            let items = bench::select(&cfg, &[family.name.to_string()])
                .unwrap_or_else(|e| panic!("listing family {}: {e}", family.name));
            let mut group = c.benchmark_group(format!("{}/{}", device_name(&device), family.name));
            // Whole network steps take seconds on a host: few samples.
            group.sample_size(10);
            group.warm_up_time(Duration::from_millis(500));
            group.measurement_time(Duration::from_secs(2));
            for item in &items {
                group.throughput(Throughput::Bytes(item.bytes as u64));
                // Criterion calls the routine once per sample: make the inputs only once.
                let mut prepared = None;
                group.bench_function(&item.key, |b| {
                    let run = prepared.get_or_insert_with(|| {
                        item.prepare()
                            .unwrap_or_else(|e| panic!("preparing {}: {e}", item.key))
                    });
                    b.iter(|| {
                        run().unwrap_or_else(|e| panic!("{}: {e}", item.key));
                        device.synchronize().expect("synchronize");
                    });
                });
            }
            group.finish();
        }
    }
}

fn device_name(device: &Device) -> &'static str {
    if device.is_host() {
        "cpu"
    } else {
        "cuda"
    }
}

criterion_group!(benches, families);
criterion_main!(benches);
