//! The coordinator's shared core: the grid behind its one lock, the store writer and reader,
//! the program cache, the dashboard's history, the blob files. Each entry point runs one
//! transition of the grid and flushes its effects in the same critical section.

use crate::Config;
use crate::blobs::BlobStore;
use crate::grid::{
    AccountCredits, Effects, Grid, HoldError, Live, Quote, Recovered, Submission, Subscription,
};
use crate::programs::{ProgramBytes, ProgramCache};
use crate::stats::{History, STATS_INTERVAL};
use crate::writer::Writer;
use runegrid_core::ledger::{LedgerError, Micros};
use runegrid_core::{AccountId, AttemptId, JobId, Loss, TrustParams, TrustRecord, WorkerId};
use runegrid_proto::worker::{AttemptResult, Capabilities, ToWorker};
use runegrid_proto::{GridStats, JobEvent, JobResults, JobStatus};
use runegrid_store::{Account, AccountKind, Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};

pub struct App {
    pub config: Config,
    grid: Mutex<Grid>,
    pub writer: Writer,
    reader: Mutex<Box<dyn Store>>,
    /// Token hash → account, filled on first use.
    pub accounts: Mutex<HashMap<String, runegrid_store::Account>>,
    programs: ProgramCache,
    history: History,
    /// Blob files (`<data dir>/blobs`), and the database's blobs with a PostgreSQL store.
    pub blobs: BlobStore,
    /// Relay operators caught altering results (`relay.rs`).
    pub relays: crate::relay::Relays,
    /// The checkers of results' signatures, in batches (`proto::signatures`).
    pub signatures: runegrid_proto::signatures::Signatures,
}

impl App {
    /// Rebuilds the grid from the store (see `grid::recover`) and starts the writer.
    pub fn recover(
        config: Config,
        mut write: Box<dyn Store>,
        read: Box<dyn Store>,
    ) -> Result<App, StoreError> {
        let blob_dir = config.data_dir.join("blobs");
        // With a PostgreSQL store, blobs live in the database too (`blobs`).
        let blob_db = match &config.store {
            crate::StoreLocation::Postgres(url) => {
                Some(Arc::new(runegrid_store::PostgresBlobs::open(url)?))
            }
            crate::StoreLocation::DataDir => None,
        };
        let blobs = BlobStore::open(blob_dir.clone(), blob_db).map_err(|e| StoreError::Open {
            path: blob_dir.display().to_string(),
            message: e.to_string(),
        })?;
        let Recovered { mut grid, effects } = Grid::recover(
            write.as_mut(),
            &blobs,
            config.trust,
            config.lease_grace,
            config.credits,
            config.metrics.clone(),
            config.cache_bytes,
        )?;
        let writer = Writer::spawn(write, config.metrics.clone());
        grid.flush(effects, &writer);
        Ok(App {
            config,
            grid: Mutex::new(grid),
            writer,
            reader: Mutex::new(read),
            accounts: Mutex::new(HashMap::new()),
            programs: ProgramCache::default(),
            history: History::default(),
            blobs,
            relays: crate::relay::Relays::default(),
            signatures: runegrid_proto::signatures::Signatures::spawn(),
        })
    }

