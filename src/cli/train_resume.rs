//! `dml train --resume`: which options a resumed run may change, and the refusal of those that
//! would contradict it. A resumed run keeps its own settings; an option given on the command line
//! that names a different value is an error, not silently ignored, and one that names the run's
//! own value is accepted. The step count, checkpoint interval, learning rate, warm-up and the end
//! of the decay may change (the last three with a note: from then on the run differs from an
//! uninterrupted one).
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::train::ResumeChanges;

use super::train::TrainArgs;

/// The changes `args` asks of the run in `ckpt`, or the error listing every conflicting option.
pub fn resume_changes(args: &TrainArgs, ckpt: &Checkpoint) -> Result<ResumeChanges> {
    let mut conflicts: Vec<String> = settings(args)
        .into_iter()
        .filter(|s| args.was_given(s.flag))
        .filter_map(|s| s.conflict(ckpt))
        .collect();
    if let Some(recipe) = args.recipe.filter(|_| args.was_given("recipe")) {
        conflicts.push(format!(
            "--recipe {recipe}: a recipe sets a new run's defaults; a resumed run keeps its own"
        ));
    }
    if !conflicts.is_empty() {
        return Err(Error::invalid(format!(
            "--resume continues the run with its own settings, and these options contradict \
             it:\n  {}\n  drop them, or start a new run in another --out",
            conflicts.join("\n  ")
        )));
    }
    let given = |flag: &str| args.was_given(flag);
    let changes = ResumeChanges {
        steps: args.steps,
        checkpoint_every: given("checkpoint_every").then_some(args.checkpoint_every),
        lr: given("lr").then_some(args.lr),
        warmup_steps: given("warmup").then_some(args.warmup),
        lr_decay_steps: args.lr_decay_steps,
        precision: args.precision,
    };
    note_change(
        ckpt,
        "--lr",
        "train.lr",
        changes.lr.map(|v| format!("{v:?}")),
    );
    note_change(
        ckpt,
        "--warmup",
        "train.warmup",
        changes.warmup_steps.map(|v| v.to_string()),
    );
    note_change(
        ckpt,
        "--lr-decay-steps",
        "train.lr_decay_steps",
        changes.lr_decay_steps.map(|v| v.to_string()),
    );
    Ok(changes)
}

fn note_change(ckpt: &Checkpoint, flag: &str, key: &str, new: Option<String>) {
    let old = ckpt.metadata.get(key);
    if let Some(new) = new.filter(|n| old.is_none_or(|o| o != n)) {
        eprintln!(
            "note: {flag} {new} replaces the run's {} from here on; the run now differs from an \
             uninterrupted one",
            old.map_or("value", String::as_str)
        );
    }
}

/// One option a resumed run may not change: its clap id, the checkpoint keys that hold the run's
/// value (the first present is used), and the value the command line gave.
struct Setting {
    flag: &'static str,
    keys: &'static [&'static str],
    given: Given,
}

/// A value as the command line gave it; numbers compare at the precision the checkpoint stores
/// them in (f32 settings as f32), names and counts as text.
enum Given {
    Name(String),
    F32(f32),
    F64(f64),
}

impl Setting {
    /// The conflict this option makes with the run, if any, described for the user.
    fn conflict(&self, ckpt: &Checkpoint) -> Option<String> {
        let option = format!("--{}", self.flag.replace('_', "-"));
        let given = match &self.given {
            Given::Name(n) => n.clone(),
            Given::F32(v) => v.to_string(),
            Given::F64(v) => v.to_string(),
        };
        let Some(run) = self.keys.iter().find_map(|k| ckpt.metadata.get(*k)) else {
            return Some(format!("{option} {given}: the run has no such setting"));
        };
        let same = match &self.given {
            Given::Name(n) => n == run,
            Given::F32(v) => run.parse::<f32>().is_ok_and(|r| r == *v),
            Given::F64(v) => run.parse::<f64>().is_ok_and(|r| r == *v),
        };
        (!same).then(|| format!("{option} {given} (the run's: {run})"))
    }
}

/// Every option that is part of the run's identity, with the value `args` holds for it.
fn settings(args: &TrainArgs) -> Vec<Setting> {
    use Given::{Name, F32, F64};
    let setting = |flag, keys, given| Setting { flag, keys, given };
    let count = |v: Option<usize>| Name(v.map_or(String::new(), |v| v.to_string()));
    vec![
        setting("preset", &["net.preset"], Name(args.preset.name().into())),
        setting(
            "diffusion",
            &["diffusion"],
            Name(args.diffusion.name().into()),
        ),
        setting(
            "schedule",
            &["schedule.shape", "additive.shape"],
            Name(args.schedule.map_or("", |s| s.name()).into()),
        ),
        setting("levels", &["net.levels"], count(args.levels)),
        setting(
            "sigma_min",
            &["schedule.sigma_min", "additive.sigma_min"],
            F64(args.sigma_min.unwrap_or(f64::NAN)),
        ),
        setting(
            "sigma_max",
            &["schedule.sigma_max", "additive.sigma_max"],
            F64(args.sigma_max.unwrap_or(f64::NAN)),
        ),
        setting(
            "weighting",
            &["loss.weighting"],
            Name(args.weighting.name().into()),
        ),
        setting(
            "parameterisation",
            &["parameterisation"],
            Name(args.parameterisation.name().into()),
        ),
        setting("target", &["loss.target"], Name(args.target.name().into())),
        setting("range_lo", &["data.range.lo"], F32(args.range_lo)),
        setting("range_hi", &["data.range.hi"], F32(args.range_hi)),
        setting("batch", &["train.batch"], count(Some(args.batch))),
        setting(
            "optimizer",
            &["train.optimizer"],
            Name(args.optimizer.name().into()),
        ),
        setting(
            "weight_decay",
            &["train.weight_decay"],
            F32(args.weight_decay),
        ),
        setting("clip", &["train.clip"], F32(args.clip)),
        setting(
            "lr_decay",
            &["train.lr_decay"],
            Name(args.lr_decay.name().into()),
        ),
        setting("lr_final", &["train.lr_final"], F32(args.lr_final)),
        setting("ema", &["train.ema"], F32(args.ema)),
        setting(
            "ema_warmup",
            &["train.ema_warmup"],
            Name(args.ema_warmup.to_string()),
        ),
        setting("seed", &["train.seed"], Name(args.seed.to_string())),
    ]
}
