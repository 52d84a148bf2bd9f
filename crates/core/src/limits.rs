//! Resource limits of a task, their defaults and their allowed ranges.

use serde::{Deserialize, Serialize};

/// Limits applied to every attempt of a job's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Fuel: roughly one unit per WebAssembly instruction executed.
    pub fuel: u64,
    /// Linear memory cap in bytes (rounded down to 64 KiB pages).
    pub memory_bytes: u64,
    /// Wall-clock cap per attempt in milliseconds. Not part of the determinism contract: an
    /// attempt that runs past it is lost, not compared.
    pub wall_time_ms: u64,
    /// Cap on bytes written to stdout.
    pub stdout_bytes: u64,
    /// Cap on what the task may store in its writable in-memory file system (preopened `/`,
    /// with `/tmp` and `/out` empty directories; the read-only blobs stay under `/blobs`): each
    /// file or directory it creates costs 64 bytes plus its name's length in bytes, and every
    /// file its size in bytes. An operation that would pass the cap fails with ENOSPC ("no
    /// space left on device"); the run does not trap. The file system is discarded after every
    /// attempt. 0 means no writable file system at all: no `/` preopen, only the read-only
    /// blobs under `/blobs`, if any.
    pub scratch_bytes: u64,
    /// Cap on the total size of the files the task leaves under `/out`, which come back with
    /// its result (and are compared between replicas). Past it the result is `output_limit`
    /// and carries no files.
    pub output_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 10_000_000_000,
            memory_bytes: 256 << 20,
            wall_time_ms: 60_000,
            stdout_bytes: 1 << 20,
            scratch_bytes: 64 << 20,
            output_bytes: 16 << 20,
        }
    }
}

/// A limit outside its allowed range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limit {name} = {value} is out of range ({min}..={max})")]
pub struct LimitsError {
    pub name: &'static str,
    pub value: u64,
    pub min: u64,
    pub max: u64,
}

impl Limits {
    pub const MAX_FUEL: u64 = 1_000_000_000_000_000;
    pub const MAX_MEMORY: u64 = 4 << 30;
    pub const MIN_MEMORY: u64 = 64 << 10;
    pub const MAX_WALL_MS: u64 = 24 * 3600 * 1000;
    pub const MAX_STDOUT: u64 = 64 << 20;
    pub const MAX_SCRATCH: u64 = 4 << 30;
    pub const MAX_OUTPUT: u64 = 64 << 20;

    /// Checks every limit against its range.
    pub fn validate(&self) -> Result<(), LimitsError> {
        let check = |name, value, min, max| {
            if value < min || value > max {
                Err(LimitsError {
                    name,
                    value,
                    min,
                    max,
                })
            } else {
                Ok(())
            }
        };
        check("fuel", self.fuel, 1, Self::MAX_FUEL)?;
        check(
            "memory_bytes",
            self.memory_bytes,
            Self::MIN_MEMORY,
            Self::MAX_MEMORY,
        )?;
        check("wall_time_ms", self.wall_time_ms, 1, Self::MAX_WALL_MS)?;
        check("stdout_bytes", self.stdout_bytes, 0, Self::MAX_STDOUT)?;
        check("scratch_bytes", self.scratch_bytes, 0, Self::MAX_SCRATCH)?;
        check("output_bytes", self.output_bytes, 0, Self::MAX_OUTPUT)?;
        Ok(())
    }

    /// Memory cap in 64 KiB pages.
    pub fn memory_pages(&self) -> u32 {
        (self.memory_bytes / 65536).min(u32::MAX as u64) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Limits::default().validate().unwrap();
    }

    #[test]
    fn out_of_range_is_named() {
        let l = Limits {
            fuel: 0,
            ..Limits::default()
        };
        let e = l.validate().unwrap_err();
        assert_eq!(e.name, "fuel");
        assert!(e.to_string().starts_with("limit fuel = 0 is out of range"));
        let l = Limits {
            memory_bytes: 8 << 30,
            ..Limits::default()
        };
        assert_eq!(l.validate().unwrap_err().name, "memory_bytes");
    }

    #[test]
    fn scratch_range() {
        for ok in [0, 1, 64 << 20, Limits::MAX_SCRATCH] {
            let l = Limits {
                scratch_bytes: ok,
                ..Limits::default()
            };
            l.validate().unwrap();
        }
        let l = Limits {
            scratch_bytes: Limits::MAX_SCRATCH + 1,
            ..Limits::default()
        };
        let e = l.validate().unwrap_err();
        assert_eq!(e.name, "scratch_bytes");
        assert_eq!((e.min, e.max), (0, 4 << 30));
    }

    #[test]
    fn scratch_defaults_when_missing() {
        let l: Limits = serde_json::from_str(
            r#"{"fuel":1,"memory_bytes":65536,"wall_time_ms":1,"stdout_bytes":1}"#,
        )
        .unwrap();
        assert_eq!(l.scratch_bytes, 64 << 20);
    }
}
