//! What /proc says about a process: CPU time, resident memory, open files, per-thread CPU.

use super::TICKS_PER_SEC;

/// What /proc says about a process.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ProcSample {
    /// User and system CPU time, in ticks.
    pub cpu_ticks: u64,
    pub rss_bytes: u64,
    pub open_fds: u64,
}

pub(super) fn proc_sample(pid: u32) -> ProcSample {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14,
    // stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| -> u64 { fields.get(n - 3).and_then(|f| f.parse().ok()).unwrap_or(0) };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    ProcSample {
        cpu_ticks: field(14) + field(15),
        rss_bytes: rss_kib * 1024,
        open_fds,
    }
}

/// A process's soft limit on open files.
pub(super) fn open_file_limit(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// CPU time of each of a process's threads, in ticks, by thread name (summed over threads
/// sharing a name).
pub(super) fn thread_ticks(pid: u32) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let name = head.split_once('(').map_or("?", |(_, n)| n).to_string();
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, t)) => *t += ticks,
            None => out.push((name, ticks)),
        }
    }
    out
}

/// The busiest threads between two [`thread_ticks`], as `name 57%` over `secs`.
pub(super) fn busiest(before: &[(String, u64)], after: &[(String, u64)], secs: f64) -> String {
    let mut d: Vec<(String, u64)> = after
        .iter()
        .map(|(n, t)| {
            let b = before.iter().find(|(m, _)| m == n).map_or(0, |(_, t)| *t);
            (n.clone(), t.saturating_sub(b))
        })
        .filter(|(_, t)| *t > 0)
        .collect();
    d.sort_by_key(|x| std::cmp::Reverse(x.1));
    d.iter()
        .take(4)
        .map(|(n, t)| format!("{n} {:.0}%", *t as f64 / TICKS_PER_SEC / secs * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}
