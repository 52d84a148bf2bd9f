//! Builds the Rune runner (the guest workspace in `guest/`) for `wasm32-wasip1` and copies
//! `rune-runner.wasm` into `OUT_DIR`, where `src/lib.rs` embeds it.

use std::process::ExitCode;

fn main() -> ExitCode {
    runegrid_guest_build::Guests {
        workspace: "guest",
        watch: &["Cargo.toml", "Cargo.lock", "build.rs", "src"],
        binaries: &["rune-runner"],
        target_subdir: "wasm-guests-runner",
    }
    .build_or_report()
}
