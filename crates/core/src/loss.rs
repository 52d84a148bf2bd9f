//! Why an attempt ended without a result, and whether that counts against its worker.

/// How an attempt was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Loss {
    /// The worker's connection dropped, or another connection with its key replaced it.
    Disconnected,
    /// The worker said it was leaving (its page was hidden or closed, or it was stopped).
    Left,
    /// The worker missed its heartbeats.
    Silent,
    /// The attempt's lease ran out before a result arrived.
    LeaseExpired,
    /// The worker reported that it could not finish the attempt, or sent a result that failed
    /// its checks (digest, signature).
    Failed,
    /// The attempt ran past the task's wall-time limit: that says more about the task than
    /// about the worker.
    OutOfTime,
    /// Taken back because its worker was quarantined.
    Quarantined,
    /// The coordinator restarted while the attempt ran.
    Restarted,
}

impl Loss {
    /// Whether the loss counts against the worker's completion record.
    pub fn blames_worker(self) -> bool {
        match self {
            Loss::Disconnected | Loss::Silent | Loss::LeaseExpired | Loss::Failed => true,
            Loss::Left | Loss::OutOfTime | Loss::Quarantined | Loss::Restarted => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_is_blamed_only_for_what_it_controls() {
        let blamed: Vec<Loss> = [
            Loss::Disconnected,
            Loss::Left,
            Loss::Silent,
            Loss::LeaseExpired,
            Loss::Failed,
            Loss::OutOfTime,
            Loss::Quarantined,
            Loss::Restarted,
        ]
        .into_iter()
        .filter(|l| l.blames_worker())
        .collect();
        assert_eq!(
            blamed,
            [
                Loss::Disconnected,
                Loss::Silent,
                Loss::LeaseExpired,
                Loss::Failed
            ]
        );
    }
}
