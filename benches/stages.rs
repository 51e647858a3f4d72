//! Single-core speed of each stage of the data path, on 1 MiB chunks of the benchmark
//! image's kinds of data (text-like and random): read from the page cache, zero check,
//! BLAKE3, compression at several zstd levels, chunk write (`Vault::put`, O_DIRECT)
//! and chunk read (`Vault::get`: read + decompress + re-hash).
//!
//! Also the cost of encryption: AES-256-GCM against ChaCha20-Poly1305 on 4 MiB messages,
//! and the v2 codec's encode/decode with and without a key.
//!
//! Run: `cargo bench --bench stages` (release build; `-- aead` for the encryption part
//! only). Each figure is the best of several rounds (the machine may be shared: the best
//! round is the least disturbed one).
//! `VMVAULT_BENCH_DIR` sets the folder for the files (default: the system temp folder).

#[path = "support/image.rs"]
mod disk_image;

use disk_image::{fill_random, fill_text, Rng, MIB};
use std::fs::{self, File, OpenOptions};
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use vmvault::vault::codec::{BlobKind, Codec};
use vmvault::vault::keys::MasterKey;
use vmvault::vault::store::{digest_hex, is_zero, AlignedBuf, Digest, Vault};

const CHUNK: usize = MIB as usize;
/// Chunks per round of each measurement.
const CHUNKS: usize = 32;
const ROUNDS: usize = 5;

