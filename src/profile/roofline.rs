//! The roofline model `dml profile` predicts GPU times with (docs/DESIGN.md section 9).
//!
//! A launch takes its launch overhead plus the longest of the times its measured work needs at
//! each peak rate: DRAM bytes at HBM bandwidth, L2 sectors at L2 bandwidth, shared-memory
//! wavefronts at one per SM per clock, SIMT FLOPs at the fp32 peak, tensor FLOPs at the dense
//! TF32 peak. A launch of fewer blocks than the GPU has SMs gets that fraction of every rate.
//! The limit that sets the time is named. What the model leaves out (latency, occupancy, the
//! arithmetic of kernels whose FLOPs are not counted, tails of partial waves) makes it a lower
//! bound until it is calibrated against a GPU, which has not been done yet.
use serde_json::{json, Value};

use crate::device::emu::EmuProfileStats;
use crate::device::launch::LaunchGeometry;

/// The peak rates of one GPU.
#[derive(Clone, Copy, Debug)]
pub struct GpuModel {
    pub name: &'static str,
    pub sms: u32,
    pub clock_hz: f64,
    pub hbm_bytes_per_s: f64,
    pub l2_bytes_per_s: f64,
    pub l2_capacity_bytes: f64,
    pub fp32_flops_per_s: f64,
    pub tf32_flops_per_s: f64,
    pub bf16_flops_per_s: f64,
    pub launch_overhead_s: f64,
}

/// H100 SXM5 (NVIDIA's datasheet: 132 SMs at 1.98 GHz boost, 3.35 TB/s HBM3, 50 MB L2, 67 fp32
/// TFLOP/s, 495 dense TF32 and 989 dense BF16 TFLOP/s). L2 bandwidth is not published: 7 TB/s is assumed. Launch
/// overhead: 3 us between back-to-back launches without CUDA graphs.
pub const H100_SXM: GpuModel = GpuModel {
    name: "H100",
    sms: 132,
    clock_hz: 1.98e9,
    hbm_bytes_per_s: 3.35e12,
    l2_bytes_per_s: 7.0e12,
    l2_capacity_bytes: 50.0 * 1024.0 * 1024.0,
    fp32_flops_per_s: 66.9e12,
    tf32_flops_per_s: 494.7e12,
    bf16_flops_per_s: 989.4e12,
    launch_overhead_s: 3e-6,
};

/// H200 SXM: the H100's GH100 at the same clocks, with 4.8 TB/s HBM3e.
pub const H200: GpuModel = GpuModel {
    name: "H200",
    hbm_bytes_per_s: 4.8e12,
    ..H100_SXM
};

/// The GPUs every prediction is made for, in table order.
pub const MODELS: [GpuModel; 2] = [H100_SXM, H200];

/// What sets a launch's predicted time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Limit {
    Launch,
    Dram,
    L2,
    Shared,
    Fp32,
    Tensor,
}

impl Limit {
    pub fn name(self) -> &'static str {
        match self {
            Limit::Launch => "launch",
            Limit::Dram => "DRAM",
            Limit::L2 => "L2",
            Limit::Shared => "shared",
            Limit::Fp32 => "fp32",
            Limit::Tensor => "tensor",
        }
    }
}

/// One launch's predicted time on one GPU.
#[derive(Clone, Copy, Debug)]
pub struct Prediction {
    pub seconds: f64,
    pub limit: Limit,
    /// The launch's DRAM bytes exceed the L2: sectors evicted and read again are not counted,
    /// so the DRAM term is a lower bound.
    pub exceeds_l2: bool,
}

/// Bytes one sector moves.
const SECTOR_BYTES: f64 = 32.0;

pub fn dram_bytes(s: &EmuProfileStats) -> f64 {
    (s.dram_read_sectors + s.dram_write_sectors) as f64 * SECTOR_BYTES
}

/// Sectors between the SMs and the L2: every sector of every load and store, one per atomic.
pub fn l2_bytes(s: &EmuProfileStats) -> f64 {
    (s.global_load_sectors + s.global_store_sectors + s.atomics) as f64 * SECTOR_BYTES
}

pub fn predict(model: &GpuModel, geometry: &LaunchGeometry, s: &EmuProfileStats) -> Prediction {
    let blocks: f64 = geometry.grid.iter().map(|&g| g as f64).product();
    let fill = (blocks / model.sms as f64).min(1.0);
    let terms = [
        (Limit::Dram, dram_bytes(s) / model.hbm_bytes_per_s),
        (Limit::L2, l2_bytes(s) / model.l2_bytes_per_s),
        (
            Limit::Shared,
            s.shared_wavefronts as f64 / (model.sms as f64 * model.clock_hz),
        ),
        (Limit::Fp32, s.simt_flops as f64 / model.fp32_flops_per_s),
        (
            Limit::Tensor,
            (s.tensor_flops - s.bf16_tensor_flops) as f64 / model.tf32_flops_per_s
                + s.bf16_tensor_flops as f64 / model.bf16_flops_per_s,
        ),
    ];
    let (limit, busy) =
        terms
            .iter()
            .map(|&(l, t)| (l, t / fill))
            .fold(
                (Limit::Launch, 0.0),
                |best, t| if t.1 > best.1 { t } else { best },
            );
    let limit = if busy < model.launch_overhead_s {
        Limit::Launch
    } else {
        limit
    };
    Prediction {
        seconds: model.launch_overhead_s + busy,
        limit,
        exceeds_l2: dram_bytes(s) > model.l2_capacity_bytes,
    }
}

/// The model's constants, for the JSON report.
pub fn describe(model: &GpuModel) -> Value {
    json!({
        "name": model.name,
        "sms": model.sms,
        "clock_hz": model.clock_hz,
        "hbm_bytes_per_s": model.hbm_bytes_per_s,
        "l2_bytes_per_s": model.l2_bytes_per_s,
        "l2_capacity_bytes": model.l2_capacity_bytes,
        "fp32_flops_per_s": model.fp32_flops_per_s,
        "tf32_flops_per_s": model.tf32_flops_per_s,
        "bf16_flops_per_s": model.bf16_flops_per_s,
        "launch_overhead_s": model.launch_overhead_s,
    })
}
