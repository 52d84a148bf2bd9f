//! Builds the inference guest (`guest/`, its own cargo workspace) for `wasm32-wasip1` and copies
//! `infer.wasm` into `OUT_DIR`, where `src/lib.rs` embeds it. The first build compiles candle
//! (about 2 minutes on 2 cores); later ones only what changed.

use std::process::ExitCode;

fn main() -> ExitCode {
    runegrid_guest_build::Guests {
        workspace: "guest",
        watch: &["Cargo.toml", "Cargo.lock", ".cargo", "src", "patches"],
        binaries: &["infer"],
        target_subdir: "infer-guest",
    }
    .build_or_report()
}