/// Best (shortest) of `ROUNDS` runs of `f` over all chunks.
fn best(mut f: impl FnMut()) -> Duration {
    (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn line(what: &str, bytes: usize, d: Duration, extra: &str) {
    println!(
        "{what:<44} {:>8.0} MB/s {:>8.2} ms/chunk  {extra}",
        bytes as f64 / 1e6 / d.as_secs_f64(),
        d.as_secs_f64() * 1e3 / CHUNKS as f64
    );
}

fn main() {
    let only_aead = match std::env::args().skip(1).find(|a| !a.starts_with('-')) {
        None => false,
        Some(f) if f == "stages" => false,
        Some(f) if f == "aead" => true,
        Some(_) => return,
    };
    let base: PathBuf = std::env::var_os("VMVAULT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("vmvault-stages-{}", std::process::id()));
    fs::create_dir_all(&base).unwrap();
    let mut rng = Rng(7);
    let text: Vec<Vec<u8>> = (0..CHUNKS)
        .map(|_| {
            let mut v = vec![0u8; CHUNK];
            fill_text(&mut rng, &mut v);
            v
        })
        .collect();
    let random: Vec<Vec<u8>> = (0..CHUNKS)
        .map(|_| {
            let mut v = vec![0u8; CHUNK];
            fill_random(&mut rng, &mut v);
            v
        })
        .collect();
    let total = CHUNKS * CHUNK;
    println!("{CHUNKS} chunks of 1 MiB per round, best of {ROUNDS} rounds, one thread\n");
    aead_and_codec(&text, &random);
    if only_aead {
        let _ = fs::remove_dir_all(&base);
        return;
    }

    // Read from the page cache (a file just written).
    let path = base.join("source.raw");
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    for (i, c) in text.iter().enumerate() {
        f.write_all_at(c, (i * CHUNK) as u64).unwrap();
    }
    let mut buf = vec![0u8; CHUNK];
    let d = best(|| {
        for i in 0..CHUNKS {
            f.read_exact_at(&mut buf, (i * CHUNK) as u64).unwrap();
        }
    });
    line("pread from the page cache", total, d, "");

    // Read + hash, as the backup of an unchanged slot does: whole chunk, then in pieces
    // hashed right after they are read (while they are still in the core's cache).
    let d = best(|| {
        for i in 0..CHUNKS {
            f.read_exact_at(&mut buf, (i * CHUNK) as u64).unwrap();
            black_box(blake3::hash(&buf));
        }
    });
    line("pread + BLAKE3, whole 1 MiB chunk", total, d, "");
    {
        use std::os::fd::AsRawFd;
        // Each chunk mapped, used by `on_chunk`, unmapped.
        let mapped = |on_chunk: &mut dyn FnMut(&[u8])| {
            best(|| {
                for i in 0..CHUNKS {
                    // SAFETY: a read-only shared view of a file nobody truncates here.
                    unsafe {
                        let p = libc::mmap(
                            std::ptr::null_mut(),
                            CHUNK,
                            libc::PROT_READ,
                            libc::MAP_SHARED | libc::MAP_POPULATE,
                            f.as_raw_fd(),
                            (i * CHUNK) as libc::off_t,
                        );
                        assert_ne!(p, libc::MAP_FAILED);
                        on_chunk(std::slice::from_raw_parts(p as *const u8, CHUNK));
                        libc::munmap(p, CHUNK);
                    }
                }
            })
        };
        let d = mapped(&mut |s| {
            black_box(blake3::hash(s));
        });
        line("mmap (populate) + BLAKE3 + munmap", total, d, "");
        let mut copy = vec![0u8; CHUNK];
        let d = mapped(&mut |s| {
            copy.copy_from_slice(s);
            black_box(&copy);
        });
        line("mmap (populate) + copy + munmap (read_at)", total, d, "");
    }
    for piece in [64 << 10, 128 << 10, 256 << 10] {
        let d = best(|| {
            for i in 0..CHUNKS {
                let mut h = blake3::Hasher::new();
                for (k, p) in buf.chunks_mut(piece).enumerate() {
                    f.read_exact_at(p, (i * CHUNK + k * piece) as u64).unwrap();
                    h.update(p);
                }
                black_box(h.finalize());
            }
        });
        line(
            &format!("pread + BLAKE3 in {} KiB pieces", piece >> 10),
            total,
            d,
            "",
        );
    }

    let d = best(|| {
        for c in &text {
            black_box(is_zero(black_box(c)));
        }
    });
    line("zero check (non-zero data: early exit)", total, d, "");
    let zeros = vec![0u8; CHUNK];
    let d = best(|| {
        for _ in 0..CHUNKS {
            black_box(is_zero(black_box(&zeros)));
        }
    });
    line("zero check (all zeros: full scan)", total, d, "");

    let d = best(|| {
        for c in &text {
            black_box(blake3::hash(c));
        }
    });
    line("BLAKE3", total, d, "");

    for level in [-1, 1, 2, 3] {
        let mut cctx = zstd::bulk::Compressor::new(level).unwrap();
        let mut out = vec![0u8; zstd::zstd_safe::compress_bound(CHUNK)];
        let mut packed = 0;
        let d = best(|| {
            packed = 0;
            for c in &text {
                packed += cctx.compress_to_buffer(c, &mut out[..]).unwrap();
            }
        });
        line(
            &format!("zstd level {level}, text"),
            total,
            d,
            &format!("ratio {:.3}", total as f64 / packed as f64),
        );
    }

    let store = Vault::open(&base.join("chunks")).unwrap();
    let digests =
        |v: &[Vec<u8>]| -> Vec<Digest> { v.iter().map(|c| *blake3::hash(c).as_bytes()).collect() };
    for (kind, data) in [("text", &text), ("random", &random)] {
        let ds = digests(data);
        let d = best(|| {
            for (c, d) in data.iter().zip(&ds) {
                let _ = fs::remove_file(store.path_of(d));
                store.put(d, c).unwrap();
            }
        });
        line(
            &format!("Vault::put (zstd 3, O_DIRECT), {kind}"),
            total,
            d,
            "",
        );
        let d = best(|| {
            for d in &ds {
                black_box(store.get(d).unwrap());
            }
        });
        line(&format!("Vault::get, {kind}"), total, d, "");
    }
    let t = Instant::now();
    store.sync().unwrap();
    println!(
        "final sync of the chunk store: {:.3} s",
        t.elapsed().as_secs_f64()
    );
    drop(f);
    let _ = File::open(&path);
    let _ = fs::remove_dir_all(&base);
}

/// Encrypt and decrypt 4 MiB messages in place with `A` (one core).
fn aead_speed<A: aes_gcm::aead::AeadInOut + aes_gcm::aead::KeyInit>(name: &str, msg: &[u8]) {
    use aes_gcm::aead::{inout::InOutBuf, Key, Nonce};
    const MESSAGES: usize = 8;
    let mut key = Key::<A>::default();
    key.fill(7);
    let cipher = A::new(&key);
    let nonce = Nonce::<A>::default();
    let mut buf = msg.to_vec();
    let d = best(|| {
        for _ in 0..MESSAGES {
            black_box(
                cipher
                    .encrypt_inout_detached(&nonce, b"aad", buf.as_mut_slice().into())
                    .unwrap(),
            );
        }
    });
    let mb = |d: Duration| (MESSAGES * msg.len()) as f64 / 1e6 / d.as_secs_f64();
    let enc = mb(d);
    let mut ct_buf = msg.to_vec();
    let tag = cipher
        .encrypt_inout_detached(&nonce, b"aad", ct_buf.as_mut_slice().into())
        .unwrap();
    let d = best(|| {
        for _ in 0..MESSAGES {
            cipher
                .decrypt_inout_detached(
                    &nonce,
                    b"aad",
                    InOutBuf::new(&ct_buf, &mut buf).unwrap(),
                    &tag,
                )
                .unwrap();
        }
    });
    println!(
        "{name:<44} encrypt {enc:>6.0} MB/s   decrypt {:>6.0} MB/s  (4 MiB messages)",
        mb(d)
    );
}

/// The AEADs side by side, then the v2 codec with and without a key.
fn aead_and_codec(text: &[Vec<u8>], random: &[Vec<u8>]) {
    let msg: Vec<u8> = random.iter().take(4).flatten().copied().collect();
    aead_speed::<aes_gcm::Aes256Gcm>("AES-256-GCM (aes-gcm)", &msg);
    aead_speed::<chacha20poly1305::ChaCha20Poly1305>("ChaCha20-Poly1305 (chacha20poly1305)", &msg);
    let keys = MasterKey::generate().unwrap().keys();
    let total = CHUNKS * CHUNK;
    for (kind, data) in [("text", text), ("random", random)] {
        for encrypted in [false, true] {
            let mut codec = if encrypted {
                Codec::encrypted(&keys, 3).unwrap()
            } else {
                Codec::plain(3).unwrap()
            };
            let names: Vec<String> = data
                .iter()
                .map(|c| digest_hex(&codec.chunk_name(c)))
                .collect();
            let blobs: Vec<Vec<u8>> = data
                .iter()
                .zip(&names)
                .map(|(c, n)| codec.encode(BlobKind::Chunk, n, c).unwrap().to_vec())
                .collect();
            let what = if encrypted { "encrypted" } else { "plain" };
            let d = best(|| {
                for (c, n) in data.iter().zip(&names) {
                    black_box(codec.encode(BlobKind::Chunk, n, c).unwrap());
                }
            });
            line(
                &format!("Codec::encode (zstd 3), {what}, {kind}"),
                total,
                d,
                "",
            );
            let mut out = AlignedBuf::default();
            let d = best(|| {
                for (b, n) in blobs.iter().zip(&names) {
                    black_box(codec.decode(BlobKind::Chunk, n, b, &mut out).unwrap());
                }
            });
            line(
                &format!("Codec::decode (+ name check), {what}, {kind}"),
                total,
                d,
                "",
            );
        }
    }
}