    /// The grid, locked. A transition that panicked may have left the grid and the store
    /// apart, so a poisoned lock ends the process: a restart rebuilds the grid from the store.
    fn lock(&self) -> MutexGuard<'_, Grid> {
        self.grid.lock().unwrap_or_else(|_: PoisonError<_>| {
            tracing::error!("a grid transition panicked; exiting so that a restart recovers from the store");
            eprintln!("runegrid: a grid transition panicked; exiting so that a restart recovers from the store");
            std::process::exit(70)
        })
    }

    /// Runs a transition and flushes its effects while the grid is still locked; returns its
    /// answer and the sequence number of its store changes (for [`Writer::committed`]).
    fn with<T>(&self, f: impl FnOnce(&mut Grid, &mut Effects) -> T) -> (T, u64) {
        let mut grid = self.lock();
        let mut fx = Effects::default();
        let out = f(&mut grid, &mut fx);
        let seq = grid.flush(fx, &self.writer);
        (out, seq)
    }

    /// Runs `f` on the read connection (call from a blocking context).
    pub fn read<T>(&self, f: impl FnOnce(&mut dyn Store) -> T) -> T {
        let mut r = self.reader.lock().unwrap_or_else(PoisonError::into_inner);
        f(r.as_mut())
    }

    /// Accepts a job: gives it and its tasks ids, queues their creation in the store, and
    /// dispatches at once (the commit runs alongside). Returns the job id and the sequence
    /// number to wait for before telling anyone the job is accepted.
    pub fn add_job(&self, s: Submission) -> Result<(JobId, u64), HoldError> {
        let (id, seq) = self.with(|g, fx| {
            let id = g.add_job(s, fx)?;
            g.dispatch(fx);
            Ok::<_, HoldError>(id)
        });
        Ok((id?, seq))
    }

    /// [`App::add_job`], with a follower of the job's events subscribed before any attempt is
    /// dispatched, so it gets every attempt's output from its first byte.
    pub fn add_job_followed(
        &self,
        s: Submission,
    ) -> Result<(JobId, u64, broadcast::Receiver<JobEvent>), HoldError> {
        let (out, seq) = self.with(|g, fx| {
            let (id, rx) = g.add_job_followed(s, fx)?;
            g.dispatch(fx);
            Ok::<_, HoldError>((id, rx))
        });
        let (id, rx) = out?;
        Ok((id, seq, rx))
    }

    /// Forgets a job whose creation could not be stored (its hold with it).
    pub fn discard_job(&self, id: JobId) {
        self.with(|g, fx| {
            g.forget_hold(id);
            g.cancel(id, fx);
            g.evict(&[id]);
        });
    }

    /// Grants `amount` micro-credits to `account`; returns the sequence number to wait for.
    pub fn grant(&self, account: AccountId, amount: Micros) -> Result<u64, LedgerError> {
        let (r, seq) = self.with(|g, fx| g.grant(account, amount, fx));
        r.map(|()| seq)
    }

    /// Creates an account with the grid's welcome credits (users and admins; contributors
    /// submit nothing and get none).
    pub async fn create_account(
        &self,
        name: String,
        token_hash: String,
        kind: AccountKind,
    ) -> Result<Account, StoreError> {
        let welcome = if kind == AccountKind::Contributor {
            0
        } else {
            self.config.credits.welcome
        };
        let a = self
            .writer
            .create_account(name, token_hash, kind, welcome)
            .await?;
        self.lock().welcomed(a.id, welcome);
        Ok(a)
    }

    /// Sets an account's leaderboard name; returns once it is stored.
    pub async fn set_display_name(
        &self,
        account: AccountId,
        name: Option<String>,
    ) -> Result<(), crate::writer::NotStored> {
        let seq = self.writer.apply(vec![runegrid_store::Change::DisplayName {
            account,
            name: name.clone(),
        }]);
        self.writer.committed(seq).await?;
        for a in self
            .accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values_mut()
        {
            if a.id == account {
                a.display_name = name.clone();
            }
        }
        Ok(())
    }

    /// Every account that earned credits, with what it earned.
    pub fn earnings(&self) -> Vec<(AccountId, Micros)> {
        self.lock().earnings()
    }

    /// `GET /v1/price`.
    pub fn quote(&self) -> Quote {
        self.lock().quote()
    }

    /// An account's credits.
    pub fn account_credits(&self, id: AccountId) -> AccountCredits {
        self.lock().account_credits(id)
    }

    /// What a job paid out of its escrow so far.
    pub fn job_spent(&self, id: JobId) -> Micros {
        self.lock().job_spent(id)
    }

    /// Steps the price (and starts the jobs waiting for it) without waiting a second.
    #[cfg(test)]
    pub fn step_price(&self) {
        self.with(|g, fx| {
            g.step_price_now(fx);
            g.dispatch(fx);
        });
    }

    /// Checks the ledger's invariants on the grid's books (balances + holds = minted).
    #[cfg(test)]
    pub fn check_ledger(&self) -> Result<(), runegrid_core::ledger::InvariantError> {
        self.lock().ledger().check()
    }

    /// Registers a connected, authenticated worker; returns its connection number.
    pub fn worker_connected(
        &self,
        id: WorkerId,
        owner: AccountId,
        stored: TrustRecord,
        caps: &Capabilities,
        link: crate::grid::WorkerLink,
    ) -> u64 {
        self.with(|g, fx| g.worker_connected(id, owner, stored, caps, link, fx))
            .0
    }

    /// Connected workers that could run a task mounting `blob` (of `size` bytes) within
    /// `memory_bytes`, and how many of them hold the blob already.
    pub fn workers_for(&self, blob: &str, size: u64, memory_bytes: u64) -> (u32, u32) {
        self.lock().workers_for(blob, size, memory_bytes)
    }

    /// A worker says which blobs it holds now.
    pub fn worker_blobs(&self, id: WorkerId, conn: u64, held: Vec<String>) {
        self.with(|g, fx| g.worker_blobs(id, conn, held, fx));
    }

    /// A worker connection ended; `loss` says how (a worker that said it was leaving is not
    /// blamed for its attempts).
    pub fn worker_gone(&self, id: WorkerId, conn: u64, loss: Loss, why: &str) {
        self.with(|g, fx| g.worker_gone(id, conn, loss, why, fx));
    }

    /// A program by upload hash, from the cache or the store (call from a blocking context).
    pub fn program(&self, sha256: &str) -> Result<Option<Arc<ProgramBytes>>, StoreError> {
        if let Some(p) = self.cached_program(sha256) {
            return Ok(Some(p));
        }
        let Some(rec) = self.read(|s| s.program(sha256))? else {
            return Ok(None);
        };
        let p = Arc::new(ProgramBytes {
            sha256: rec.instrumented_sha256,
            module: rec.instrumented,
        });
        self.cache_program(sha256, p.clone());
        Ok(Some(p))
    }

    pub fn cached_program(&self, sha256: &str) -> Option<Arc<ProgramBytes>> {
        self.programs.get(sha256)
    }

    pub fn cache_program(&self, sha256: &str, p: Arc<ProgramBytes>) {
        self.programs.insert(sha256, p);
    }

    /// Sends a message to a connected worker (dropped if that connection is gone).
    pub fn send(&self, id: WorkerId, conn: u64, msg: ToWorker) {
        self.with(|g, fx| g.send(id, conn, msg, fx));
    }

    /// The program a worker asks for (by instrumented hash), if it holds an attempt of it.
    pub fn program_for(&self, worker: WorkerId, sha256: &str) -> Option<Arc<ProgramBytes>> {
        self.lock().program_for(worker, sha256)
    }

    pub fn on_output(&self, worker: WorkerId, attempt: AttemptId, data: &[u8]) {
        self.with(|g, fx| g.on_output(worker, attempt, data, fx));
    }

    pub fn on_result(&self, worker: WorkerId, res: AttemptResult) {
        self.with(|g, fx| {
            g.on_result(worker, res, fx);
            g.dispatch(fx);
        });
    }

    /// A worker could not finish an attempt; `loss` says whether that is its fault.
    pub fn on_failed(&self, worker: WorkerId, attempt: AttemptId, loss: Loss, reason: &str) {
        self.with(|g, fx| g.on_failed(worker, attempt, loss, reason, fx));
    }

    /// Periodic duties: silent workers, expired leases, stragglers, trust records to write.
    /// Returns the finished jobs due to leave memory.
    #[cfg(test)]
    pub fn tick(&self) -> Vec<JobId> {
        self.tick_with_grace(Duration::ZERO)
    }

    /// [`App::tick`], allowing workers `grace` more silence than their heartbeats' (see
    /// [`ticker`]).
    pub fn tick_with_grace(&self, grace: Duration) -> Vec<JobId> {
        let silent_after = self.config.heartbeat * 3 + grace;
        self.with(|g, fx| g.tick(Instant::now(), silent_after, fx))
            .0
    }

    /// Forgets finished jobs (their state is in the store).
    pub fn evict(&self, jobs: &[JobId]) {
        self.lock().evict(jobs);
    }

    /// Status of a job held in memory. `None` when not in memory.
    pub fn job_status(&self, id: JobId) -> Option<(AccountId, JobStatus)> {
        self.lock().job_status(id)
    }

    /// Results of a job held in memory.
    pub fn job_results(&self, id: JobId) -> Option<(AccountId, JobResults)> {
        self.lock().job_results(id)
    }

    /// Event stream of a job held in memory, with the first results already shown.
    pub fn subscribe(&self, id: JobId) -> Option<Subscription> {
        self.lock().subscribe(id)
    }

    /// The completion flag of a job held in memory.
    pub fn done_flag(&self, id: JobId) -> Option<(AccountId, watch::Receiver<bool>)> {
        self.lock().done_flag(id)
    }

    /// Cancels a job: queued and running tasks end as cancelled.
    pub fn cancel(&self, id: JobId) -> bool {
        self.with(|g, fx| g.cancel(id, fx)).0
    }

    /// Writes the trust records that changed since the last write.
    pub fn flush_trust(&self) {
        self.with(|g, fx| g.flush_trust(fx));
    }

    /// A worker's trust record as it stands in memory (fresher than the store's), if seen
    /// since start.
    pub fn trust_of(&self, id: WorkerId) -> Option<TrustRecord> {
        self.lock().trust_of(id)
    }

    pub fn trust_params(&self) -> TrustParams {
        self.config.trust
    }

    /// Lifts a worker's quarantine (it starts over as new); `stored` is its record from the
    /// store, used when it was not seen since start. Returns the new record.
    pub fn release(&self, id: WorkerId, owner: AccountId, stored: TrustRecord) -> TrustRecord {
        self.with(|g, fx| g.release(id, owner, stored, fx)).0
    }

    #[cfg(test)]
    pub fn tasks_without_progress(&self, job: JobId) -> Vec<runegrid_core::TaskId> {
        self.lock().tasks_without_progress(job)
    }

    /// Connected workers and what they hold now.
    pub fn connected(&self) -> HashMap<WorkerId, Live> {
        self.lock().connected()
    }

    /// Takes a sample of the grid into the dashboard's history.
    pub fn record_sample(&self) {
        let s = self.lock().sample();
        self.history.record(s);
    }

    /// What `GET /metrics` reads of the grid when scraped.
    pub fn gauges(&self) -> crate::metrics::Grid {
        self.lock().gauges()
    }

    /// `GET /v1/stats`.
    pub fn stats(&self) -> GridStats {
        let now = self.lock().sample();
        self.history.stats(now)
    }
}

