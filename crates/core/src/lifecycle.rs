//! The life of a job, a task and an attempt: the states the coordinator records, the store
//! keeps and the API shows (same strings on the wire and in the database).

use serde::{Deserialize, Serialize};

/// Life of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Some tasks are not finished.
    Active,
    /// Accepted (and its worst case held) with a bid (`max_price`) below the grid's price:
    /// nothing runs until the price falls to the bid.
    WaitingForPrice,
    /// Every task is verified or failed.
    Done,
    /// Cancelled by its owner.
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Active => "active",
            JobState::WaitingForPrice => "waiting_for_price",
            JobState::Done => "done",
            JobState::Cancelled => "cancelled",
        }
    }
    /// Done or cancelled: nothing about it changes any more (an audit may still correct a
    /// result).
    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Done | JobState::Cancelled)
    }

    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "active" => JobState::Active,
            "waiting_for_price" => JobState::WaitingForPrice,
            "done" => JobState::Done,
            "cancelled" => JobState::Cancelled,
            _ => return None,
        })
    }
}

/// Life of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for (more) attempts or results.
    Queued,
    /// At least one attempt is running.
    Running,
    /// A quorum agreed and the agreed run exited with code 0.
    Verified,
    /// A quorum agreed on a failure (non-zero exit, out of fuel, trap, ...), or no quorum
    /// could be reached.
    Failed,
    /// The job was cancelled.
    Cancelled,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Verified => "verified",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<TaskState> {
        Some(match s {
            "queued" => TaskState::Queued,
            "running" => TaskState::Running,
            "verified" => TaskState::Verified,
            "failed" => TaskState::Failed,
            "cancelled" => TaskState::Cancelled,
            _ => return None,
        })
    }
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Verified | TaskState::Failed | TaskState::Cancelled
        )
    }
}

/// Life of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AttemptState {
    Running,
    /// Finished with a signed result.
    Done,
    /// No result: the worker vanished, the lease expired or the wall time ran out.
    Lost,
    /// No longer needed.
    Cancelled,
}

impl AttemptState {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptState::Running => "running",
            AttemptState::Done => "done",
            AttemptState::Lost => "lost",
            AttemptState::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<AttemptState> {
        Some(match s {
            "running" => AttemptState::Running,
            "done" => AttemptState::Done,
            "lost" => AttemptState::Lost,
            "cancelled" => AttemptState::Cancelled,
            _ => return None,
        })
    }
}

display_as_str!(JobState, TaskState, AttemptState);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings_are_the_stored_strings() {
        for s in [
            JobState::Active,
            JobState::WaitingForPrice,
            JobState::Done,
            JobState::Cancelled,
        ] {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
            assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
        for s in [
            TaskState::Queued,
            TaskState::Running,
            TaskState::Verified,
            TaskState::Failed,
            TaskState::Cancelled,
        ] {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
            assert_eq!(TaskState::parse(s.as_str()), Some(s));
        }
        for s in [
            AttemptState::Running,
            AttemptState::Done,
            AttemptState::Lost,
            AttemptState::Cancelled,
        ] {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
            assert_eq!(AttemptState::parse(s.as_str()), Some(s));
        }
        assert_eq!(TaskState::parse("unverified"), None);
    }
}
