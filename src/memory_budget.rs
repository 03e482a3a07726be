//! Refusing an allocation the machine cannot hold before it is attempted: a failed allocation
//! aborts the process (no error, no message), and a size computed from user input can exceed
//! any memory or even overflow `usize`.
use crate::device::Device;
use crate::error::{Error, Result};

/// Assumed when the memory cannot be read (no /proc/meminfo, no device query).
const FALLBACK_BYTES: u64 = 8 << 30;

/// The bytes of `count` f32 values, `None` when the product overflows.
pub fn f32_bytes(count: &[usize]) -> Option<u64> {
    count
        .iter()
        .try_fold(4u64, |acc, &n| acc.checked_mul(n as u64))
}

/// An error unless `bytes` (`None`: beyond 2^64) fit in the memory `device` allocates from; `what`
/// says what needs them and with which flags, e.g. "sample: --count 100000000 images".
pub fn ensure_fits(device: &Device, what: &str, bytes: Option<u64>) -> Result<()> {
    let available = available_bytes(device);
    match bytes {
        Some(b) if b <= available => Ok(()),
        _ => Err(Error::invalid(format!(
            "{what}: needs {} of memory, but {device} has {} available; ask for less",
            bytes.map_or_else(
                || "more than 2^64 bytes".to_string(),
                |b| format!("about {}", gigabytes(b))
            ),
            gigabytes(available)
        ))),
    }
}

fn gigabytes(bytes: u64) -> String {
    format!("{:.1} GB", bytes as f64 / 1e9)
}

/// What `device` can still allocate: the GPU's memory, or the host's MemAvailable (else
/// MemTotal) from /proc/meminfo, else [`FALLBACK_BYTES`].
pub fn available_bytes(device: &Device) -> u64 {
    if let Device::Cuda(dev) = device {
        return dev.total_memory().map_or(FALLBACK_BYTES, |b| b as u64);
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    ["MemAvailable:", "MemTotal:"]
        .iter()
        .find_map(|key| meminfo_kib(&meminfo, key))
        .map_or(FALLBACK_BYTES, |kib| kib.saturating_mul(1024))
}

/// The value of `key` in /proc/meminfo's text, in KiB.
fn meminfo_kib(meminfo: &str, key: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_that_overflow_or_exceed_memory_are_refused() {
        assert_eq!(f32_bytes(&[2, 3]), Some(24));
        assert_eq!(f32_bytes(&[usize::MAX, 784]), None);
        ensure_fits(&Device::Cpu, "a test", Some(1024)).unwrap();
        let err = ensure_fits(&Device::Cpu, "sample: --count 9", None).unwrap_err();
        assert!(err.to_string().contains("2^64"), "{err}");
        let err = ensure_fits(&Device::Cpu, "x", Some(u64::MAX)).unwrap_err();
        assert!(err.to_string().contains("available"), "{err}");
    }

    #[test]
    fn meminfo_is_read_in_kib() {
        let text = "MemTotal:       16000 kB\nMemAvailable:    8000 kB\n";
        assert_eq!(meminfo_kib(text, "MemAvailable:"), Some(8000));
        assert_eq!(meminfo_kib(text, "SwapTotal:"), None);
    }
}
