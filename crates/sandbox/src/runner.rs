//! A pool of runner threads with large stacks. Spawning a thread per run costs more than
//! instantiating and running a small module, so finished runner threads wait (up to
//! [`IDLE_TIMEOUT`]) for the next job.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How long an idle runner thread waits for a job before exiting.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A unit of work for a runner thread.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// Idle runner threads, each reachable through its job sender.
pub(crate) struct Runners {
    idle: Mutex<Vec<(u64, Sender<Job>)>>,
    next_id: AtomicU64,
    stack_bytes: usize,
}

impl Runners {
    pub(crate) fn new(stack_bytes: usize) -> Arc<Runners> {
        Arc::new(Runners {
            idle: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            stack_bytes,
        })
    }

    /// Runs `job` on an idle runner thread, or on a new one.
    pub(crate) fn submit(self: &Arc<Self>, mut job: Job) -> std::io::Result<()> {
        loop {
            let idle = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let Some((_, tx)) = idle else { break };
            match tx.send(job) {
                Ok(()) => return Ok(()),
                // That runner is gone: try the next one.
                Err(mpsc::SendError(returned)) => job = returned,
            }
        }
        let runners = self.clone();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        std::thread::Builder::new()
            .name(format!("runegrid-task-{id}"))
            .stack_size(self.stack_bytes)
            .spawn(move || runners.serve(id, job))
            .map(drop)
    }

    /// The loop of one runner thread.
    fn serve(self: Arc<Self>, id: u64, first: Job) {
        let mut job = first;
        loop {
            // Jobs report their own panics; this only keeps the thread alive.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            // A fresh channel per idle period: the only sender is in `idle`, so dropping it
            // (shutdown) wakes this thread up to exit.
            let (tx, rx) = mpsc::channel::<Job>();
            self.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((id, tx));
            job = loop {
                match rx.recv_timeout(IDLE_TIMEOUT) {
                    Ok(next) => break next,
                    Err(RecvTimeoutError::Disconnected) => return,
                    Err(RecvTimeoutError::Timeout) => {
                        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                        if let Some(at) = idle.iter().position(|(i, _)| *i == id) {
                            idle.remove(at);
                            return;
                        }
                        // A submitter took this runner just now: its job is on the way.
                    }
                }
            };
        }
    }

    /// Lets every idle runner thread exit now.
    pub(crate) fn shutdown(&self) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}
