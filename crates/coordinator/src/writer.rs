//! The store writer: one thread owns the write connection and applies changes in batches.
//!
//! Changes from many events that arrive while a transaction commits are applied together in
//! the next one (group commit), so throughput does not pay one commit per event.

use runegrid_core::{JobId, TaskId};
use runegrid_store::{
    Account, Change, NewJob, NewTask, NewWorker, ProgramRecord, Store, StoreError, WorkerRecord,
};
use std::sync::mpsc;
use tokio::sync::oneshot;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Msg {
    Apply(Vec<Change>),
    Flush(oneshot::Sender<()>),
    CreateJob(Box<NewJob>, Vec<NewTask>, Reply<(JobId, Vec<TaskId>)>),
    PutProgram(Box<ProgramRecord>, Reply<()>),
    UpsertWorker(NewWorker, Reply<WorkerRecord>),
    CreateAccount(String, String, bool, Reply<Account>),
}

/// Handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Msg>,
}

impl Writer {
    pub fn spawn(mut store: Box<dyn Store>) -> Writer {
        let (tx, rx) = mpsc::channel::<Msg>();
        std::thread::Builder::new()
            .name("runegrid-store-writer".into())
            .spawn(move || {
                let mut batch: Vec<Change> = Vec::new();
                let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
                while let Ok(first) = rx.recv() {
                    let mut next = Some(first);
                    // Drain what is already queued, in order; requests that need an answer
                    // are served after the changes queued before them are written.
                    while let Some(msg) = next.take() {
                        match msg {
                            Msg::Apply(c) => batch.extend(c),
                            Msg::Flush(ack) => flushes.push(ack),
                            other => {
                                commit(store.as_mut(), &mut batch);
                                serve(store.as_mut(), other);
                            }
                        }
                        if batch.len() < 50_000 {
                            next = rx.try_recv().ok();
                        }
                    }
                    commit(store.as_mut(), &mut batch);
                    for ack in flushes.drain(..) {
                        let _ = ack.send(());
                    }
                }
            })
            .expect("spawn store writer thread");
        Writer { tx }
    }

    /// Queues changes; they are written in order with the next batch.
    pub fn apply(&self, changes: Vec<Change>) {
        if !changes.is_empty() {
            let _ = self.tx.send(Msg::Apply(changes));
        }
    }

    /// Waits until every change queued before this call is committed.
    pub async fn flush(&self) {
        let (ack, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(ack)).is_ok() {
            let _ = rx.await;
        }
    }

    pub async fn create_job(
        &self,
        job: NewJob,
        tasks: Vec<NewTask>,
    ) -> Result<(JobId, Vec<TaskId>), StoreError> {
        self.ask(|r| Msg::CreateJob(Box::new(job), tasks, r)).await
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
        admin: bool,
    ) -> Result<Account, StoreError> {
        self.ask(|r| Msg::CreateAccount(name, token_hash, admin, r))
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

fn commit(store: &mut dyn Store, batch: &mut Vec<Change>) {
    if batch.is_empty() {
        return;
    }
    coalesce_worker_seen(batch);
    if let Err(e) = store.apply(batch) {
        // Retry change by change so one bad change cannot drop the others.
        tracing::error!(error = %e, changes = batch.len(), "store batch failed; applying one by one");
        for c in batch.iter() {
            if let Err(e) = store.apply(std::slice::from_ref(c)) {
                tracing::error!(error = %e, change = ?c, "store change failed");
            }
        }
    }
    batch.clear();
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
        Msg::CreateJob(job, tasks, r) => {
            let _ = r.send(store.create_job(&job, &tasks));
        }
        Msg::PutProgram(p, r) => {
            let _ = r.send(store.put_program(&p));
        }
        Msg::UpsertWorker(w, r) => {
            let _ = r.send(store.upsert_worker(&w));
        }
        Msg::CreateAccount(n, h, a, r) => {
            let _ = r.send(store.create_account(&n, &h, a));
        }
        Msg::Apply(_) | Msg::Flush(_) => unreachable!("handled by the batch loop"),
    }
}
