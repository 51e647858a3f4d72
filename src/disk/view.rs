//! Views of disk bytes that are not copied: a range of a raw image file mapped from the page
//! cache, or bytes a reader holds in memory. See [`DiskReader::view_at`].
//!
//! Why: checking that an unchanged slot still hashes to its previous digest needs the bytes
//! but not a copy of them, and on the machines we measured the kernel's copy out of the page
//! cache (~2 GB/s per core) costs more than the BLAKE3 hash itself (~3 GB/s per core). A
//! mapping costs only its page-table entries.
//!
//! # A file that shrinks under its mapping
//! Touching a mapped page that lies past the end of its file (something truncated the file
//! after it was mapped) raises SIGBUS, which kills the process. vmvault maps images only
//! under QEMU's read lock, but a process that ignores QEMU's locks can still truncate one.
//! So every mapping is registered, and a SIGBUS handler, when the faulting address lies in
//! a registered mapping, maps zero pages over the rest of that mapping and marks it
//! ([`MappedBytes::intact`] turns false): the access completes (reading zeros) and the
//! caller, which checks the mark after using the bytes, fails the read with a clear error.
//! Any other SIGBUS goes to the handler that was there before (Rust's stack-overflow check)
//! or gets the default action, as without this module. The handler only loads atomics and
//! calls `mmap`, both safe in a signal handler.
//!
//! [`DiskReader::view_at`]: super::DiskReader::view_at

use std::fs::File;
use std::io;
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Bytes of a disk, borrowed without a copy. They may change while the view lives if
/// something writes the disk: a caller that stores bytes copies them first.
pub enum DiskView<'a> {
    Mapped(MappedBytes),
    Borrowed(&'a [u8]),
}

impl DiskView<'_> {
    /// False when the file behind a mapped view shrank while the view was used: the bytes
    /// past its new end read as zeros and are not the disk's (see the module docs). Check
    /// after using the bytes.
    pub fn intact(&self) -> bool {
        match self {
            DiskView::Mapped(m) => m.intact(),
            DiskView::Borrowed(_) => true,
        }
    }
}

impl Deref for DiskView<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            DiskView::Mapped(m) => m,
            DiskView::Borrowed(b) => b,
        }
    }
}

/// A read-only, shared mapping of `len` bytes of a file, prefaulted, unmapped on drop.
pub struct MappedBytes {
    base: *mut libc::c_void,
    map_len: usize,
    /// Bytes between the page-aligned start of the mapping and the requested offset.
    skip: usize,
    len: usize,
    /// Its entry in [`MAPPINGS`].
    slot: usize,
}

// SAFETY: the mapping is read-only and owned by this value; sharing `&[u8]` views of it
// between threads is as safe as sharing any immutable slice.
unsafe impl Send for MappedBytes {}
unsafe impl Sync for MappedBytes {}

impl MappedBytes {
    /// Maps `file[offset..offset + len]`. Fails (the caller reads instead) when the range is
    /// empty or not wholly inside the file as it is now, or when too many mappings are live.
    /// A file truncated while mapped reads as zeros past its new end and clears
    /// [`MappedBytes::intact`] (see the module docs).
    pub fn map(file: &File, offset: u64, len: usize) -> io::Result<MappedBytes> {
        install_sigbus_handler()?;
        let end = offset.checked_add(len as u64);
        let size = file.metadata()?.len();
        if len == 0 || end.is_none_or(|e| e > size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "range is empty or not inside the file",
            ));
        }
        // SAFETY: sysconf has no preconditions.
        let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            n if n > 0 => n as u64,
            _ => 4096,
        };
        let aligned = offset - offset % page;
        let skip = (offset - aligned) as usize;
        let map_len = skip + len;
        // SAFETY: a new read-only shared mapping of an open file; the kernel checks the
        // descriptor and the range. MAP_POPULATE faults the pages in now, in one call,
        // instead of one fault per page later.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                file.as_raw_fd(),
                aligned as libc::off_t,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let end = base as usize + (map_len as u64).div_ceil(page) as usize * page as usize;
        let Some(slot) = register(base as usize, end) else {
            // SAFETY: unmaps the mapping just made, which nothing else has seen.
            unsafe {
                libc::munmap(base, map_len);
            }
            return Err(io::Error::other("too many mappings at once"));
        };
        Ok(MappedBytes {
            base,
            map_len,
            skip,
            len,
            slot,
        })
    }

    /// False when the file shrank under this mapping while it lived: some of its bytes then
    /// read as zeros that are not the file's.
    pub fn intact(&self) -> bool {
        !MAPPINGS[self.slot].shrank.load(Ordering::Acquire)
    }
}

impl Deref for MappedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `base` maps `map_len = skip + len` readable bytes until drop.
        unsafe { std::slice::from_raw_parts((self.base as *const u8).add(self.skip), self.len) }
    }
}

impl Drop for MappedBytes {
    fn drop(&mut self) {
        // Unregistered first: once unmapped, the range may be reused by another mapping
        // whose faults are none of ours. Nothing touches this one any more.
        MAPPINGS[self.slot].state.store(FREE, Ordering::Release);
        // SAFETY: unmaps exactly the mapping made in `map`, once.
        unsafe {
            libc::munmap(self.base, self.map_len);
        }
    }
}

// ---------------------------------------------------------------------------------------
// SIGBUS: a mapped file that shrank

/// Live mappings at most (a few per reading thread); beyond, `map` fails and callers read.
const SLOTS: usize = 256;
const FREE: u8 = 0;
const CLAIMED: u8 = 1;
const ACTIVE: u8 = 2;

