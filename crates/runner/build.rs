//! Puts `rune-runner.wasm` into `OUT_DIR`, where `src/lib.rs` embeds it: the prebuilt module in
//! `prebuilt/` while it is current with the guest workspace in `guest/`, else built from there
//! for `wasm32-wasip1` (see `runegrid-guest-build`).

use std::process::ExitCode;

fn main() -> ExitCode {
    println!("cargo::rerun-if-changed=guests.rs");
    include!("guests.rs").build_or_report()
}
