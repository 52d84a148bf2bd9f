// The Rune runner's guest workspace and how it is built: read by `build.rs` (which builds it, or
// takes the prebuilt module while it is current) and by `tests/prebuilt.rs` (which checks that
// the prebuilt module is what the sources build to).
runegrid_guest_build::Guests {
    workspace: "guest",
    watch: &["Cargo.toml", "Cargo.lock", "build.rs", "src"],
    binaries: &["rune-runner"],
    target_subdir: "wasm-guests-runner",
    prebuilt: Some("prebuilt"),
}
