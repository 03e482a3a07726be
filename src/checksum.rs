//! Checksums of checkpoint tensors: CRC-32 (IEEE) of the bytes a tensor is stored as, kept in
//! the checkpoint's metadata under `checksum.<tensor>`, so that a bit flipped on disk or in a
//! copy is an error at load instead of a silently different weight. CRC-32 detects every burst
//! of up to 32 flipped bits and is fast enough (crc32fast, SIMD) to check on every load.

/// Metadata keys starting with this hold checksums; [`crate::checkpoint::Checkpoint`] writes and
/// checks them itself, they never appear among its metadata.
pub const KEY_PREFIX: &str = "checksum.";

/// The metadata key of `tensor`'s checksum.
pub fn key(tensor: &str) -> String {
    format!("{KEY_PREFIX}{tensor}")
}

/// The checksum of `bytes` as stored, named by its algorithm so another one could follow.
pub fn of(bytes: &[u8]) -> String {
    format!("crc32:{:08x}", crc32fast::hash(bytes))
}
