//! Why an attempt ended without a result, and whether that counts against its worker.

use crate::failure::{self, FailureKind};

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
    /// The worker reported that it could not finish the attempt (with the kind of failure it
    /// gave, if any), or sent a result that failed its checks (no kind).
    Failed(Option<FailureKind>),
    /// Taken back because its worker was quarantined.
    Quarantined,
    /// The coordinator restarted while the attempt ran.
    Restarted,
    /// The coordinator could not keep the result (writing its output files failed).
    Unkept,
    /// The worker was connected through a relay that was caught altering a result (a relay
    /// checks every result before forwarding it, so a broken one is its doing): the relay
    /// was dropped, and the loss is not the worker's.
    Relay,
}

impl Loss {
    /// Whether the loss counts against the worker's completion record.
    pub fn blames_worker(self) -> bool {
        match self {
            Loss::Disconnected | Loss::Silent | Loss::LeaseExpired => true,
            Loss::Failed(kind) => failure::blames_worker(kind),
            Loss::Left | Loss::Quarantined | Loss::Restarted | Loss::Unkept | Loss::Relay => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_is_blamed_only_for_what_it_controls() {
        let mut all = vec![
            Loss::Disconnected,
            Loss::Left,
            Loss::Silent,
            Loss::LeaseExpired,
            Loss::Failed(None),
            Loss::Quarantined,
            Loss::Restarted,
            Loss::Unkept,
            Loss::Relay,
        ];
        all.extend(FailureKind::ALL.map(|k| Loss::Failed(Some(k))));
        let spared: Vec<Loss> = all.into_iter().filter(|l| !l.blames_worker()).collect();
        assert_eq!(
            spared,
            [
                Loss::Left,
                Loss::Quarantined,
                Loss::Restarted,
                Loss::Unkept,
                Loss::Relay,
                Loss::Failed(Some(FailureKind::WallTime))
            ]
        );
    }
}