/// How late the ticker has run lately. A tick that runs late means the coordinator was starved
/// (of CPU, or of the grid lock held long), and its connections' tasks, which note when each
/// worker was heard from, were starved too: a worker must not be judged silent for the
/// coordinator's own stall. So the lateness of any tick in the last silence window is added to
/// the silence allowed.
#[derive(Default)]
struct Stall {
    /// The largest lateness seen, and until when it counts.
    late: Duration,
    until: Option<Instant>,
}

impl Stall {
    /// The grace for a tick due at `due` and running at `now`, silence window `window`.
    fn grace(&mut self, due: Instant, now: Instant, window: Duration) -> Duration {
        let late = now.saturating_duration_since(due);
        if self.until.is_none_or(|u| now > u) {
            self.late = Duration::ZERO;
        }
        if late > Duration::from_millis(100) {
            if late > self.late {
                tracing::warn!(
                    late_ms = late.as_millis() as u64,
                    "the coordinator's periodic duties ran late: workers are allowed that much more silence"
                );
            }
            self.late = self.late.max(late);
            self.until = Some(now + window);
        }
        self.late
    }
}

/// Periodic duties until the process ends.
pub async fn ticker(app: Arc<App>) {
    let period =
        (app.config.heartbeat / 4).clamp(Duration::from_millis(50), Duration::from_millis(500));
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sampled = Instant::now();
    let mut stall = Stall::default();
    app.record_sample();
    loop {
        let due = interval.tick().await.into_std();
        if sampled.elapsed() >= STATS_INTERVAL {
            sampled = Instant::now();
            app.record_sample();
        }
        let grace = stall.grace(due, Instant::now(), app.config.heartbeat * 3);
        let finished = app.tick_with_grace(grace);
        if !finished.is_empty() {
            app.writer.flush().await;
            app.evict(&finished);
        }
    }
}