/// One live mapping, as the signal handler sees it.
struct Slot {
    state: AtomicU8,
    /// Page-aligned address range of the mapping.
    start: AtomicUsize,
    end: AtomicUsize,
    /// Set by the handler when it replaced pages of this mapping with zeros.
    shrank: AtomicBool,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            state: AtomicU8::new(FREE),
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            shrank: AtomicBool::new(false),
        }
    }
}

static MAPPINGS: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];

/// Registers `[start, end)`; None when every slot is taken.
fn register(start: usize, end: usize) -> Option<usize> {
    let i = MAPPINGS.iter().position(|s| {
        s.state
            .compare_exchange(FREE, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    })?;
    let s = &MAPPINGS[i];
    s.start.store(start, Ordering::Relaxed);
    s.end.store(end, Ordering::Relaxed);
    s.shrank.store(false, Ordering::Relaxed);
    s.state.store(ACTIVE, Ordering::Release);
    Some(i)
}

/// The SIGBUS action that was in place before ours (what a fault outside our mappings gets).
static PREVIOUS: OnceLock<Result<libc::sigaction, i32>> = OnceLock::new();
static PAGE: AtomicUsize = AtomicUsize::new(4096);

fn install_sigbus_handler() -> io::Result<()> {
    let installed = PREVIOUS.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        if let n @ 1.. = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            PAGE.store(n as usize, Ordering::Relaxed);
        }
        // SAFETY: sigaction with zeroed structs (valid: empty mask, no flags) and a handler
        // of the SA_SIGINFO signature; the old action is written into `old`.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, &action, &mut old) == 0 {
                Ok(old)
            } else {
                Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
            }
        }
    });
    match installed {
        Ok(_) => Ok(()),
        Err(e) => Err(io::Error::from_raw_os_error(*e)),
    }
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for a SA_SIGINFO handler; errno is saved
    // and restored around the mmap call, which is a plain system call.
    unsafe {
        let errno = *libc::__errno_location();
        let addr = (*info).si_addr() as usize;
        let page = PAGE.load(Ordering::Relaxed);
        for s in &MAPPINGS {
            if s.state.load(Ordering::Acquire) != ACTIVE {
                continue;
            }
            let (start, end) = (
                s.start.load(Ordering::Relaxed),
                s.end.load(Ordering::Relaxed),
            );
            if addr < start || addr >= end {
                continue;
            }
            let from = addr - addr % page;
            let zeros = libc::mmap(
                from as *mut libc::c_void,
                end - from,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            );
            if zeros != libc::MAP_FAILED {
                s.shrank.store(true, Ordering::Release);
                *libc::__errno_location() = errno;
                return;
            }
        }
        *libc::__errno_location() = errno;
        pass_on(sig, info, ctx);
    }
}

/// A SIGBUS that is not ours: the previous handler takes it, or the default action (the
/// fault repeats when the handler returns, now with the default action: the process dies).
unsafe fn pass_on(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let previous = match PREVIOUS.get() {
        Some(Ok(p)) => *p,
        _ => std::mem::zeroed(),
    };
    let h = previous.sa_sigaction;
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &dfl, std::ptr::null_mut());
    } else if previous.sa_flags & libc::SA_SIGINFO != 0 {
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            std::mem::transmute(h);
        f(sig, info, ctx);
    } else {
        let f: extern "C" fn(libc::c_int) = std::mem::transmute(h);
        f(sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn maps_unaligned_ranges_and_refuses_ranges_past_the_end() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..3 * 4096 + 100).map(|i| (i * 7 % 251) as u8).collect();
        f.write_all(&data).unwrap();
        let m = MappedBytes::map(&f, 4097, 5000).unwrap();
        assert_eq!(&m[..], &data[4097..9097]);
        let m = MappedBytes::map(&f, 0, data.len()).unwrap();
        assert_eq!(&m[..], &data[..]);
        assert!(
            MappedBytes::map(&f, 10, data.len()).is_err(),
            "past the end"
        );
        assert!(MappedBytes::map(&f, 10, 0).is_err(), "empty");
        let v = DiskView::Mapped(MappedBytes::map(&f, 1, 3).unwrap());
        assert_eq!(&v[..], &data[1..4]);
        assert_eq!(&DiskView::Borrowed(&data[5..9])[..], &data[5..9]);
    }

    /// Without the SIGBUS handler, reading the mapping after the truncation kills the test
    /// process.
    #[test]
    fn a_file_truncated_under_its_mapping_reads_as_zeros_and_is_reported() {
        let mut f = tempfile::tempfile().unwrap();
        let data = vec![0x5Au8; 5 * 4096 + 10];
        f.write_all(&data).unwrap();
        let m = MappedBytes::map(&f, 100, data.len() - 100).unwrap();
        assert!(m.intact());
        f.set_len(2 * 4096).unwrap();
        let seen = m.to_vec();
        assert!(!m.intact(), "the truncation must be noticed");
        assert!(seen[..2 * 4096 - 100].iter().all(|&b| b == 0x5A));
        assert!(
            seen[2 * 4096 - 100..].iter().all(|&b| b == 0),
            "past the new end: zeros"
        );
        assert!(!DiskView::Mapped(m).intact());
        // Other mappings are not affected, and slots are reused.
        for _ in 0..2 * SLOTS {
            let m = MappedBytes::map(&f, 0, 4096).unwrap();
            assert!(m.intact() && m.iter().all(|&b| b == 0x5A));
        }
    }
}
