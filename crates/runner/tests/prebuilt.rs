//! The prebuilt guest module in `prebuilt/` is what the guest workspace's sources build to: the
//! build script embeds it instead of building while the sources are the ones it records, so it
//! must be their build, byte for byte. Builds the guest from source in the nested target
//! directory a build from source uses (minutes the first time, then only what changed).
//! `RUNEGRID_REFRESH_GUESTS=1` rewrites the prebuilt module and its manifest instead
//! (`scripts/refresh-guests.sh`).

use std::path::Path;

#[test]
fn prebuilt_module_is_its_sources_built() {
    include!("../guests.rs").assert_prebuilt_from_test(Path::new(env!("CARGO_MANIFEST_DIR")));
}
