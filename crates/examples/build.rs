//! Builds the guest workspace at `<repo>/examples` for `wasm32-wasip1` and copies the modules
//! into `OUT_DIR`, where `src/lib.rs` embeds them with `include_bytes!` (see
//! `runegrid-guest-build` for how the nested build works).

use std::process::ExitCode;

fn main() -> ExitCode {
    // The guests include the shared kernels with `#[path = ...]`.
    println!("cargo::rerun-if-changed=src/kernels.rs");
    runegrid_guest_build::Guests {
        workspace: "../../examples",
        watch: &[
            "Cargo.toml",
            "Cargo.lock",
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
        ],
        binaries: &[
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
        ],
        // The directory the examples were built in before this helper existed: kept, so an
        // existing target directory needs no rebuild.
        target_subdir: "wasm-guests",
        // Small, and examples to read and change: always built from source.
        prebuilt: None,
    }
    .build_or_report()
}
