//! runegrid's example guest programs, compiled to WASI preview-1 modules and embedded here.
//!
//! The sources live in the repository's `examples/` directory, a cargo workspace of its own
//! (std only, no dependencies). This crate's build script compiles it for `wasm32-wasip1`
//! during the normal build, so the modules below always match their sources.
//!
//! | name         | arguments                                            | stdout |
//! |--------------|------------------------------------------------------|--------|
//! | `render`     | `WIDTH HEIGHT TILE_X TILE_Y TILE_W TILE_H [MAX_ITER]` | the tile as a binary PPM (see [`tiles`]) |
//! | `matmul`     | `N [SEED]`                                           | [`kernels::matmul_report`] + `\n` |
//! | `montecarlo` | `SAMPLES [SEED]`                                     | [`kernels::monte_carlo_report`] + `\n` |
//! | `collatz`    | `LIMIT`                                              | [`kernels::collatz_report`] + `\n` |
//! | `noop`       | none                                                 | nothing |
//! | `echo`       | anything                                             | `arg[i]=..` lines, sorted `env K=V` lines, `stdin=` + stdin |
//! | `files`      | `tour`, `fill [CHUNK]`, `sort IN OUT`                | a transcript of file operations (see the module's docs) |
//! | `linalg`     | `vadd N`, `matmul-f32 N`, `matmul-i8 N` (inputs: blobs `a`, `b`) | nothing; writes `/out/c` (see the module's docs) |
//! | `hostile`    | `loop`, `membomb`, `spew`, `recurse`, `panic`, `exit N`, `sleep`, `clock`, `random`, `divzero` | see the module's docs |
//!
//! `SEED` defaults to 42 and `MAX_ITER` to 500. Bad arguments make every guest print its
//! usage on stderr and exit with code 2. Arguments here exclude `argv[0]`.

pub mod kernels;
pub mod tiles;

/// Mandelbrot tile renderer.
pub const RENDER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/render.wasm"));
/// Seeded `f64` matrix multiplication ([`kernels::matmul`]).
pub const MATMUL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/matmul.wasm"));
/// Seeded Monte Carlo estimate of π ([`kernels::monte_carlo_pi`]).
pub const MONTECARLO: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/montecarlo.wasm"));
/// Integer-only Collatz workload ([`kernels::collatz_steps`]).
pub const COLLATZ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/collatz.wasm"));
/// Does nothing, exits 0.
pub const NOOP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/noop.wasm"));
/// Echoes its arguments, environment and stdin.
pub const ECHO: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/echo.wasm"));
/// Misbehaves on purpose, to test the sandbox limits.
pub const HOSTILE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hostile.wasm"));
/// Sleeps with `std::thread::sleep` (a `poll_oneoff` clock subscription) and prints what its
/// clocks saw: on the virtual clock, no wall time and the same output everywhere.
pub const SLEEP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sleep.wasm"));
/// Reads and writes files with `std::fs` (scratch space, `/out`, `/blobs`) and prints what it
/// saw: the same tree, inode numbers and timestamps on every engine.
pub const FILES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/files.wasm"));
/// The CPU twins of `runegrid bench gpu`'s WGSL kernels (vector add, `f32` and `int8` matmul):
/// reads the blobs `a` and `b`, writes `/out/c` with the bytes the kernel's output buffer `c`
/// holds.
pub const LINALG: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/linalg.wasm"));

/// Names of all the guest programs, as accepted by [`by_name`].
pub const NAMES: &[&str] = &[
    "render",
    "matmul",
    "montecarlo",
    "collatz",
    "noop",
    "echo",
    "hostile",
    "sleep",
    "files",
    "linalg",
];

/// The module of the guest program called `name`, if there is one.
pub fn by_name(name: &str) -> Option<&'static [u8]> {
    Some(match name {
        "render" => RENDER,
        "matmul" => MATMUL,
        "montecarlo" => MONTECARLO,
        "collatz" => COLLATZ,
        "noop" => NOOP,
        "echo" => ECHO,
        "hostile" => HOSTILE,
        "sleep" => SLEEP,
        "files" => FILES,
        "linalg" => LINALG,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_has_a_wasm_module() {
        for name in NAMES {
            let module = by_name(name).unwrap_or_else(|| panic!("no module for {name}"));
            assert!(
                module.starts_with(b"\0asm\x01\0\0\0"),
                "{name} is not a wasm module"
            );
        }
        assert!(by_name("nope").is_none());
    }

    #[test]
    fn modules_import_wasi_preview1() {
        for name in NAMES {
            let module = by_name(name).unwrap();
            let needle = b"wasi_snapshot_preview1";
            assert!(
                module.windows(needle.len()).any(|w| w == needle),
                "{name} does not use wasi"
            );
        }
    }

    #[test]
    fn modules_are_distinct() {
        for (i, a) in NAMES.iter().enumerate() {
            for b in &NAMES[i + 1..] {
                assert_ne!(by_name(a), by_name(b), "{a} and {b} are the same module");
            }
        }
    }
}
