//! Rebuilding the grid from the store at start: the ledger is replayed from the journal,
//! unfinished jobs come back, attempts that were running are lost (the coordinator restarted
//! under them), finished attempts keep their digests, and every task that still needs work is
//! queued.

use super::{CreditTerms, Effects, Grid, NextIds, ResultMem, now_ms};
use crate::blobs::BlobStore;
use crate::metrics::Metrics;
use crate::programs::ProgramBytes;
use runegrid_core::{AccountId, TaskId, TrustParams, WorkerId};

/// Transfers read from the journal at a time.
const JOURNAL_PAGE: u32 = 10_000;
use runegrid_store::{AttemptRecord, AttemptState, Change, JobState, Store, StoreError, TaskState};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A grid rebuilt from the store, and the store changes the rebuilding made.
pub struct Recovered {
    pub grid: Grid,
    pub effects: Effects,
}

impl Grid {
    /// Loads unfinished jobs from `store`, marks attempts that were running as lost, and
    /// queues what still needs work.
    pub fn recover(
        store: &mut dyn Store,
        blobs: &BlobStore,
        params: TrustParams,
        lease_grace: Duration,
        credits: CreditTerms,
        metrics: Metrics,
        cache_bytes: u64,
    ) -> Result<Recovered, StoreError> {
        let max = store.max_ids()?;
        let mut grid = Grid::new(
            params,
            lease_grace,
            NextIds {
                job: max.job + 1,
                task: max.task + 1,
                attempt: max.attempt + 1,
                grant: max.grant + 1,
            },
            credits,
            metrics,
        );
        let mut after = 0;
        loop {
            let page = store.journal(after, JOURNAL_PAGE)?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            grid.books.replay(&page).map_err(|e| {
                StoreError::Corrupt(format!(
                    "the journal of transfers breaks the ledger's rules: {e}"
                ))
            })?;
        }
        // Attempts stored before credits do not name their payee: their worker's owner is.
        let owners: HashMap<WorkerId, AccountId> = store
            .workers()?
            .into_iter()
            .map(|w| (w.id, w.owner))
            .collect();
        let mut fx = Effects::default();
        grid.reset_cache(cache_bytes);
        if cache_bytes > 0 {
            grid.load_cache(store.cached_results()?, &mut fx);
        } else {
            for e in store.cached_results()? {
                fx.change(Change::CacheEvict { key: e.key });
            }
        }
        let accounts: HashMap<AccountId, String> = store
            .accounts()?
            .into_iter()
            .map(|a| (a.id, a.name))
            .collect();
        let jobs = store.unfinished_jobs()?;
        let n_jobs = jobs.len();
        for job in jobs {
            let Some(program) = store.program(&job.program)? else {
                tracing::error!(job = job.id, program = %job.program, "program of an unfinished job is missing; failing the job");
                fx.change(Change::FinishJob {
                    id: job.id,
                    state: JobState::Done,
                    at: now_ms(),
                });
                continue;
            };
            let program = Arc::new(ProgramBytes {
                sha256: program.instrumented_sha256,
                module: program.instrumented,
            });
            let tasks = store.tasks(job.id)?;
            let attempts = store.attempts(job.id)?;
            let owner_name = accounts.get(&job.owner).cloned().unwrap_or_default();
            let mounts = blobs.mounts(&job.blobs);
            if job.state == JobState::WaitingForPrice {
                grid.waiting.push(job.id);
            }
            grid.insert_job(job, owner_name, program, mounts, tasks);
            for a in attempts {
                let owner = a.owner.or_else(|| owners.get(&a.worker).copied());
                grid.recover_attempt(a, owner, &mut fx);
            }
        }
        let ids: Vec<TaskId> = grid.tasks.keys().copied().collect();
        for id in ids {
            let waits = grid.tasks.get(&id).is_some_and(|t| {
                grid.jobs
                    .get(&t.job)
                    .is_some_and(|j| j.rec.state == JobState::WaitingForPrice)
            });
            if !waits && grid.tasks.get(&id).is_some_and(|t| !t.state.is_final()) {
                grid.set_state(id, TaskState::Queued);
                grid.evaluate(id, &mut fx);
            }
        }
        if n_jobs > 0 {
            tracing::info!(
                jobs = n_jobs,
                queued = grid.queue.len(),
                "recovered unfinished jobs"
            );
        }
        Ok(Recovered { grid, effects: fx })
    }

    /// A stored attempt of an unfinished task: a result counts again, a running attempt is
    /// lost.
    fn recover_attempt(&mut self, a: AttemptRecord, owner: Option<AccountId>, fx: &mut Effects) {
        // A tolerance job compares results' bytes, which are not kept across a restart: its
        // unfinished tasks' results are forgotten (unpaid) and run again.
        let forget_results = self.tolerance_of_job(a.job).is_some();
        let Some(t) = self.tasks.get_mut(&a.task) else {
            return;
        };
        if t.state.is_final() {
            return;
        }
        match a.state {
            AttemptState::Done if forget_results => {}
            AttemptState::Done => {
                if let (Some(digest), Some(status)) = (a.digest, a.status) {
                    t.results.push(ResultMem {
                        attempt: a.id,
                        worker: a.worker,
                        owner,
                        digest: a.agreed.unwrap_or(digest),
                        signed: digest,
                        outputs: None,
                        status,
                        fuel: a.fuel.unwrap_or(0),
                        stdout: None,
                        stderr: String::new(),
                        files: None,
                    });
                }
            }
            AttemptState::Running => {
                t.lost += 1;
                fx.change(Change::LoseAttempt {
                    id: a.id,
                    error: "coordinator restarted".into(),
                    at: now_ms(),
                });
            }
            AttemptState::Lost => t.lost += 1,
            AttemptState::Cancelled => {}
        }
    }
}
