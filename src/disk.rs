//! Free space on the data directory's disk, for the upload reserve
//! (`limits.min_free_disk_bytes`) and `/healthz`.

use std::path::{Path, PathBuf};

/// The disk as the reserve sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    /// Bytes the server's user may still write there.
    pub available: u64,
    /// `limits.min_free_disk_bytes`.
    pub reserve: u64,
}

impl DiskSpace {
    /// Below the reserve: uploads are refused.
    pub fn is_low(&self) -> bool {
        self.available < self.reserve
    }

    /// What uploads may still add before the reserve is reached.
    pub fn room(&self) -> u64 {
        self.available.saturating_sub(self.reserve)
    }
}

/// The free space where `dir` lives (statvfs, or GetDiskFreeSpaceExW), off the
/// async threads. `None` when the system cannot tell (the reserve is then not
/// enforced: a full disk still fails the write itself, with 507).
pub async fn space(dir: &Path, reserve: u64) -> Option<DiskSpace> {
    let dir: PathBuf = dir.to_owned();
    let available = tokio::task::spawn_blocking(move || fs4::available_space(&dir))
        .await
        .ok()?;
    match available {
        Ok(available) => Some(DiskSpace { available, reserve }),
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the free disk space");
            None
        }
    }
}
