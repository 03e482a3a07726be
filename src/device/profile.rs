//! Recording what the profiling emulator measures (docs/DESIGN.md section 8): while
//! [`record`] runs a closure, every `emu` launch that closure makes on this thread goes to the
//! profiling build of its kernel instead, and its measures are kept, in launch order.
//!
//! The recording is per thread, like the launch counter in [`super::launch`], so tests on other
//! threads neither add to it nor are slowed by it.
use std::cell::RefCell;

use super::emu::EmuProfileStats;
use super::launch::LaunchGeometry;
use crate::error::{Error, Result};

/// One profiled launch.
#[derive(Clone, Debug)]
pub struct LaunchProfile {
    pub kernel: String,
    pub geometry: LaunchGeometry,
    pub stats: EmuProfileStats,
}

thread_local! {
    static RECORDING: RefCell<Option<Vec<LaunchProfile>>> = const { RefCell::new(None) };
}

/// Runs `f` with profiling on for this thread's `emu` launches and returns its result with the
/// launches it made. Recordings do not nest.
pub fn record<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, Vec<LaunchProfile>)> {
    RECORDING.with(|r| {
        let mut r = r.borrow_mut();
        if r.is_some() {
            return Err(Error::invalid(
                "profile: a recording is already running on this thread",
            ));
        }
        *r = Some(Vec::new());
        Ok(())
    })?;
    let stop = Stop;
    let result = f();
    let launches = RECORDING
        .with(|r| r.borrow_mut().take())
        .unwrap_or_default();
    drop(stop);
    Ok((result?, launches))
}

/// Ends the recording even when the recorded closure panics, so the thread can record again.
struct Stop;

impl Drop for Stop {
    fn drop(&mut self) {
        RECORDING.with(|r| r.borrow_mut().take());
    }
}

/// Whether this thread's `emu` launches are being profiled.
pub(crate) fn recording() -> bool {
    RECORDING.with(|r| r.borrow().is_some())
}

pub(crate) fn push(profile: LaunchProfile) {
    RECORDING.with(|r| {
        if let Some(launches) = r.borrow_mut().as_mut() {
            launches.push(profile);
        }
    });
}
