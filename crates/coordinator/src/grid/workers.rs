//! Worker connections: a worker joins (with its owner and stored trust record), says which
//! blobs it holds, proves itself alive, and goes — leaving, vanishing, replaced by a newer
//! connection with its key, or silent past its heartbeats.

use super::{Effects, Grid, WorkerConn};
use runegrid_core::{AccountId, AttemptId, Loss, Need, Standing, TrustRecord, WorkerId};
use runegrid_proto::worker::{Capabilities, ToWorker};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

impl Grid {
    /// Registers a connected, authenticated worker (with its owner and stored trust record,
    /// unless a fresher one is in memory, and the record its connection keeps of when it was
    /// last heard from); returns its connection number.
    pub fn worker_connected(
        &mut self,
        id: WorkerId,
        owner: AccountId,
        stored: TrustRecord,
        caps: &Capabilities,
        link: WorkerLink,
        fx: &mut Effects,
    ) -> u64 {
        let WorkerLink { tx, heard, hello } = link;
        let conn = self.next_conn;
        self.next_conn += 1;
        if let Some(old) = self.workers.get(&id).filter(|old| old.hello > hello) {
            // The worker said hello on the registered connection after this one: this one is
            // older, its registration only finished later (a worker that gave up on a slow
            // handshake and dialled again). The newer stays.
            tracing::info!(
                worker = id,
                conn = old.conn,
                "an older connection of a registered worker finished registering: refused"
            );
            fx.send(
                id,
                &tx,
                ToWorker::Reject {
                    message: "a newer connection with this worker's key is registered".into(),
                },
            );
            return conn;
        }
        let params = *self.trust.params();
        let record = self.trust.seen(id, owner, stored);
        let standing = record.standing(&params);
        if standing != Standing::New {
            let reason = record.quarantine.clone();
            fx.send(id, &tx, ToWorker::Standing { standing, reason });
        }
        if let Some(old) = self.workers.get(&id) {
            tracing::info!(
                worker = id,
                "worker reconnected; dropping its previous connection"
            );
            fx.send(
                id,
                &old.tx,
                ToWorker::Reject {
                    message: "another connection with this worker's key replaced this one; \
                              each worker process needs its own data directory (--data)"
                        .into(),
                },
            );
            self.drop_worker(id, Loss::Disconnected, "worker reconnected", fx);
        }
        self.workers.insert(
            id,
            WorkerConn {
                conn,
                slots: caps.slots,
                busy: HashSet::new(),
                tx,
                heard,
                hello,
                owner,
                memory_bytes: caps.memory_bytes,
                blob_space: caps.blob_space,
                blobs: caps.blobs.clone(),
                gpu: caps.gpu.clone().map(|g| Arc::new(*g)),
                browser: caps.runtime.starts_with("browser"),
                probing: None,
                jobs_seen: HashSet::new(),
                probes_given: 0,
            },
        );
        self.refresh_free(id);
        self.dispatch(fx);
        conn
    }

    /// Connected workers that could run a task mounting `blob` (of `size` bytes) within
    /// `memory_bytes`, and how many of them hold the blob already.
    pub fn workers_for(&self, blob: &str, size: u64, memory_bytes: u64) -> (u32, u32) {
        let need = Need {
            memory_bytes,
            blobs: vec![(blob.to_string(), size)],
            ..Need::default()
        };
        let mut able = 0;
        let mut holding = 0;
        for (id, w) in &self.workers {
            if runegrid_core::schedule::eligible(&self.view(*id, w), &need) {
                able += 1;
                holding += u32::from(w.blobs.iter().any(|b| b == blob));
            }
        }
        (able, holding)
    }

    /// A worker says which blobs it holds now.
    pub fn worker_blobs(&mut self, id: WorkerId, conn: u64, held: Vec<String>, fx: &mut Effects) {
        if let Some(w) = self.workers.get_mut(&id).filter(|w| w.conn == conn) {
            w.blobs = held;
            self.dispatch(fx);
        }
    }

