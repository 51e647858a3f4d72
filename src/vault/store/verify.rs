//! Verify: re-read, decompress and re-hash chunks on every worker, and report each faulty
//! one. Which recovery points a faulty chunk affects is the catalog's question (it knows
//! which indexes reference which digests).

use super::backup::io_workers;
use super::{Digest, StoreError, Vault, DEFAULT_CHUNK_SIZE};
use crate::cancel::{CancelToken, Progress};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// What is wrong with a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkFault {
    Missing,
    /// Damaged header, does not decompress, or hashes to another digest.
    Corrupt(String),
    /// Could not be read (an I/O error: permissions, too many open files, a failing disk).
    /// It may be fine: what needs it cannot be trusted now, but nothing should be thrown
    /// away for it.
    Unreadable(String),
}

impl std::fmt::Display for ChunkFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkFault::Missing => f.write_str("missing"),
            ChunkFault::Corrupt(r) => write!(f, "corrupt: {r}"),
            ChunkFault::Unreadable(r) => write!(f, "unreadable: {r}"),
        }
    }
}

/// Checks every chunk of `digests` (duplicates are checked once) and returns the faulty
/// ones, in the order given. `progress` gets the raw bytes of each sound chunk added. An
/// `Err` means verify itself could not run (cancelled, or no decompression context).
pub fn verify_chunks(
    store: &Vault,
    digests: &[Digest],
    progress: &Progress,
    cancel: &CancelToken,
    threads: usize,
) -> Result<Vec<(Digest, ChunkFault)>, StoreError> {
    let mut order: Vec<usize> = (0..digests.len()).collect();
    order.sort_unstable_by_key(|&i| digests[i]);
    order.dedup_by_key(|i| digests[*i]);
    // Chunk files are read in name order: neighbouring files share fan-out folders. Buffers
    // grow to the largest chunk read; the worker cap assumes the default chunk size.
    let workers = io_workers(threads, DEFAULT_CHUNK_SIZE).min(order.len().max(1));
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let faults: Mutex<Vec<(usize, ChunkFault)>> = Mutex::new(Vec::new());
    let fatal: Mutex<Option<StoreError>> = Mutex::new(None);
    let fail = |e: StoreError| {
        let mut f = fatal.lock().unwrap_or_else(|p| p.into_inner());
        f.get_or_insert(e);
        stop.store(true, Ordering::SeqCst);
    };
    std::thread::scope(|s| {
        for i in 0..workers {
            let work = || {
                let mut reader = match store.reader() {
                    Ok(r) => r,
                    Err(e) => return fail(e),
                };
                while !stop.load(Ordering::SeqCst) {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&at) = order.get(k) else { break };
                    if cancel.is_cancelled() {
                        return fail(StoreError::Cancelled);
                    }
                    let fault = match store.read_into(&digests[at], &mut reader) {
                        Ok(raw) => {
                            progress.add_done(raw.len() as u64);
                            continue;
                        }
                        Err(StoreError::ChunkMissing { .. }) => ChunkFault::Missing,
                        Err(StoreError::ChunkCorrupt { reason, .. }) => ChunkFault::Corrupt(reason),
                        // Unreadable is not proven damaged: reported, never set aside.
                        Err(e) => ChunkFault::Unreadable(e.to_string()),
                    };
                    faults
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((at, fault));
                }
            };
            if let Err(e) = std::thread::Builder::new()
                .name(format!("verify-{i}"))
                .spawn_scoped(s, work)
            {
                fail(StoreError::io("starting a verify worker thread", e));
            }
        }
    });
    if let Some(e) = fatal.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let mut faults = faults.into_inner().unwrap_or_else(|p| p.into_inner());
    faults.sort_unstable_by_key(|(at, _)| *at);
    Ok(faults.into_iter().map(|(at, f)| (digests[at], f)).collect())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{compressible, random};
    use super::*;
    use std::fs;

    #[test]
    fn reports_every_faulty_chunk_once() {
        let t = tempfile::tempdir().unwrap();
        let s = Vault::open(&t.path().join("chunks")).unwrap();
        let data: Vec<Vec<u8>> = (0..10)
            .map(|i| {
                if i % 2 == 0 {
                    random(i, 100_000)
                } else {
                    compressible(i, 100_000)
                }
            })
            .collect();
        let ds: Vec<Digest> = data
            .iter()
            .map(|c| {
                let d = *blake3::hash(c).as_bytes();
                s.put(&d, c).unwrap();
                d
            })
            .collect();
        let progress = Progress::default();
        let clean = verify_chunks(&s, &ds, &progress, &CancelToken::new(), 2).unwrap();
        assert!(clean.is_empty());
        assert_eq!(progress.done(), 10 * 100_000);

        // Flip a byte in chunk 3 (compressed) and chunk 4 (raw); remove chunk 7.
        for k in [3, 4] {
            let p = s.path_of(&ds[k]);
            let mut b = fs::read(&p).unwrap();
            let mid = b.len() / 2;
            b[mid] ^= 0x80;
            fs::write(&p, b).unwrap();
        }
        fs::remove_file(s.path_of(&ds[7])).unwrap();
        let mut asked = ds.clone();
        asked.push(ds[3]); // duplicates are checked once
        let faults =
            verify_chunks(&s, &asked, &Progress::default(), &CancelToken::new(), 2).unwrap();
        assert_eq!(faults.len(), 3, "{faults:?}");
        assert_eq!(faults[0].0, ds[3]);
        assert!(matches!(faults[0].1, ChunkFault::Corrupt(_)));
        assert_eq!(faults[1].0, ds[4]);
        assert!(matches!(faults[1].1, ChunkFault::Corrupt(_)));
        assert_eq!(faults[2], (ds[7], ChunkFault::Missing));

        // A folder where the chunk file should be: the chunk is not there, whatever the
        // folder holds (the engine sets it aside, renamed, so a backup can store it again).
        let p = s.path_of(&ds[5]);
        fs::remove_file(&p).unwrap();
        fs::create_dir(&p).unwrap();
        let faults =
            verify_chunks(&s, &ds[5..6], &Progress::default(), &CancelToken::new(), 1).unwrap();
        assert_eq!(faults.len(), 1, "{faults:?}");
        assert!(
            matches!(&faults[0].1, ChunkFault::Corrupt(r) if r.contains("a folder")),
            "{faults:?}"
        );
    }

    #[test]
    fn cancelled_verify_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let s = Vault::open(&t.path().join("chunks")).unwrap();
        let c = CancelToken::new();
        c.cancel();
        let r = verify_chunks(&s, &[[1; 32]], &Progress::default(), &c, 2);
        assert!(matches!(r, Err(StoreError::Cancelled)));
        assert!(
            verify_chunks(&s, &[], &Progress::default(), &CancelToken::new(), 2)
                .unwrap()
                .is_empty()
        );
    }
}
