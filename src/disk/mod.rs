//! What the vault reads from a source and what a source reports when it cannot: the
//! [`DiskReader`] of one disk of a snapshot, zero-copy [`DiskView`]s of its bytes, and the
//! [`ProviderError`] of a source. Neutral ground: sources (`provider/`) implement these
//! and the vault (`vault/`) consumes them, and neither imports the other.

use crate::cancel::Cancelled;
use crate::model::{ErrorDetails, Extent};

mod throttle;
mod view;

pub use throttle::{Throttle, Throttled};
pub use view::{DiskView, MappedBytes};

/// An error of a source, with details an administrator can act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("{0}")]
    Failed(ErrorDetails),
    #[error("cancelled")]
    Cancelled,
}

impl From<Cancelled> for ProviderError {
    fn from(_: Cancelled) -> Self {
        ProviderError::Cancelled
    }
}

impl ProviderError {
    pub fn new(code: &str, title: &str, message: impl Into<String>) -> Self {
        ProviderError::Failed(ErrorDetails::new(code, title, message))
    }
    pub fn recommend(self, r: impl Into<String>) -> Self {
        match self {
            ProviderError::Failed(d) => ProviderError::Failed(d.recommend(r)),
            c => c,
        }
    }
    /// An I/O error while reading a disk, with what was being read.
    pub fn io(context: impl Into<String>, e: std::io::Error) -> Self {
        ProviderError::new(
            "DiskReadError",
            "Could not read the disk",
            format!("{}: {e}", context.into()),
        )
    }
    /// The details to record on a job.
    pub fn details(&self) -> ErrorDetails {
        match self {
            ProviderError::Failed(d) => d.clone(),
            ProviderError::Cancelled => ErrorDetails::new(
                "OperationCancelled",
                "Cancelled",
                "the operation was cancelled",
            ),
        }
    }
}

/// Reads one disk of a snapshot. Methods take `&self`: the vault reads from several
/// threads at once.
pub trait DiskReader: Send + Sync {
    fn capacity(&self) -> u64;

    /// Sorted, non-overlapping byte ranges that may hold data. Everything else reads as
    /// zeros and is never read.
    fn allocated_extents(&self) -> Result<Vec<Extent>, ProviderError>;

    /// Byte ranges that may have changed since the snapshot whose `cbt_token` was `since`
    /// (sorted, non-overlapping). `None`: unknown (read every allocated extent).
    fn changed_extents(&self, since: &str) -> Result<Option<Vec<Extent>>, ProviderError>;

    /// Fills `buf` with the bytes at `offset` (must lie within the capacity).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ProviderError>;

    /// The bytes at `offset..offset + len` without a copy, where the reader can offer them
    /// (raw image files are mapped from the page cache); `None` where it cannot: use
    /// `read_at`. The range must be allocated and within the capacity. A view may change
    /// while it lives if something writes the disk, so callers copy what they store.
    fn view_at(&self, _offset: u64, _len: usize) -> Option<DiskView<'_>> {
        None
    }
}
