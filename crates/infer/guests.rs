// The inference guest's workspace and how it is built: read by `build.rs` (which builds it, or
// takes the prebuilt module while it is current) and by `tests/prebuilt.rs` (which checks that
// the prebuilt module is what the sources build to).
runegrid_guest_build::Guests {
    workspace: "guest",
    watch: &["Cargo.toml", "Cargo.lock", ".cargo", "src", "patches"],
    binaries: &["infer"],
    target_subdir: "infer-guest",
    prebuilt: Some("prebuilt"),
}
