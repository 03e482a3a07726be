//! Stopping a long run cleanly: SIGINT (Ctrl-C), SIGTERM (`timeout`, batch schedulers,
//! containers) and SIGHUP (a closed terminal) all ask the loop to stop after the current step and
//! write a checkpoint. A second signal of any kind exits at once, so a stuck run can still be
//! killed. The process then exits with 128 + the signal's number (130 for Ctrl-C, 143 for
//! SIGTERM), as a shell does, so `dml train ... && dml sample ...` does not go on.
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// Set by the first signal; the loops poll it between steps.
static STOP: AtomicBool = AtomicBool::new(false);
/// The number of the first signal received (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// What a stop request looks like to the loops: a flag they read between steps.
pub fn flag() -> &'static AtomicBool {
    &STOP
}

/// The exit code of a run a signal stopped (128 + signal), or None when no signal came.
pub fn exit_code() -> Option<u8> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        sig => Some((128 + sig).clamp(0, 255) as u8),
    }
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP; on failure says what a kill would lose.
pub fn install() {
    for sig in SIGNALS {
        // SAFETY: `on_signal` only touches atomics and calls write(2) and _exit(2), which are
        // async-signal-safe; the sigaction struct is fully initialised (zeroed, then the handler
        // and an empty mask set) before the call.
        let installed = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut()) == 0
        };
        if !installed {
            eprintln!(
                "warning: cannot catch signal {sig}; it would lose the steps since the last \
                 checkpoint"
            );
        }
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    if SIGNAL
        .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        // SAFETY: _exit is async-signal-safe and ends the process without running destructors
        // (the checkpoint on disk is always whole: saves are atomic renames).
        unsafe { libc::_exit(128 + sig) };
    }
    STOP.store(true, Ordering::SeqCst);
    let msg: &[u8] = b"\nstopping after this step; writing a checkpoint (a second signal aborts)\n";
    // SAFETY: write(2) to stderr is async-signal-safe; the buffer outlives the call. A failed
    // write only loses the message.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
}
