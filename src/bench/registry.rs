//! The item families and the choice of items by key prefix (`dml bench --items`).
use std::collections::HashMap;

use super::network_trace::NetworkTrace;
use super::{
    items_conv, items_elementwise, items_gbm, items_inception, items_norm, items_sampler,
    items_train, BenchConfig, Item,
};
use crate::error::{Error, Result};
use crate::nn::Preset;

/// One kind of work: its name (usable in `--items`), the prefixes of its keys (the first
/// component, or more where two families share it), and how its items are listed.
pub struct Family {
    pub name: &'static str,
    pub key_roots: &'static [&'static str],
    /// Whether `dml profile` (every kernel through the emulator's profiler) includes it when no
    /// item is named. Not the FID Inception: its 253 launches over grids up to 299x299 took
    /// 12.6 minutes on the profiler at one image (2 shared cores), as long as every other item
    /// together; `--items inception` still profiles it.
    pub profiled_by_default: bool,
    items: fn(&BenchConfig, &mut Traces) -> Result<Vec<Item>>,
}

/// BENCH.md's presets, in its order.
const PRESETS: [Preset; 2] = [Preset::Paper, Preset::Tiny];
/// The DDPM++ presets, on CIFAR-10's 3x32x32 images.
const DDPMPP_PRESETS: [Preset; 2] = [Preset::DdpmppTiny, Preset::Ddpmpp];

/// Network traces, recorded once per preset and only when a chosen family needs one.
#[derive(Default)]
struct Traces(HashMap<Preset, NetworkTrace>);

impl Traces {
    fn get(&mut self, preset: Preset) -> Result<&NetworkTrace> {
        if let std::collections::hash_map::Entry::Vacant(slot) = self.0.entry(preset) {
            slot.insert(NetworkTrace::of(preset)?);
        }
        Ok(&self.0[&preset])
    }

    fn presets(&mut self, presets: &[Preset]) -> Result<Vec<&NetworkTrace>> {
        for &p in presets {
            self.get(p)?;
        }
        Ok(presets.iter().map(|p| &self.0[p]).collect())
    }
}

/// Every family, in table order.
pub fn families() -> Vec<Family> {
    vec![
        Family {
            name: "elementwise",
            key_roots: items_elementwise::KEY_ROOTS,
            profiled_by_default: true,
            items: |cfg, _| Ok(items_elementwise::items(cfg)),
        },
        Family {
            name: "conv",
            key_roots: items_conv::KEY_ROOTS,
            profiled_by_default: true,
            items: |cfg, t| Ok(items_conv::items(cfg, t.get(Preset::Paper)?)),
        },
        Family {
            name: "norm",
            key_roots: items_norm::KEY_ROOTS,
            profiled_by_default: true,
            items: |cfg, t| Ok(items_norm::items(cfg, t.get(Preset::Paper)?)),
        },
        Family {
            name: "gbm",
            key_roots: items_gbm::KEY_ROOTS,
            profiled_by_default: true,
            items: |cfg, _| Ok(items_gbm::items(cfg)),
        },
        Family {
            name: "sampler",
            key_roots: items_sampler::KEY_ROOTS,
            profiled_by_default: true,
            items: |cfg, t| Ok(items_sampler::items(cfg, &t.presets(&PRESETS)?)),
        },
        Family {
            name: "train",
            key_roots: items_train::KEY_ROOTS,
            profiled_by_default: true,
            items: |cfg, t| Ok(items_train::items(cfg, &t.presets(&PRESETS)?)),
        },
        // DDPM++'s whole steps, under the same key roots as NCSN's. Not profiled unless named:
        // the full preset's forward pass (106.6M parameters at 3x32x32) would take the emulator's
        // profiler hours.
        Family {
            name: "ddpmpp",
            key_roots: &["train_step/ddpmpp", "sampler_step/ddpmpp"],
            profiled_by_default: false,
            items: |cfg, t| {
                let traces = t.presets(&DDPMPP_PRESETS)?;
                let mut items = items_train::items(cfg, &traces);
                items.extend(items_sampler::items(cfg, &traces));
                Ok(items)
            },
        },
        Family {
            name: "inception",
            key_roots: items_inception::KEY_ROOTS,
            profiled_by_default: false,
            items: |cfg, _| Ok(items_inception::items(cfg)),
        },
    ]
}

impl Family {
    /// Whether a `--items` entry can select something of this family: the family's name, or a
    /// prefix of (or a key under) one of its key roots. A family's name selects that family
    /// alone: `train` is NCSN's training steps, not DDPM++'s `train_step/ddpmpp...` too (which
    /// `dml profile`, naming its default families, must not run).
    fn may_match(&self, wanted: &str) -> bool {
        if is_family_name(wanted) {
            return wanted == self.name;
        }
        self.key_roots
            .iter()
            .any(|root| root.starts_with(wanted) || wanted.starts_with(root))
    }
}

fn is_family_name(wanted: &str) -> bool {
    families().iter().any(|f| f.name == wanted)
}

fn selects(wanted: &str, family: &Family, item: &Item) -> bool {
    if is_family_name(wanted) {
        wanted == family.name
    } else {
        item.key.starts_with(wanted)
    }
}

/// The items whose key starts with one of `wanted` (or whose family is named there), in table
/// order; every item when `wanted` is empty. An entry that selects nothing is an error.
pub fn select(cfg: &BenchConfig, wanted: &[String]) -> Result<Vec<Item>> {
    let mut traces = Traces::default();
    let mut chosen = Vec::new();
    let mut used = vec![false; wanted.len()];
    for family in families() {
        if !wanted.is_empty() && !wanted.iter().any(|w| family.may_match(w)) {
            continue;
        }
        for item in (family.items)(cfg, &mut traces)? {
            let hits: Vec<usize> = (0..wanted.len())
                .filter(|&i| selects(&wanted[i], &family, &item))
                .collect();
            hits.iter().for_each(|&i| used[i] = true);
            if wanted.is_empty() || !hits.is_empty() {
                chosen.push(item);
            }
        }
    }
    if let Some(i) = used.iter().position(|u| !u) {
        let names: Vec<&str> = families().iter().map(|f| f.name).collect();
        return Err(Error::invalid(format!(
            "bench: no item matches '{}' (families: {}; `dml bench --list` lists every key)",
            wanted[i],
            names.join(", ")
        )));
    }
    Ok(chosen)
}
