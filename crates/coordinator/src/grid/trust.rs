//! Workers' trust records, and the one way to change them.
//!
//! Every change goes through [`Grid::update_trust`]: when the change moves the worker to
//! another standing, the worker is told, and a quarantined worker's attempts are taken back —
//! whatever the change was (a disagreement, an audit's correction, an abandoned attempt, a
//! release).

use super::{Effects, Grid};
use runegrid_core::{AccountId, AttemptId, Loss, Standing, TrustParams, TrustRecord, WorkerId};
use runegrid_proto::worker::ToWorker;
use runegrid_store::Change;
use std::collections::{HashMap, HashSet};

/// A worker's trust record and owner, for every worker seen since start.
struct Entry {
    record: TrustRecord,
    owner: AccountId,
}

/// The trust records in memory (fresher than the store's while the coordinator runs).
pub(super) struct TrustBook {
    params: TrustParams,
    records: HashMap<WorkerId, Entry>,
    /// Workers whose record changed since it was last written.
    dirty: HashSet<WorkerId>,
}

impl TrustBook {
    pub(super) fn new(params: TrustParams) -> TrustBook {
        TrustBook {
            params,
            records: HashMap::new(),
            dirty: HashSet::new(),
        }
    }

    pub(super) fn params(&self) -> &TrustParams {
        &self.params
    }

    pub(super) fn standing(&self, w: WorkerId) -> Standing {
        self.records
            .get(&w)
            .map_or(Standing::New, |t| t.record.standing(&self.params))
    }

    pub(super) fn record(&self, w: WorkerId) -> Option<&TrustRecord> {
        self.records.get(&w).map(|t| &t.record)
    }

    pub(super) fn owner(&self, w: WorkerId) -> Option<AccountId> {
        self.records.get(&w).map(|t| t.owner)
    }

    /// Makes sure the worker has a record (the stored one, unless memory has a fresher one)
    /// and notes its owner; returns the record.
    pub(super) fn seen(
        &mut self,
        w: WorkerId,
        owner: AccountId,
        stored: TrustRecord,
    ) -> &TrustRecord {
        let e = self.records.entry(w).or_insert(Entry {
            record: stored,
            owner,
        });
        e.owner = owner;
        &e.record
    }

    /// Changes a worker's record; returns its new standing when the change moved it.
    #[must_use]
    fn update(
        &mut self,
        w: WorkerId,
        f: impl FnOnce(&mut TrustRecord, &TrustParams),
    ) -> Option<Standing> {
        let before = self.standing(w);
        let e = self.records.entry(w).or_insert(Entry {
            record: TrustRecord::default(),
            owner: 0,
        });
        f(&mut e.record, &self.params);
        self.dirty.insert(w);
        let after = e.record.standing(&self.params);
        (after != before).then_some(after)
    }

    /// The records changed since the last call, to be written.
    fn take_dirty(&mut self) -> Vec<(WorkerId, TrustRecord)> {
        let dirty: Vec<WorkerId> = self.dirty.drain().collect();
        dirty
            .into_iter()
            .filter_map(|id| self.records.get(&id).map(|t| (id, t.record.clone())))
            .collect()
    }
}

impl Grid {
    pub(super) fn standing(&self, w: WorkerId) -> Standing {
        self.trust.standing(w)
    }

    /// Changes a worker's trust record; if its standing moves, acts on it.
    pub(super) fn update_trust(
        &mut self,
        w: WorkerId,
        f: impl FnOnce(&mut TrustRecord, &TrustParams),
        fx: &mut Effects,
    ) {
        if let Some(standing) = self.trust.update(w, f) {
            self.standing_changed(w, standing, fx);
        }
        // Its speed may have changed, and with it how many attempts it may hold.
        self.refresh_free(w);
    }

    /// Tells a worker its new standing; a quarantined worker's attempts are taken back.
    fn standing_changed(&mut self, w: WorkerId, standing: Standing, fx: &mut Effects) {
        let reason = self.trust.record(w).and_then(|r| r.quarantine.clone());
        tracing::info!(worker = w, standing = standing.as_str(), "standing changed");
        let Some(conn) = self.workers.get(&w) else {
            return;
        };
        fx.send(
            w,
            &conn.tx,
            ToWorker::Standing {
                standing,
                reason: reason.clone(),
            },
        );
        if standing == Standing::Quarantined {
            tracing::warn!(
                worker = w,
                reason = reason.as_deref().unwrap_or(""),
                "worker quarantined"
            );
            let held: Vec<AttemptId> = conn.busy.iter().copied().collect();
            let tx = conn.tx.clone();
            for a in held {
                if self.attempts.get(&a).is_some_and(|x| x.worker == w) {
                    fx.send(
                        w,
                        &tx,
                        ToWorker::Cancel {
                            attempt: a,
                            reason: "worker quarantined".into(),
                        },
                    );
                    self.lose_attempt(a, Loss::Quarantined, "worker quarantined", fx);
                }
            }
        }
    }

    /// A worker's result contradicted a consensus: its record suffers, what it had accepted
    /// alone is audited, and it may be quarantined.
    pub(super) fn caught(&mut self, w: WorkerId, fx: &mut Effects) {
        self.update_trust(w, |r, p| r.record_disagreement(p), fx);
        tracing::warn!(
            worker = w,
            standing = self.standing(w).as_str(),
            "result disagreed with the consensus"
        );
        self.audit_sole_results(w);
    }

    /// Queues the trust records that changed since the last write.
    pub fn flush_trust(&mut self, fx: &mut Effects) {
        for (id, trust) in self.trust.take_dirty() {
            fx.change(Change::WorkerTrust { id, trust });
        }
    }

    /// A worker's trust record as it stands in memory, if seen since start.
    pub fn trust_of(&self, id: WorkerId) -> Option<TrustRecord> {
        self.trust.record(id).cloned()
    }

    /// Lifts a worker's quarantine (it starts over as new); `stored` is its record from the
    /// store, used when it was not seen since start. Returns the new record.
    pub fn release(
        &mut self,
        id: WorkerId,
        owner: AccountId,
        stored: TrustRecord,
        fx: &mut Effects,
    ) -> TrustRecord {
        self.trust.seen(id, owner, stored);
        self.update_trust(id, |r, _| r.release(), fx);
        self.flush_trust(fx);
        // New again: it may want a probe.
        self.probe_candidates.insert(id);
        self.dispatch(fx);
        self.trust.record(id).cloned().unwrap_or_default()
    }
}
