//! `runegrid bench gpu --quick` end to end: the three kernels run locally, through a grid on a
//! GPU worker and as their WASI twins, every output agrees (the bench fails otherwise) and the
//! table is printed. Timings are not asserted. Skipped, saying so, without any Vulkan adapter
//! unless `RUNEGRID_REQUIRE_GPU` is set (like tests/gpu.rs).

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn bench_gpu_quick_prints_the_table_and_gpu_and_cpu_agree() {
    if !have_gpu() {
        return;
    }
    let mut cmd = Command::new(BIN);
    cmd.args(["bench", "gpu", "--quick"]);
    let out = output_within(cmd, Duration::from_secs(180));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("adapter: "), "{stdout}");
    if stdout.contains("a software adapter") {
        assert!(
            stdout.contains("every \"GPU\" figure below is a CPU figure"),
            "{stdout}"
        );
    }
    let header = stdout
        .lines()
        .find(|l| l.starts_with("kernel "))
        .unwrap_or_else(|| panic!("no table header: {stdout}"));
    for column in ["local/s", "grid/s", "CPU/s", "GPU÷CPU"] {
        assert!(header.contains(column), "{header}");
    }
    for (row, size) in [
        ("vector add u32", "n=2^16"),
        ("matmul f32", "128x128"),
        ("matmul int8", "128x128"),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(row) && l.contains('|'))
            .unwrap_or_else(|| panic!("no row {row}: {stdout}"));
        assert!(line.contains(size), "{line}");
        // Every figure is a positive, finite rate.
        let ratios: Vec<f64> = line
            .split_whitespace()
            .filter_map(|w| w.strip_suffix('x')?.parse().ok())
            .collect();
        assert_eq!(ratios.len(), 2, "{line}");
        assert!(ratios.iter().all(|r| *r > 0.0 && r.is_finite()), "{line}");
    }
    // The integer kernels agree bit for bit; the f32 matmul within the tolerance.
    for row in ["vector add u32", "matmul int8"] {
        let check = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{row}: ")))
            .unwrap_or_else(|| panic!("no check for {row}: {stdout}"));
        assert!(check.contains("GPU = CPU: identical bytes"), "{check}");
    }
    let check = stdout
        .lines()
        .find(|l| l.starts_with("matmul f32: "))
        .unwrap_or_else(|| panic!("no check for matmul f32: {stdout}"));
    assert!(
        check.contains("GPU = CPU: identical bytes") || check.contains("max rel error"),
        "{check}"
    );
}
