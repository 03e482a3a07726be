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

/// Network traces, recorded once per preset and only for the presets whose items `--items`
/// can select: tracing the full DDPM++ (106.6M parameters) takes far longer than the tiny
/// item that was asked for.
struct Traces {
    traced: HashMap<Preset, NetworkTrace>,
    wanted: Vec<String>,
}

impl Traces {
    fn new(wanted: &[String]) -> Self {
        Self {
            traced: HashMap::new(),
            wanted: wanted.to_vec(),
        }
    }

    fn get(&mut self, preset: Preset) -> Result<&NetworkTrace> {
        if let std::collections::hash_map::Entry::Vacant(slot) = self.traced.entry(preset) {
            slot.insert(NetworkTrace::of(preset)?);
        }
        Ok(&self.traced[&preset])
    }

    /// The traces of those of `presets` whose items, keyed `{root}/{preset}/...` with `root`
    /// one of `roots`, the family named `family` could be asked for.
    fn selectable(
        &mut self,
        family: &str,
        roots: &[&str],
        presets: &[Preset],
    ) -> Result<Vec<&NetworkTrace>> {
        let chosen: Vec<Preset> = presets
            .iter()
            .copied()
            .filter(|&p| self.may_select(family, roots, p))
            .collect();
        for &p in &chosen {
            self.get(p)?;
        }
        Ok(chosen.iter().map(|p| &self.traced[p]).collect())
    }

    /// Whether `--items` selects any item of `preset`: when it names nothing or the family,
    /// or a key under or above `{root}/{preset}/` (a family's name is not a key prefix, as in
    /// [`select`]).
    fn may_select(&self, family: &str, roots: &[&str], preset: Preset) -> bool {
        self.wanted.is_empty()
            || self.wanted.iter().any(|w| {
                if is_family_name(w) {
                    return w == family;
                }
                roots.iter().any(|root| {
                    let prefix = format!("{root}/{}/", preset.name());
                    prefix.starts_with(w.as_str()) || w.starts_with(&prefix)
                })
            })
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
            items: |cfg, t| {
                let traces = t.selectable("sampler", items_sampler::KEY_ROOTS, &PRESETS)?;
                Ok(items_sampler::items(cfg, &traces))
            },
        },
        Family {
            name: "train",
            key_roots: items_train::KEY_ROOTS,
            profiled_by_default: true,
            items: |cfg, t| {
                let traces = t.selectable("train", items_train::KEY_ROOTS, &PRESETS)?;
                Ok(items_train::items(cfg, &traces))
            },
        },
        // DDPM++'s whole steps, under the same key roots as NCSN's. Not profiled unless named:
        // the full preset's forward pass (106.6M parameters at 3x32x32) would take the emulator's
        // profiler hours.
        Family {
            name: "ddpmpp",
            key_roots: &["train_step/ddpmpp", "sampler_step/ddpmpp"],
            profiled_by_default: false,
            items: |cfg, t| {
                let roots = [items_train::KEY_ROOTS, items_sampler::KEY_ROOTS].concat();
                let traces = t.selectable("ddpmpp", &roots, &DDPMPP_PRESETS)?;
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
    let mut traces = Traces::new(wanted);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn traces(wanted: &[&str]) -> Traces {
        Traces::new(&wanted.iter().map(|w| w.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn only_presets_whose_items_can_be_selected_are_traced() {
        let roots = ["train_step", "sampler_step"];
        let (tiny, full) = (Preset::DdpmppTiny, Preset::Ddpmpp);
        let selects = |wanted: &[&str], preset| traces(wanted).may_select("ddpmpp", &roots, preset);
        // Nothing named, the family named, or a key root: every preset.
        for wanted in [
            &[][..],
            &["ddpmpp"],
            &["sampler_step"],
            &["train_step/ddpmpp"],
        ] {
            assert!(selects(wanted, tiny) && selects(wanted, full), "{wanted:?}");
        }
        // The tiny network's item alone, or its preset's keys: not the full network.
        for wanted in [
            "train_step/ddpmpp_tiny/3x32x32/b8",
            "sampler_step/ddpmpp_tiny",
        ] {
            assert!(selects(&[wanted], tiny), "{wanted}");
            assert!(!selects(&[wanted], full), "{wanted}");
        }
        assert!(selects(&["train_step/ddpmpp/3x32x32/b8"], full));
        assert!(!selects(&["train_step/ddpmpp/3x32x32/b8"], tiny));
        // Another family's name selects nothing of this one.
        assert!(!selects(&["train"], tiny) && !selects(&["train"], full));
    }
}
