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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 10_000_000_000,
            memory_bytes: 256 << 20,
            wall_time_ms: 60_000,
            stdout_bytes: 1 << 20,
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
}
