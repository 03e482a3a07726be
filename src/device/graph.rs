//! Work captured once and replayed as one launch (docs/DESIGN.md section 10): a CUDA graph on
//! `cuda`, and the same contract kept by the emulator on `emu`, so that the tests run the code
//! path a GPU runs and fail where a GPU's replay would go wrong.
//!
//! [`capture`] runs a body in capture mode: its kernels are recorded with the arguments they were
//! given, not run, and the memory it allocates belongs to the graph. [`Graph::replay`] runs the
//! recorded launches again. A scalar argument is therefore fixed at capture: whatever changes from
//! one replay to the next must be read by the kernels from memory that outlives the graph and is
//! written in place between replays ([`crate::tensor::Tensor::write`]).
//!
//! What a replay could not repeat makes the capture fail with the reason, and the caller runs the
//! body directly instead: a copy between host and device in the body (CUDA refuses a pageable
//! copy during capture; the emulator's copies are host code, which a replay would skip), a host
//! access to emulated device memory, freeing memory the body did not allocate (each replay would
//! free it again), keeping memory it allocated past the body, or any error of the body itself.
use std::cell::RefCell;
use std::collections::HashSet;

use cudarc::driver::CudaGraph;

use super::launch::{self, param_ptrs, LaunchGeometry};
use super::{Device, EmuSchedule};
use crate::error::{Error, Result};

/// What a capture gave.
pub enum Captured {
    Graph(Graph),
    /// Why the body cannot be replayed; it has not run, and runs directly instead.
    Unavailable(String),
}

/// A captured body, replayed by [`Graph::replay`].
pub struct Graph {
    replay: Replay,
}

enum Replay {
    Cuda(CudaGraph),
    Emu(EmuGraph),
}

/// The emulator's graph: the launches in order, with the fills of the buffers the body allocated
/// before them, and that memory, kept here so that the recorded pointers into it stay valid (a
/// CUDA graph owns its allocations the same way).
struct EmuGraph {
    work: Vec<Recorded>,
    _owned: Vec<Vec<f32>>,
}

enum Recorded {
    Launch(RecordedLaunch),
    /// A buffer allocated in the body, filled as its allocation filled it: zeros where CUDA
    /// runs a memset node at each replay, NaN where the emulator poisons memory a kernel is to
    /// overwrite (so an element a kernel skips shows at every replay, not only the first).
    Fill {
        at: usize,
        len: usize,
        value: f32,
    },
}

struct RecordedLaunch {
    kernel: String,
    geometry: LaunchGeometry,
    schedule: EmuSchedule,
    /// The 8-byte parameter slots: host addresses of buffers and scalar bits, as launched.
    slots: Vec<u64>,
}

/// Captures the work `body` issues on `device` as a graph. `body` has not run when this returns:
/// replay the graph to run it, or, when capture is unavailable, call `body` directly.
pub fn capture(device: &Device, body: &mut dyn FnMut() -> Result<()>) -> Captured {
    match device {
        Device::Cpu => Captured::Unavailable("the cpu backend runs Rust code, not kernels".into()),
        Device::Emu(_) => capture_emu(body),
        Device::Cuda(dev) => {
            if let Err(e) = dev.begin_capture() {
                return Captured::Unavailable(e.to_string());
            }
            let ran = body();
            let ended = dev.end_capture();
            let why = match (ran, ended) {
                (Ok(()), Ok(graph)) => {
                    return Captured::Graph(Graph {
                        replay: Replay::Cuda(graph),
                    })
                }
                (Err(e), _) => format!("during capture: {e}"),
                (Ok(()), Err(e)) => e.to_string(),
            };
            dev.forget_failed_capture_errors();
            Captured::Unavailable(why)
        }
    }
}

