//! `dml profile`: what each kernel of a `dml bench` item would cost on an H100 and an H200,
//! measured on the profiling emulator (docs/DESIGN.md section 8).
//!
//! An item's inputs are made as for `dml bench`, then one call of it runs with
//! [`crate::device::profile::record`] on: every launch it makes is measured
//! (kernels/emu/emu_profiler.h) and its time predicted by the roofline model of [`roofline`].
//! Launches are summed per kernel, and the item's total is the per-step total of the sampler and
//! training steps.
pub mod report;
pub mod roofline;

use std::collections::BTreeMap;

use crate::bench::Item;
use crate::device::emu::EmuProfileStats;
use crate::device::profile::{record, LaunchProfile};
use crate::error::Result;
use roofline::{Limit, MODELS};

/// One kernel's launches within an item, summed.
#[derive(Clone, Debug)]
pub struct KernelProfile {
    pub kernel: String,
    pub launches: usize,
    pub stats: EmuProfileStats,
    /// Predicted seconds on each of [`MODELS`].
    pub seconds: [f64; MODELS.len()],
    /// On the last model (H200): the limit behind most of the predicted time.
    pub limit: Limit,
    /// Some launch's DRAM traffic exceeds the L2 (its DRAM term is then a lower bound).
    pub exceeds_l2: bool,
}

/// One item profiled: its kernels in order of first launch.
#[derive(Clone, Debug)]
pub struct ItemProfile {
    pub key: String,
    pub kernels: Vec<KernelProfile>,
}

impl ItemProfile {
    pub fn launches(&self) -> usize {
        self.kernels.iter().map(|k| k.launches).sum()
    }

    /// Predicted seconds of the whole item on each of [`MODELS`].
    pub fn seconds(&self) -> [f64; MODELS.len()] {
        let mut total = [0.0; MODELS.len()];
        for k in &self.kernels {
            for (t, s) in total.iter_mut().zip(k.seconds) {
                *t += s;
            }
        }
        total
    }

    /// The item's launch overhead alone on each model.
    pub fn launch_seconds(&self) -> [f64; MODELS.len()] {
        MODELS.map(|m| m.launch_overhead_s * self.launches() as f64)
    }
}

/// Makes `item`'s inputs (not profiled), then profiles one call of it.
pub fn profile_item(item: &Item) -> Result<ItemProfile> {
    let mut run = item.prepare()?;
    let ((), launches) = record(&mut run)?;
    Ok(ItemProfile {
        key: item.key.clone(),
        kernels: per_kernel(&launches),
    })
}

/// Sums launches of the same kernel, in order of first launch.
pub fn per_kernel(launches: &[LaunchProfile]) -> Vec<KernelProfile> {
    let mut order: Vec<KernelProfile> = Vec::new();
    let mut time_by_limit: Vec<BTreeMap<Limit, f64>> = Vec::new();
    for l in launches {
        let at = match order.iter().position(|k| k.kernel == l.kernel) {
            Some(at) => at,
            None => {
                order.push(KernelProfile {
                    kernel: l.kernel.clone(),
                    launches: 0,
                    stats: EmuProfileStats::default(),
                    seconds: [0.0; MODELS.len()],
                    limit: Limit::Launch,
                    exceeds_l2: false,
                });
                time_by_limit.push(BTreeMap::new());
                order.len() - 1
            }
        };
        let k = &mut order[at];
        k.launches += 1;
        add(&mut k.stats, &l.stats);
        for (i, model) in MODELS.iter().enumerate() {
            let p = roofline::predict(model, &l.geometry, &l.stats);
            k.seconds[i] += p.seconds;
            k.exceeds_l2 |= p.exceeds_l2;
            if i == MODELS.len() - 1 {
                *time_by_limit[at].entry(p.limit).or_default() += p.seconds;
            }
        }
    }
    for (k, by_limit) in order.iter_mut().zip(time_by_limit) {
        k.limit = by_limit
            .into_iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(Limit::Launch, |(l, _)| l);
    }
    order
}

/// `total += s`, counts added and the worst conflict degree kept.
fn add(total: &mut EmuProfileStats, s: &EmuProfileStats) {
    let t = total;
    t.global_load_requests += s.global_load_requests;
    t.global_store_requests += s.global_store_requests;
    t.global_load_bytes += s.global_load_bytes;
    t.global_store_bytes += s.global_store_bytes;
    t.global_load_sectors += s.global_load_sectors;
    t.global_store_sectors += s.global_store_sectors;
    t.global_load_min_sectors += s.global_load_min_sectors;
    t.global_store_min_sectors += s.global_store_min_sectors;
    t.dram_read_sectors += s.dram_read_sectors;
    t.dram_write_sectors += s.dram_write_sectors;
    t.shared_load_requests += s.shared_load_requests;
    t.shared_store_requests += s.shared_store_requests;
    t.shared_wavefronts += s.shared_wavefronts;
    t.shared_ideal_wavefronts += s.shared_ideal_wavefronts;
    t.shared_max_ways = t.shared_max_ways.max(s.shared_max_ways);
    t.warp_accesses += s.warp_accesses;
    t.divergent_warp_accesses += s.divergent_warp_accesses;
    t.simt_flops += s.simt_flops;
    t.tensor_flops += s.tensor_flops;
    t.bf16_tensor_flops += s.bf16_tensor_flops;
    t.atomics += s.atomics;
    t.block_barriers += s.block_barriers;
    t.warp_barriers += s.warp_barriers;
    t.unclassified_accesses += s.unclassified_accesses;
}

/// Fraction of the sectors moved that carried requested bytes (1 = fully coalesced); `None`
/// when there were no such accesses.
pub fn efficiency(min_sectors: u64, sectors: u64) -> Option<f64> {
    (sectors > 0).then(|| min_sectors as f64 / sectors as f64)
}

/// Shared-memory wavefronts beyond one per request phase, as a fraction of those.
pub fn extra_wavefronts(s: &EmuProfileStats) -> Option<f64> {
    (s.shared_ideal_wavefronts > 0).then(|| {
        (s.shared_wavefronts - s.shared_ideal_wavefronts) as f64 / s.shared_ideal_wavefronts as f64
    })
}

/// Fraction of warp-level memory accesses executed by only some lanes of the warp.
pub fn divergence(s: &EmuProfileStats) -> Option<f64> {
    (s.warp_accesses > 0).then(|| s.divergent_warp_accesses as f64 / s.warp_accesses as f64)
}
