//! Makes and changes the benchmark disk image of issue 6 (see `support/image.rs`) for
//! `scripts/bench-peers.sh`, so the script and `benches/store.rs` measure the same bytes.
//!
//! ```text
//! cargo bench --bench bench_image -- make PATH [SIZE_MIB]      # default 2048
//! cargo bench --bench bench_image -- overwrite PATH SEED      # 20 random 1 MiB writes
//! ```
//! Run without a subcommand (as `cargo bench` does) it does nothing.

#[path = "support/image.rs"]
mod image;

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let r = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["make", path] | ["make", path, _] => {
            let mib: u64 = match args.get(2).map(|s| s.parse()) {
                None => 2048,
                Some(Ok(n)) if n >= 8 => n,
                Some(_) => {
                    eprintln!("SIZE_MIB must be a number of MiB, at least 8");
                    return ExitCode::from(2);
                }
            };
            image::make_image(Path::new(path), mib * image::MIB).map(|allocated| {
                println!(
                    "{path}: {mib} MiB, {} MiB allocated",
                    allocated / image::MIB
                )
            })
        }
        ["overwrite", path, seed] => {
            let Ok(seed) = seed.parse() else {
                eprintln!("SEED must be a number");
                return ExitCode::from(2);
            };
            let cap = match std::fs::metadata(path) {
                Ok(m) => m.len(),
                Err(e) => {
                    eprintln!("{path}: {e}");
                    return ExitCode::from(1);
                }
            };
            image::overwrite(Path::new(path), cap, seed)
                .map(|c| println!("{path}: {} ranges of 1 MiB overwritten", c.len()))
        }
        [] => return ExitCode::SUCCESS, // `cargo bench` runs every bench target
        _ => {
            eprintln!("usage: bench_image make PATH [SIZE_MIB] | overwrite PATH SEED");
            return ExitCode::from(2);
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