impl Graph {
    /// Runs the captured work once more, on the device's stream (one launch on `cuda`).
    ///
    /// # Safety
    /// Every buffer the body used that it did not allocate (its inputs, outputs and parameters)
    /// must still be alive at the address it had at capture: written in place since, never
    /// reallocated or dropped.
    pub unsafe fn replay(&self) -> Result<()> {
        launch::count_launch();
        match &self.replay {
            Replay::Cuda(graph) => graph
                .launch()
                .map_err(|e| Error::Cuda(format!("replaying a CUDA graph: {e:?}"))),
            Replay::Emu(graph) => {
                for w in &graph.work {
                    match w {
                        Recorded::Launch(l) => {
                            let mut slots = l.slots.clone();
                            let mut params = param_ptrs(&mut slots);
                            super::emu::launch(&l.kernel, l.geometry, l.schedule, &mut params)?;
                        }
                        // SAFETY: `at` is the start of a buffer of `len` floats the graph owns.
                        &Recorded::Fill { at, len, value } => unsafe {
                            std::slice::from_raw_parts_mut(at as *mut f32, len).fill(value)
                        },
                    }
                }
                Ok(())
            }
        }
    }

    /// Kernel launches one replay makes (for reports; a CUDA graph is one launch to the driver).
    pub fn kernels(&self) -> Option<usize> {
        match &self.replay {
            Replay::Cuda(_) => None,
            Replay::Emu(graph) => Some(
                graph
                    .work
                    .iter()
                    .filter(|w| matches!(w, Recorded::Launch(_)))
                    .count(),
            ),
        }
    }
}

/// Runs a body the same way at every call: directly at the first, captured at the second and
/// replayed from then on (docs/DESIGN.md section 10). The first call loads the kernels' modules
/// and makes what the body keeps between calls (the convolutions' reordered weights), neither of
/// which belongs in a graph.
pub struct Replayer {
    state: ReplayState,
}

enum ReplayState {
    WarmUp,
    Capture,
    Graph(Graph),
    Direct,
}

/// How a call of [`Replayer::run`] ran its body.
#[derive(Debug, PartialEq, Eq)]
pub enum Ran {
    Direct,
    Replayed,
    /// The capture was refused for this reason: the body ran directly, as it will from now on.
    Refused(String),
}

impl Ran {
    /// Whether the body was replayed. A refusal is reported on stderr on `cuda` (it comes once:
    /// `what` then runs launch by launch); on the emulator and the cpu it is expected.
    pub fn replayed(self, device: &Device, what: &str) -> bool {
        match self {
            Ran::Replayed => true,
            Ran::Direct => false,
            Ran::Refused(why) => {
                if let Device::Cuda(_) = device {
                    eprintln!(
                        "warning: {what} run launch by launch (capturing one as a CUDA graph \
                         failed: {why})"
                    );
                }
                false
            }
        }
    }
}

impl Replayer {
    /// A replayer that captures, or with `capture` false one that always runs the body directly.
    pub fn new(capture: bool) -> Self {
        Self {
            state: if capture {
                ReplayState::WarmUp
            } else {
                ReplayState::Direct
            },
        }
    }