/// Looks for stragglers every [`grid::stragglers::CHECK_EVERY`] until the process ends: the
/// straggler of a job is often its last attempt, and no result comes to prompt a look (the
/// ticker's period can be half a second, more than many a job's whole run).
pub async fn straggler_watch(app: Arc<App>) {
    let mut interval = tokio::time::interval(crate::grid::STRAGGLER_CHECK_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        app.with(|g, fx| g.back_up_stragglers(fx));
    }
}

#[cfg(test)]
mod stall_tests {
    use super::Stall;
    use std::time::{Duration, Instant};

    #[test]
    fn a_late_tick_gives_workers_its_lateness_for_one_silence_window() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let window = ms(6000);
        let mut s = Stall::default();
        // On time (or nearly): no grace.
        assert_eq!(s.grace(t0, t0 + ms(5), window), ms(0));
        // Due at 500 ms, run at 2,500: 2 s late, and that much grace...
        assert_eq!(s.grace(t0 + ms(500), t0 + ms(2500), window), ms(2000));
        // ...for the ticks after it, on time, within the window...
        assert_eq!(s.grace(t0 + ms(3000), t0 + ms(3000), window), ms(2000));
        // ...a smaller lateness does not shrink it...
        assert_eq!(s.grace(t0 + ms(3500), t0 + ms(4000), window), ms(2000));
        // ...and it ends a window after the last late tick.
        assert_eq!(s.grace(t0 + ms(11000), t0 + ms(11000), window), ms(0));
    }
}
