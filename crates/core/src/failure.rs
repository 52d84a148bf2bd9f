//! Why an attempt ended without a comparable result, as its worker reports it, and whether that
//! counts against the worker.

use serde::{Deserialize, Serialize};

/// Why a worker's attempt ended without a comparable result. The worker protocol's `failed`
/// message carries it as `kind` (snake_case), next to a human-readable `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The run passed its wall-time limit (the one limit that is not deterministic).
    WallTime,
    /// The worker stopped the attempt because the coordinator cancelled it.
    Cancelled,
    /// The worker could not get or compile the program (its bytes did not match their hash, or
    /// its engine refused them).
    Program,
    /// The worker could not get one of the blobs the task mounts.
    Blob,
    /// The task is malformed (e.g. two blobs with one name): no worker could run it.
    InvalidTask,
    /// The worker or its engine failed: instantiation, exhausted resources, a browser that
    /// cannot reproduce the native answer, a bug.
    Internal,
}

impl FailureKind {
    /// Every kind, for exhaustive tests and documentation.
    pub const ALL: [FailureKind; 6] = [
        FailureKind::WallTime,
        FailureKind::Cancelled,
        FailureKind::Program,
        FailureKind::Blob,
        FailureKind::InvalidTask,
        FailureKind::Internal,
    ];

    /// Whether an attempt that ended this way counts against its worker (as abandoned).
    ///
    /// - `WallTime`: no. It says more about the task (or its limit) than about the worker: an
    ///   honest worker runs out of wall time on the same task.
    /// - `Cancelled`: yes. An honest worker cancels only when told to, and by then the
    ///   coordinator has taken the attempt back, so the report finds nothing to blame; an
    ///   attempt still the worker's was dropped on its own.
    /// - `Program`: yes. Every program was validated and instrumented at upload and compiles on
    ///   a conforming engine; the worker took work it cannot do.
    /// - `Blob`: yes. The coordinator holds every blob a job mounts (checked at submission) and
    ///   gives blob tasks only to workers with room for them.
    /// - `InvalidTask`: yes. The coordinator checks a job's mounts at submission, so an honest
    ///   worker never reports it.
    /// - `Internal`: yes: the worker's own failure.
    pub fn blames_worker(self) -> bool {
        match self {
            FailureKind::WallTime => false,
            FailureKind::Cancelled
            | FailureKind::Program
            | FailureKind::Blob
            | FailureKind::InvalidTask
            | FailureKind::Internal => true,
        }
    }
}

/// Whether a failed attempt counts against its worker: [`FailureKind::blames_worker`], and yes
/// when the kind is unknown (the worker did not say, or the coordinator rejected its result).
pub fn blames_worker(kind: Option<FailureKind>) -> bool {
    kind.is_none_or(FailureKind::blames_worker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_wall_time_spares_the_worker() {
        for kind in FailureKind::ALL {
            assert_eq!(
                blames_worker(Some(kind)),
                kind != FailureKind::WallTime,
                "{kind:?}"
            );
        }
        assert!(blames_worker(None), "an unknown failure is the worker's");
    }

    #[test]
    fn kinds_are_snake_case_on_the_wire() {
        let names: Vec<String> = FailureKind::ALL
            .iter()
            .map(|k| serde_json::to_string(k).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                r#""wall_time""#,
                r#""cancelled""#,
                r#""program""#,
                r#""blob""#,
                r#""invalid_task""#,
                r#""internal""#
            ]
        );
        for kind in FailureKind::ALL {
            let s = serde_json::to_string(&kind).unwrap();
            assert_eq!(serde_json::from_str::<FailureKind>(&s).unwrap(), kind);
        }
    }
}