    /// Runs `body` on `device`, directly or by replaying its graph.
    ///
    /// # Safety
    /// As for [`Graph::replay`], for the life of this replayer: every buffer the body uses that
    /// it does not allocate stays alive at its address, written in place only, and `body` does
    /// the same work at every call, reading what changes from such buffers.
    pub unsafe fn run(
        &mut self,
        device: &Device,
        body: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Ran> {
        match std::mem::replace(&mut self.state, ReplayState::Direct) {
            ReplayState::WarmUp => {
                body()?;
                self.state = ReplayState::Capture;
                Ok(Ran::Direct)
            }
            ReplayState::Capture => match capture(device, body) {
                Captured::Graph(graph) => {
                    // SAFETY: the caller's promise.
                    unsafe { graph.replay() }?;
                    self.state = ReplayState::Graph(graph);
                    Ok(Ran::Replayed)
                }
                Captured::Unavailable(why) => {
                    body()?;
                    Ok(Ran::Refused(why))
                }
            },
            ReplayState::Graph(graph) => {
                // SAFETY: the caller's promise.
                unsafe { graph.replay() }?;
                self.state = ReplayState::Graph(graph);
                Ok(Ran::Replayed)
            }
            ReplayState::Direct => {
                body()?;
                Ok(Ran::Direct)
            }
        }
    }
}

/// The emulator's capture in progress on this thread.
#[derive(Default)]
struct EmuCapture {
    work: Vec<Recorded>,
    /// Addresses of the host buffers allocated during the capture and not yet dropped.
    live: HashSet<usize>,
    /// Buffers allocated and dropped during the capture: the graph's memory.
    owned: Vec<Vec<f32>>,
    /// The first reason the body cannot be replayed.
    refused: Option<String>,
}

thread_local! {
    static EMU_CAPTURE: RefCell<Option<EmuCapture>> = const { RefCell::new(None) };
}

fn capture_emu(body: &mut dyn FnMut() -> Result<()>) -> Captured {
    let nested = EMU_CAPTURE.with_borrow_mut(|c| c.replace(EmuCapture::default()).is_some());
    if nested {
        return Captured::Unavailable("a capture is already in progress on this thread".into());
    }
    let ran = body();
    let mut c = EMU_CAPTURE
        .with_borrow_mut(Option::take)
        .expect("the capture begun above");
    if let Err(e) = ran {
        return Captured::Unavailable(format!("during capture: {e}"));
    }
    if c.refused.is_none() && !c.live.is_empty() {
        c.refused = Some(format!(
            "{} buffers allocated during capture outlive it (a graph frees what it allocates)",
            c.live.len()
        ));
    }
    match c.refused {
        Some(why) => Captured::Unavailable(why),
        None => Captured::Graph(Graph {
            replay: Replay::Emu(EmuGraph {
                work: c.work,
                _owned: c.owned,
            }),
        }),
    }
}

/// Records an emulator launch instead of running it, when capturing; false otherwise.
pub(crate) fn record_emu_launch(
    kernel: &str,
    geometry: LaunchGeometry,
    schedule: EmuSchedule,
    slots: &[u64],
) -> bool {
    EMU_CAPTURE.with_borrow_mut(|c| match c {
        Some(c) => {
            c.work.push(Recorded::Launch(RecordedLaunch {
                kernel: kernel.to_string(),
                geometry,
                schedule,
                slots: slots.to_vec(),
            }));
            true
        }
        None => false,
    })
}

/// A host buffer of emulated device memory was allocated, all its floats `fill` (zeros, or NaN
/// for a kernel to overwrite), or holding a copy from the host (`None`).
pub(crate) fn emu_allocated(buffer: &[f32], fill: Option<f32>) {
    EMU_CAPTURE.with_borrow_mut(|c| {
        let Some(c) = c else { return };
        c.live.insert(buffer.as_ptr() as usize);
        if let Some(value) = fill {
            c.work.push(Recorded::Fill {
                at: buffer.as_ptr() as usize,
                len: buffer.len(),
                value,
            });
        }
    });
}

/// A host buffer of emulated device memory is being dropped: the graph keeps it if the capture
/// allocated it, and refuses the capture if it did not.
pub(crate) fn emu_dropping(buffer: &mut Vec<f32>) {
    EMU_CAPTURE.with_borrow_mut(|c| {
        let Some(c) = c else { return };
        if c.live.remove(&(buffer.as_ptr() as usize)) {
            c.owned.push(std::mem::take(buffer));
        } else {
            refuse(
                c,
                "frees memory allocated before the capture (every replay would free it again)",
            );
        }
    });
}

/// Host code touched emulated device memory (`what` says how): a replay would not repeat it.
pub(crate) fn emu_host_access(what: &str) {
    EMU_CAPTURE.with_borrow_mut(|c| {
        if let Some(c) = c {
            refuse(
                c,
                &format!("{what} during capture (a replay runs only kernels)"),
            );
        }
    });
}

fn refuse(c: &mut EmuCapture, why: &str) {
    c.refused.get_or_insert_with(|| why.to_string());
}
