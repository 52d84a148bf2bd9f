//! The store writer: one thread owns the write connection and applies changes in batches.
//!
//! Changes from many events that arrive while a transaction commits are applied together in
//! the next one (group commit), so throughput does not pay one commit per event. Every batch of
//! changes handed over gets a sequence number; [`Writer::committed`] waits until a sequence
//! number is durable, which is how an answer to a user waits for what it promises. Each commit's
//! time and size go to the coordinator's metrics.

use crate::metrics::Metrics;
use runegrid_core::ledger::Micros;
use runegrid_store::{
    Account, AccountKind, Change, NewWorker, ProgramRecord, Store, StoreError, WorkerRecord,
};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use tokio::sync::{oneshot, watch};

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Msg {
    Apply(u64, Vec<Change>),
    PutProgram(Box<ProgramRecord>, Reply<()>),
    UpsertWorker(NewWorker, Reply<WorkerRecord>),
    CreateAccount(String, String, AccountKind, Micros, Reply<Account>),
}

/// Handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Msg>,
    next_seq: Arc<AtomicU64>,
    committed: watch::Receiver<u64>,
    /// Sequence numbers whose changes could not be written.
    failed: Arc<Mutex<BTreeSet<u64>>>,
}

/// A batch of changes that could not be stored.
#[derive(Debug, thiserror::Error)]
#[error("the store could not record the change (see the coordinator log)")]
pub struct NotStored;

impl Writer {
    pub fn spawn(mut store: Box<dyn Store>, metrics: Metrics) -> Writer {
        let (tx, rx) = mpsc::channel::<Msg>();
        let (committed_tx, committed) = watch::channel(0u64);
        let failed = Arc::new(Mutex::new(BTreeSet::new()));
        let failed_w = failed.clone();
        std::thread::Builder::new()
            .name("runegrid-store-writer".into())
            .spawn(move || {
                let mut batch: Vec<(u64, Vec<Change>)> = Vec::new();
                while let Ok(first) = rx.recv() {
                    let mut next = Some(first);
                    let mut size = 0usize;
                    // Drain what is already queued, in order; requests that need an answer are
                    // served after the changes queued before them are written.
                    while let Some(msg) = next.take() {
                        match msg {
                            Msg::Apply(seq, c) => {
                                size += c.len();
                                batch.push((seq, c));
                            }
                            other => {
                                commit(
                                    store.as_mut(),
                                    &mut batch,
                                    &committed_tx,
                                    &failed_w,
                                    &metrics,
                                );
                                serve(store.as_mut(), other);
                            }
                        }
                        if size < 50_000 {
                            next = rx.try_recv().ok();
                        }
                    }
                    commit(
                        store.as_mut(),
                        &mut batch,
                        &committed_tx,
                        &failed_w,
                        &metrics,
                    );
                }
            })
            .expect("spawn store writer thread");
        Writer {
            tx,
            next_seq: Arc::new(AtomicU64::new(1)),
            committed,
            failed,
        }
    }

    /// Queues changes; they are written in order with the next batch. Returns their sequence
    /// number (0 when there was nothing to write).
    pub fn apply(&self, changes: Vec<Change>) -> u64 {
        if changes.is_empty() {
            return 0;
        }
        let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
        let _ = self.tx.send(Msg::Apply(seq, changes));
        seq
    }

    /// Waits until the changes with sequence number `seq` (and all before) are committed.
    pub async fn committed(&self, seq: u64) -> Result<(), NotStored> {
        if seq == 0 {
            return Ok(());
        }
        let mut rx = self.committed.clone();
        if rx.wait_for(|c| *c >= seq).await.is_err() {
            return Err(NotStored);
        }
        if self
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&seq)
        {
            return Err(NotStored);
        }
        Ok(())
    }

    /// Waits until everything queued so far is committed.
    pub async fn flush(&self) {
        let seq = self.next_seq.load(Ordering::SeqCst).saturating_sub(1);
        let _ = self.committed(seq).await;
    }

    pub async fn put_program(&self, p: ProgramRecord) -> Result<(), StoreError> {
        self.ask(|r| Msg::PutProgram(Box::new(p), r)).await
    }

    pub async fn upsert_worker(&self, w: NewWorker) -> Result<WorkerRecord, StoreError> {
        self.ask(|r| Msg::UpsertWorker(w, r)).await
    }

    pub async fn create_account(
        &self,
        name: String,
        token_hash: String,
        kind: AccountKind,
        welcome: Micros,
    ) -> Result<Account, StoreError> {
        self.ask(|r| Msg::CreateAccount(name, token_hash, kind, welcome, r))
            .await
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Msg) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .map_err(|_| StoreError::Corrupt("store writer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Corrupt("store writer stopped".into()))?
    }
}

fn commit(
    store: &mut dyn Store,
    batch: &mut Vec<(u64, Vec<Change>)>,
    committed: &watch::Sender<u64>,
    failed: &Mutex<BTreeSet<u64>>,
    metrics: &Metrics,
) {
    let Some(last) = batch.last().map(|(s, _)| *s) else {
        return;
    };
    let started = std::time::Instant::now();
    let mut all: Vec<Change> = batch.iter().flat_map(|(_, c)| c.iter().cloned()).collect();
    coalesce_worker_seen(&mut all);
    if let Err(e) = store.apply(&all) {
        if matches!(e, StoreError::LeaseLost) {
            crate::failover::lost("a write was refused: another coordinator holds the lease");
        }
        // Retry message by message so one bad change cannot take the others down with it.
        tracing::error!(error = %e, changes = all.len(), "store batch failed; applying one by one");
        for (seq, changes) in batch.iter() {
            if let Err(e) = store.apply(changes) {
                tracing::error!(error = %e, seq, "store changes failed");
                failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(*seq);
            }
        }
    }
    metrics.commit(all.len(), started.elapsed().as_secs_f64());
    batch.clear();
    committed.send_replace(last);
}

/// Folds the batch's `WorkerSeen` changes into one per worker (they commute).
fn coalesce_worker_seen(batch: &mut Vec<Change>) {
    let mut seen: std::collections::BTreeMap<i64, (i64, u32)> = Default::default();
    batch.retain(|c| match c {
        Change::WorkerSeen {
            id,
            at,
            completed_delta,
        } => {
            let e = seen.entry(*id).or_insert((*at, 0));
            e.0 = e.0.max(*at);
            e.1 += completed_delta;
            false
        }
        _ => true,
    });
    batch.extend(
        seen.into_iter()
            .map(|(id, (at, completed_delta))| Change::WorkerSeen {
                id,
                at,
                completed_delta,
            }),
    );
}

fn serve(store: &mut dyn Store, msg: Msg) {
    match msg {
        Msg::PutProgram(p, r) => {
            let _ = r.send(fenced(store.put_program(&p)));
        }
        Msg::UpsertWorker(w, r) => {
            let _ = r.send(fenced(store.upsert_worker(&w)));
        }
        Msg::CreateAccount(n, h, a, w, r) => {
            let _ = r.send(fenced(store.create_account(&n, &h, a, w)));
        }
        Msg::Apply(..) => unreachable!("handled by the batch loop"),
    }
}

/// A write's outcome, unless it was refused for a lost lease: then nothing this coordinator
/// does may reach the store any more (see `failover`).
fn fenced<T>(r: Result<T, StoreError>) -> Result<T, StoreError> {
    if let Err(StoreError::LeaseLost) = r {
        crate::failover::lost("a write was refused: another coordinator holds the lease");
    }
    r
}