    /// A worker connection ended: `Loss::Left` when the worker said it was leaving (its
    /// attempts go back to the queue at once, unblamed), `Loss::Disconnected` otherwise.
    pub fn worker_gone(
        &mut self,
        id: WorkerId,
        conn: u64,
        loss: Loss,
        why: &str,
        fx: &mut Effects,
    ) {
        if self.workers.get(&id).is_some_and(|w| w.conn == conn) {
            self.drop_worker(id, loss, why, fx);
            self.dispatch(fx);
        }
    }

    /// Sends a message to a connected worker (dropped if that connection is gone).
    pub fn send(&self, id: WorkerId, conn: u64, msg: ToWorker, fx: &mut Effects) {
        if let Some(w) = self.workers.get(&id).filter(|w| w.conn == conn) {
            fx.send(id, &w.tx, msg);
        }
    }

    /// Workers silent for longer than `limit` lose their attempts and their place.
    pub(super) fn drop_silent_workers(&mut self, now: Instant, limit: Duration, fx: &mut Effects) {
        let silent: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| now.saturating_duration_since(w.heard.at()) > limit)
            .map(|(id, _)| *id)
            .collect();
        for id in silent {
            tracing::warn!(
                worker = id,
                "worker missed its heartbeats; its attempts are lost"
            );
            self.drop_worker(id, Loss::Silent, "worker missed its heartbeats", fx);
        }
    }

    /// Puts a worker in `free` or takes it out, after its attempts, its connection or its speed
    /// changed: it is there while connected and holding fewer attempts than it may
    /// (`schedule::capacity`: twice its slots, its slots while it is slow).
    pub(super) fn refresh_free(&mut self, id: WorkerId) {
        let speed = self.trust.record(id).map_or(0.0, |r| r.speed);
        let most = |w: &WorkerConn| runegrid_core::schedule::capacity(w.slots, speed);
        match self.workers.get(&id) {
            Some(w) if (w.busy.len() as u64) < u64::from(most(w)) => {
                if w.busy.is_empty() {
                    self.probe_candidates.insert(id);
                }
                self.free.insert(id)
            }
            _ => self.free.remove(&id),
        };
    }

    fn drop_worker(&mut self, id: WorkerId, loss: Loss, why: &str, fx: &mut Effects) {
        let Some(w) = self.workers.remove(&id) else {
            return;
        };
        self.refresh_free(id);
        let held: Vec<AttemptId> = w.busy.into_iter().collect();
        for a in held {
            self.lose_attempt(a, loss, why, fx);
        }
        self.flush_trust(fx);
    }
}

/// How the grid reaches a connected worker, its connection's record of when it was last heard
/// from, and when (in [`hello_order`]) its hello came.
pub struct WorkerLink {
    pub tx: mpsc::UnboundedSender<ToWorker>,
    pub heard: Arc<Heard>,
    pub hello: u64,
}

impl WorkerLink {
    /// A link with its own record, heard from now, its hello the latest (for tests).
    #[cfg(test)]
    pub fn new(tx: mpsc::UnboundedSender<ToWorker>) -> WorkerLink {
        WorkerLink {
            tx,
            heard: Arc::new(Heard::now()),
            hello: hello_order(),
        }
    }
}

static HELLOS: AtomicU64 = AtomicU64::new(1);

/// The order of a hello among all this process received: a connection's is taken when its
/// hello is checked, before it registers, so that of two connections of one worker the one
/// that said hello last is kept, whichever finishes registering last.
pub fn hello_order() -> u64 {
    HELLOS.fetch_add(1, Ordering::Relaxed)
}

/// When a worker was last heard from: milliseconds since the process's first use of it, in an
/// atomic, so the worker's connection task records each message as it arrives — not when it
/// gets the grid lock, which a busy coordinator may hand out late enough to make a healthy
/// worker look silent.
#[derive(Debug)]
pub struct Heard(AtomicU64);

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

impl Heard {
    pub fn now() -> Heard {
        let h = Heard(AtomicU64::new(0));
        h.touch();
        h
    }

    pub fn touch(&self) {
        self.0
            .store(EPOCH.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub fn at(&self) -> Instant {
        *EPOCH + Duration::from_millis(self.0.load(Ordering::Relaxed))
    }
}
