//! Views of disk bytes that are not copied: a range of a raw image file mapped from the page
//! cache, or bytes a reader holds in memory. See [`DiskReader::view_at`].
//!
//! Why: checking that an unchanged slot still hashes to its previous digest needs the bytes
//! but not a copy of them, and on the machines we measured the kernel's copy out of the page
//! cache (~2 GB/s per core) costs more than the BLAKE3 hash itself (~3 GB/s per core). A
//! mapping costs only its page-table entries.
//!
//! [`DiskReader::view_at`]: super::DiskReader::view_at

use std::fs::File;
use std::io;
use std::ops::Deref;
use std::os::fd::AsRawFd;

/// Bytes of a disk, borrowed without a copy. They may change while the view lives if
/// something writes the disk: a caller that stores bytes copies them first.
pub enum DiskView<'a> {
    Mapped(MappedBytes),
    Borrowed(&'a [u8]),
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
}

// SAFETY: the mapping is read-only and owned by this value; sharing `&[u8]` views of it
// between threads is as safe as sharing any immutable slice.
unsafe impl Send for MappedBytes {}
unsafe impl Sync for MappedBytes {}

impl MappedBytes {
    /// Maps `file[offset..offset + len]`. Fails (the caller reads instead) when the range is
    /// empty or not wholly inside the file as it is now: touching a mapping beyond the end
    /// of a file raises SIGBUS. (A file truncated while mapped can still do that; the images
    /// source holds QEMU's read locks, so no QEMU resizes it meanwhile.)
    pub fn map(file: &File, offset: u64, len: usize) -> io::Result<MappedBytes> {
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
        Ok(MappedBytes {
            base,
            map_len,
            skip,
            len,
        })
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
        // SAFETY: unmaps exactly the mapping made in `map`, once.
        unsafe {
            libc::munmap(self.base, self.map_len);
        }
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
}
