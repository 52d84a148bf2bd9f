//! `runegrid bench swarm --quick` end to end: simulated workers speaking the real protocol
//! connect to a real coordinator, every task they answer is verified, the table is printed,
//! and all of them come back after the coordinator is killed and restarted. Timings are not
//! asserted.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn quick_swarm_prints_its_table_and_verifies_every_task() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["bench", "swarm", "--quick", "--dir"])
        .arg(dir.path())
        .env("RUNEGRID_LOG", "warn");
    let out = output_within(cmd, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench swarm failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("workers   ramp/s  RSS MiB"), "{stdout}");
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("200 ") || l.trim_start().starts_with("500 "))
        .collect();
    assert_eq!(rows.len(), 2, "a row for each step:\n{stdout}");
    // Every task submitted was verified.
    let line = stdout
        .lines()
        .find(|l| l.contains(" tasks verified"))
        .unwrap_or_else(|| panic!("no verification line:\n{stdout}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[1], "of", "{line}");
    assert!(words[0].parse::<u64>().unwrap() > 0, "{line}");
    assert_eq!(words[0], words[2], "{line}");
    assert!(stdout.contains("most workers held: 500"), "{stdout}");
    assert!(stdout.contains("all 500 workers back"), "{stdout}");
}
