//! `hostile MODE [ARG]`: misbehaves on purpose, to test the sandbox limits.
//!
//! Modes:
//!
//! - `loop`: spins forever (only fuel or a timeout stops it);
//! - `membomb`: allocates and touches memory in 1 MiB chunks until an allocation fails, then
//!   reports the total on stderr and aborts (a trap), like Rust's default out-of-memory path;
//! - `spew`: writes to stdout forever; if a write fails it exits with code 3;
//! - `recurse`: recurses without bound (not a tail call, so it is not turned into a loop);
//! - `panic`: panics with a message (on wasm, `panic = "abort"`: a trap);
//! - `exit N`: exits with code N;
//! - `sleep`: sleeps 1 s, then prints `slept`;
//! - `clock`: prints `realtime_ns=<wall clock since the Unix epoch>` and
//!   `elapsed_ns=<monotonic time of a short busy loop>`;
//! - `random`: prints `random=<32 hex digits>` from std's `RandomState`, whose keys come
//!   from WASI `random_get`;
//! - `divzero`: divides an integer by a zero the compiler cannot see (Rust checks integer
//!   division, so this is a panic, hence a trap, not a raw `div` trap).
//!
//! An unknown or missing mode prints the usage on stderr and exits with code 2.

use std::collections::hash_map::RandomState;
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::hint::black_box;
use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const USAGE: &str =
    "usage: hostile loop|membomb|spew|recurse|panic|exit N|sleep|clock|random|divzero";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["loop"] => spin(),
        ["membomb"] => membomb(),
        ["spew"] => spew(),
        ["recurse"] => {
            let depth = recurse(black_box(0));
            println!("recursion ended at depth {depth}");
            ExitCode::SUCCESS
        }
        ["panic"] => panic!("hostile: panic requested"),
        ["exit", code] => match code.parse::<i32>() {
            Ok(code) => std::process::exit(code),
            Err(_) => usage(),
        },
        ["sleep"] => {
            std::thread::sleep(Duration::from_secs(1));
            println!("slept");
            ExitCode::SUCCESS
        }
        ["clock"] => clock(),
        ["random"] => random(),
        ["divzero"] => {
            let zero: i32 = black_box(0);
            println!("{}", black_box(1) / zero);
            ExitCode::SUCCESS
        }
        _ => usage(),
    }
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}

/// Spins forever; `black_box` keeps every iteration observable.
fn spin() -> ExitCode {
    let mut x = 0u64;
    loop {
        x = black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
    }
}

/// Allocates and writes 1 MiB chunks until an allocation fails, then aborts.
fn membomb() -> ExitCode {
    const CHUNK: usize = 1 << 20;
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = Vec::new();
        if chunk.try_reserve_exact(CHUNK).is_err() || chunks.try_reserve(1).is_err() {
            eprintln!("hostile: allocation failed after {} MiB", chunks.len());
            std::process::abort();
        }
        // Touch every page so the memory is really used.
        chunk.resize(CHUNK, (chunks.len() as u8) | 1);
        chunks.push(black_box(chunk));
    }
}

/// Writes lines to stdout forever, or until a write fails (exit code 3).
fn spew() -> ExitCode {
    let line = b"spew spew spew spew spew spew spew spew spew spew spew spew spew spew spew\n";
    let block: Vec<u8> = line
        .iter()
        .copied()
        .cycle()
        .take(line.len() * 512)
        .collect();
    let mut out = io::stdout().lock();
    loop {
        if let Err(e) = out.write_all(&block) {
            eprintln!("hostile: write failed: {e}");
            return ExitCode::from(3);
        }
    }
}

/// Recurses forever; the `+ 1` after the call and `black_box` prevent a loop or tail call.
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    black_box(recurse(black_box(depth + 1))) + 1
}

fn clock() -> ExitCode {
    let realtime = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let start = Instant::now();
    let mut x = 0u64;
    for i in 0..1_000_000u64 {
        x = black_box(x.wrapping_add(i));
    }
    let elapsed = start.elapsed().as_nanos();
    println!("realtime_ns={realtime}");
    println!("elapsed_ns={elapsed}");
    ExitCode::SUCCESS
}

fn random() -> ExitCode {
    let mut hex = String::new();
    for _ in 0..2 {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(0);
        let _ = write!(hex, "{:016x}", hasher.finish());
    }
    println!("random={hex}");
    ExitCode::SUCCESS
}
