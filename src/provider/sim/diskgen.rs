//! Deterministic byte generation for simulated disks: a tiny PRNG of our own, and the three
//! kinds of content a region of a disk can hold (all-zero, text-like, incompressible).
//!
//! Why our own PRNG: the contents of a simulated disk are part of a vault's recovery points
//! (a restored image is compared with `sim export-disk`), so the same seed must give the same
//! bytes for ever. A crate's streams may change between versions; splitmix64 below is a
//! dozen lines that never will.
//!
//! Every byte is a pure function of `(kind, key, absolute offset)`, so a region can be read at
//! any offset and length, from any thread, without state. Incompressible data is one
//! splitmix64 output per 8-byte word; text is generated per aligned 4 KiB block from the
//! block's own PRNG stream (tokens of a log-and-config vocabulary plus hex identifiers), which
//! zstd compresses about 3–4×.

/// The golden-ratio increment of splitmix64.
pub const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The splitmix64 finaliser: a bijective 64-bit mix with good avalanche.
#[inline(always)]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Derives an independent key from `key` and a tag (an index or a hashed name).
#[inline]
pub fn derive(key: u64, tag: u64) -> u64 {
    mix64(key ^ mix64(tag.wrapping_add(GOLDEN)))
}

/// Hashes bytes (FNV-1a, then mixed) into a key; stable across platforms and versions.
pub fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    mix64(h)
}

/// splitmix64: a small, fast PRNG whose stream is fixed by its definition.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }
    #[inline(always)]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix64(self.0)
    }
    /// Uniform in `0..n` (0 when `n == 0`), by multiply-shift (no modulo bias worth noting).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// What a region of a disk holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fill {
    /// Allocated but all zeros (a preallocated file, a zeroed swap area).
    Zero,
    /// Text-like: logs, configuration, scripts (zstd ~3–4×).
    Text,
    /// Incompressible: compressed archives, media, encrypted database pages.
    Random,
}

/// Text is generated per aligned block of this size.
pub const TEXT_BLOCK: u64 = 4096;

/// Fills `buf` with the bytes of a `kind` region keyed `key`, starting at absolute disk
/// offset `offset`.
pub fn fill(kind: Fill, key: u64, offset: u64, buf: &mut [u8]) {
    match kind {
        Fill::Zero => buf.fill(0),
        Fill::Random => fill_random(key, offset, buf),
        Fill::Text => fill_text(key, offset, buf),
    }
}

#[inline(always)]
fn random_word(key: u64, word: u64) -> [u8; 8] {
    mix64(key.wrapping_add(word.wrapping_mul(GOLDEN))).to_le_bytes()
}

fn fill_random(key: u64, offset: u64, buf: &mut [u8]) {
    let mut word = offset / 8;
    let skip = (offset % 8) as usize;
    let mut rest: &mut [u8] = buf;
    if skip != 0 {
        let w = random_word(key, word);
        let n = (8 - skip).min(rest.len());
        rest[..n].copy_from_slice(&w[skip..skip + n]);
        rest = &mut rest[n..];
        word += 1;
    }
    let mut chunks = rest.chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&random_word(key, word));
        word += 1;
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let w = random_word(key, word);
        let n = tail.len();
        tail.copy_from_slice(&w[..n]);
    }
}

fn fill_text(key: u64, offset: u64, buf: &mut [u8]) {
    let mut pos = 0usize;
    let mut at = offset;
    while pos < buf.len() {
        let block = at / TEXT_BLOCK;
        let within = (at % TEXT_BLOCK) as usize;
        let n = (TEXT_BLOCK as usize - within).min(buf.len() - pos);
        if within == 0 && n == TEXT_BLOCK as usize {
            text_block(key, block, &mut buf[pos..pos + n]);
        } else {
            let mut scratch = [0u8; TEXT_BLOCK as usize];
            text_block(key, block, &mut scratch);
            buf[pos..pos + n].copy_from_slice(&scratch[within..within + n]);
        }
        pos += n;
        at += n as u64;
    }
}

/// Words of a log-and-configuration vocabulary; each at most 16 bytes.
const VOCABULARY: [&str; 122] = [
    "the ",
    "of ",
    "and ",
    "to ",
    "in ",
    "is ",
    "for ",
    "on ",
    "with ",
    "from ",
    "at ",
    "by ",
    "not ",
    "was ",
    "be ",
    "this ",
    "that ",
    "an ",
    "or ",
    "are ",
    "INFO ",
    "WARN ",
    "ERROR ",
    "DEBUG ",
    "kernel: ",
    "systemd[1]: ",
    "sshd[",
    "cron[",
    "nginx: ",
    "sqlservr: ",
    "Started ",
    "Stopped ",
    "Starting ",
    "Finished ",
    "session ",
    "opened ",
    "closed ",
    "user ",
    "root ",
    "azureuser ",
    "connection ",
    "from ",
    "port ",
    "request ",
    "GET ",
    "POST ",
    "HTTP/1.1 ",
    "200 ",
    "404 ",
    "500 ",
    "/api/v1/",
    "orders ",
    "customers ",
    "invoice ",
    "backup ",
    "checkpoint ",
    "transaction ",
    "commit ",
    "rollback ",
    "index ",
    "table ",
    "query ",
    "took ",
    "ms ",
    "bytes ",
    "MiB ",
    "disk ",
    "sda1 ",
    "eth0 ",
    "link ",
    "up ",
    "down ",
    "timeout ",
    "retry ",
    "failed ",
    "success ",
    "service ",
    "unit ",
    "daemon ",
    "config ",
    "value ",
    "enabled ",
    "disabled ",
    "true ",
    "false ",
    "= ",
    ": ",
    "; ",
    ", ",
    "\n",
    "\n",
    "\n",
    "\n",
    "\t",
    "  ",
    "2025-",
    "01-",
    "12:",
    "00:",
    "30:",
    "45 ",
    "T10:",
    "Z ",
    "[pid ",
    "] ",
    "{\"id\": ",
    "\"name\": ",
    "\"status\": ",
    "}\n",
    "<div ",
    "class=",
    "\"row\">",
    "</div>\n",
    "#include ",
    "return ",
    "if (",
    ") {\n",
    "}\n",
    "else ",
    "null",
    "0x",
    "10.0.",
];

