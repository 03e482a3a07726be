//! A dataset's identity by content. A name or path says where data was found, not what it is:
//! the same files reached as `data/x`, `./data/x/` or an absolute path are one dataset, and other
//! files put behind the same path are another. Caches and resumed runs compare fingerprints.
use super::Dataset;

impl Dataset {
    /// 16 hex digits: the CRC-32 of the sizes (count, channels, height, width, classes) and the
    /// images, then the CRC-32 of the labels. Computed from the decoded data on each call (a few
    /// milliseconds for 60,000 images), so it always describes the data as it is now, also after
    /// [`Dataset::truncated`].
    pub fn fingerprint(&self) -> String {
        let mut images = crc32fast::Hasher::new();
        for size in [
            self.n,
            self.channels,
            self.height,
            self.width,
            self.n_classes,
        ] {
            images.update(&(size as u64).to_le_bytes());
        }
        images.update(&self.images);
        format!(
            "{:08x}{:08x}",
            images.finalize(),
            crc32fast::hash(&self.labels)
        )
    }
}
