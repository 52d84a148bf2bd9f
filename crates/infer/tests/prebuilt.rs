//! The prebuilt guest module in `prebuilt/` is what the guest workspace's sources build to: the
//! build script embeds it instead of building while the sources are the ones it records, so it
//! must be their build, byte for byte. Builds the guest from source in the nested target
//! directory a build from source uses (minutes the first time, then only what changed). `RUNEGRID_REFRESH_GUESTS=1` rewrites the
//! prebuilt module and its manifest instead (`scripts/refresh-guests.sh`).

use std::path::Path;

use runegrid_guest_build::Verified;

#[test]
fn prebuilt_module_is_its_sources_built() {
    let guests = include!("../guests.rs");
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The build script's nested target directory: <target>/<profile>/<target_subdir>, where
    // this test runs as <target>/<profile>/deps/prebuilt-<hash>.
    let exe = std::env::current_exe().expect("the test's path");
    let profile_dir = exe
        .ancestors()
        .nth(2)
        .expect("<target>/<profile>/deps/<test>");
    let scratch = profile_dir.join(guests.target_subdir);
    match guests.verify_prebuilt(manifest_dir, &scratch) {
        Ok(Verified::Identical) => {}
        Ok(Verified::Refreshed) => eprintln!("prebuilt module refreshed"),
        Ok(Verified::OtherToolchain { prebuilt, here }) => eprintln!(
            "the prebuilt module was built by {prebuilt}, this is {here}: its sources match, \
             its bytes were not compared"
        ),
        Err(e) => panic!("{e}"),
    }
}