/// The token table used by `text_block`: 256 slots of up to 16 bytes. Slots past the
/// vocabulary repeat it, so common words appear more often (a rough Zipf shape).
struct Tokens {
    bytes: [[u8; 16]; 256],
    len: [u8; 256],
}

fn tokens() -> &'static Tokens {
    static TOKENS: std::sync::OnceLock<Tokens> = std::sync::OnceLock::new();
    TOKENS.get_or_init(|| {
        let mut t = Tokens {
            bytes: [[0u8; 16]; 256],
            len: [0u8; 256],
        };
        for slot in 0..256 {
            // The first 122 slots hold each word once; the rest favour the first words.
            let word = if slot < VOCABULARY.len() {
                VOCABULARY[slot]
            } else {
                VOCABULARY[(slot * 7) % 40]
            };
            let b = word.as_bytes();
            t.bytes[slot][..b.len()].copy_from_slice(b);
            t.len[slot] = b.len() as u8;
        }
        t
    })
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// One 4 KiB block of text: tokens chosen by the block's PRNG stream, one in thirty-two replaced
/// by an 8-digit hex identifier (session ids, addresses) that keeps zstd near 3–4×.
fn text_block(key: u64, block: u64, out: &mut [u8]) {
    const N: usize = TEXT_BLOCK as usize;
    debug_assert_eq!(out.len(), N);
    let t = tokens();
    let mut rng = SplitMix::new(derive(key, block));
    // Tokens are written whole (16 bytes, advancing by their length) into a scratch block
    // with room past the end, so the loop needs no end-of-block cases; the block is the
    // first 4 KiB of the token stream.
    let mut scratch = [0u8; N + 16];
    let mut pos = 0usize;
    while pos < N {
        let r = rng.next_u64();
        for i in 0..8 {
            if pos >= N {
                break;
            }
            let slot = ((r >> (i * 8)) & 0xFF) as usize;
            if slot >= 248 {
                // A hex identifier from the next word of the stream.
                let h = rng.next_u64();
                let mut id = [b' '; 16];
                for (j, c) in id.iter_mut().take(8).enumerate() {
                    *c = HEX[((h >> (j * 4)) & 0xF) as usize];
                }
                scratch[pos..pos + 16].copy_from_slice(&id);
                pos += 9;
            } else {
                scratch[pos..pos + 16].copy_from_slice(&t.bytes[slot]);
                pos += t.len[slot] as usize;
            }
        }
    }
    out.copy_from_slice(&scratch[..N]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_stream_is_fixed() {
        // The reference values of splitmix64 seeded with 0: if these change, every simulated
        // disk changes and existing vaults no longer match `sim export-disk`.
        let mut r = SplitMix::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(r.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn fills_are_deterministic_and_key_dependent() {
        for kind in [Fill::Text, Fill::Random] {
            let mut a = vec![0u8; 20_000];
            let mut b = vec![0u8; 20_000];
            let mut c = vec![0u8; 20_000];
            fill(kind, 42, 1_000_003, &mut a);
            fill(kind, 42, 1_000_003, &mut b);
            fill(kind, 43, 1_000_003, &mut c);
            assert_eq!(a, b, "{kind:?}");
            assert_ne!(a, c, "{kind:?}");
            assert!(a.iter().any(|&x| x != 0));
        }
        let mut z = vec![1u8; 100];
        fill(Fill::Zero, 1, 5, &mut z);
        assert!(z.iter().all(|&x| x == 0));
    }

    #[test]
    fn fills_are_position_independent() {
        // A read at any offset and length equals the slice of a bigger read.
        for kind in [Fill::Text, Fill::Random] {
            let base = 8192 * 3 + 5;
            let mut big = vec![0u8; 30_000];
            fill(kind, 7, base, &mut big);
            for (start, len) in [
                (0, 1),
                (1, 7),
                (3, 4096),
                (4091, 10),
                (5000, 12_345),
                (29_999, 1),
            ] {
                let mut part = vec![0u8; len];
                fill(kind, 7, base + start as u64, &mut part);
                assert_eq!(part, big[start..start + len], "{kind:?} at {start}+{len}");
            }
        }
    }

    #[test]
    fn text_compresses_and_random_does_not() {
        let mut text = vec![0u8; 4 << 20];
        fill(Fill::Text, 99, 0, &mut text);
        let mut random = vec![0u8; 4 << 20];
        fill(Fill::Random, 99, 0, &mut random);
        let t = zstd::bulk::compress(&text, 3).unwrap().len() as f64;
        let r = zstd::bulk::compress(&random, 3).unwrap().len() as f64;
        let text_ratio = text.len() as f64 / t;
        let random_ratio = random.len() as f64 / r;
        eprintln!(
            "RATIO text {text_ratio:.3} random {random_ratio:.3} L1 {:.3}",
            text.len() as f64 / zstd::bulk::compress(&text, 1).unwrap().len() as f64
        );
        assert!(
            (2.5..6.0).contains(&text_ratio),
            "text ratio {text_ratio:.2}"
        );
        assert!(random_ratio < 1.01, "random ratio {random_ratio:.3}");
    }
}
