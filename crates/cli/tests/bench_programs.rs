//! `runegrid bench programs` end to end, at a tiny scale: the programs build natively and for
//! wasm32-wasip1, and every column reproduces the native output. Timings are not asserted.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

const PROGRAMS: &[&str] = &[
    "nbody",
    "spectralnorm",
    "fannkuch",
    "binarytrees",
    "mandelbrot",
    "fasta",
    "hashmap",
    "alloc",
];

#[test]
fn every_program_runs_in_every_column_with_the_native_output() {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "bench", "programs", "--scale", "0.01", "--runs", "1", "--json",
    ]);
    // The first run builds the programs (twice): allow for it.
    let out = output_within(cmd, Duration::from_secs(900));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed: {}\n{stderr}",
        out.status
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    let programs = report["programs"].as_array().expect("programs");
    let names: Vec<&str> = programs
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, PROGRAMS);
    for p in programs {
        let name = p["name"].as_str().unwrap();
        assert!(
            !p["output"].as_str().unwrap().is_empty(),
            "{name}: no output"
        );
        assert!(p["native_ms"].as_f64().unwrap() > 0.0, "{name}");
        let columns = p["columns"].as_object().unwrap();
        for key in ["wasmtime", "instrumented_no_nan", "instrumented", "v8"] {
            let c = &columns[key];
            assert!(c.get("mismatch").is_none(), "{name} {key}: {c}");
            if c.get("skipped").is_some() {
                // Only V8 may be skipped (no node on PATH).
                assert_eq!(key, "v8", "{name}: {c}");
                continue;
            }
            assert_eq!(c["matched"], true, "{name} {key}: {c}");
            let ratio = c["ratio"].as_f64().unwrap_or(-1.0);
            assert!(ratio > 0.0 && ratio.is_finite(), "{name} {key}: {c}");
        }
    }
    for key in ["wasmtime", "instrumented_no_nan", "instrumented"] {
        let g = report["geomean"][key].as_f64().unwrap_or(-1.0);
        assert!(
            g > 0.0 && g.is_finite(),
            "geomean {key}: {}",
            report["geomean"]
        );
    }
}
