//! The sandbox thread pool and the program cache.

use crate::Event;
use ed25519_dalek::{Signer, SigningKey};
use runegrid_core::{AttemptId, ExecStatus, Execution};
use runegrid_proto::worker::{Assign, AttemptResult, ToCoordinator, result_message};
use runegrid_sandbox::{Program, Sandbox, SandboxError, TaskRun};
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

/// Deliberate faults, for tests and benchmarks of verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Every result is wrong (stdout altered), correctly signed.
    Lie,
}

impl std::str::FromStr for Misbehaviour {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "lie" => Ok(Misbehaviour::Lie),
            _ => Err(format!("unknown misbehaviour {s}: expected lie")),
        }
    }
}

struct Job {
    assign: Assign,
    program: Arc<Program>,
    session: u64,
}

/// Threads that run attempts.
pub struct Pool {
    tx: mpsc::Sender<Job>,
    session: Arc<AtomicU64>,
    cancelled: Arc<Mutex<HashSet<AttemptId>>>,
}

impl Pool {
    pub fn start(
        slots: u32,
        sandbox: Arc<Sandbox>,
        key: SigningKey,
        events: UnboundedSender<Event>,
        misbehaviour: Option<Misbehaviour>,
    ) -> Pool {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let session = Arc::new(AtomicU64::new(0));
        let cancelled = Arc::new(Mutex::new(HashSet::new()));
        for i in 0..slots.max(1) {
            let rx = rx.clone();
            let sandbox = sandbox.clone();
            let key = key.clone();
            let events = events.clone();
            let session = session.clone();
            let cancelled = cancelled.clone();
            std::thread::Builder::new()
                .name(format!("runegrid-slot-{i}"))
                .stack_size(runegrid_sandbox::THREAD_STACK_BYTES)
                .spawn(move || {
                    loop {
                        let job = {
                            let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
                            match rx.recv() {
                                Ok(j) => j,
                                Err(_) => return,
                            }
                        };
                        if job.session != session.load(Ordering::Relaxed) {
                            continue; // assigned on a connection that is gone
                        }
                        let attempt = job.assign.attempt;
                        if cancelled
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&attempt)
                        {
                            let msg = ToCoordinator::Failed {
                                attempt,
                                reason: "cancelled".into(),
                            };
                            let _ = events.send(Event::Out {
                                session: job.session,
                                msg,
                            });
                            continue;
                        }
                        let msg = execute(&sandbox, &key, &job, &events, misbehaviour);
                        cancelled
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&attempt);
                        let _ = events.send(Event::Out {
                            session: job.session,
                            msg,
                        });
                    }
                })
                .expect("spawn sandbox thread");
        }
        Pool {
            tx,
            session,
            cancelled,
        }
    }

    pub fn set_session(&self, s: u64) {
        self.session.store(s, Ordering::Relaxed);
    }

    pub fn forget_session(&self) {
        self.session.store(0, Ordering::Relaxed);
        self.cancelled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub fn submit(&self, assign: Assign, program: Arc<Program>) {
        let session = self.session.load(Ordering::Relaxed);
        let _ = self.tx.send(Job {
            assign,
            program,
            session,
        });
    }

    /// Marks an attempt cancelled: skipped if not started yet.
    pub fn cancel(&self, attempt: AttemptId) {
        self.cancelled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(attempt);
    }
}

fn execute(
    sandbox: &Sandbox,
    key: &SigningKey,
    job: &Job,
    events: &UnboundedSender<Event>,
    misbehaviour: Option<Misbehaviour>,
) -> ToCoordinator {
    let a = &job.assign;
    let started = Instant::now();
    let run = TaskRun {
        args: &a.args,
        env: &a.env,
        stdin: &a.stdin,
        seed: a.seed,
        limits: a.limits,
    };
    let session = job.session;
    let attempt = a.attempt;
    let mut on_stdout = |chunk: &[u8]| {
        let msg = ToCoordinator::Output {
            attempt,
            data: chunk.to_vec(),
        };
        let _ = events.send(Event::Out { session, msg });
    };
    match sandbox.run(&job.program, &run, &mut on_stdout) {
        Ok(out) => {
            let mut exec: Execution = out.execution;
            if misbehaviour == Some(Misbehaviour::Lie) {
                exec.stdout.extend_from_slice(b" (forged)");
                if exec.status != (ExecStatus::Exited { code: 0 }) {
                    exec.status = ExecStatus::Exited { code: 0 };
                }
            }
            let digest = exec.digest();
            let signature = hex::encode(key.sign(&result_message(attempt, &digest)).to_bytes());
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stderr = tail(&stderr, 4096);
            ToCoordinator::Result(AttemptResult {
                attempt,
                status: exec.status,
                stdout: exec.stdout,
                fuel: exec.fuel,
                digest,
                signature,
                stderr,
                elapsed_us: started.elapsed().as_micros() as u64,
            })
        }
        Err(e) => {
            let reason = match e {
                SandboxError::Timeout { wall_time_ms } => {
                    format!("wall time limit of {wall_time_ms} ms reached")
                }
                other => other.to_string(),
            };
            ToCoordinator::Failed { attempt, reason }
        }
    }
}

fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}

/// Compiles a program off the async runtime and reports back.
pub fn compile_async(
    sandbox: Arc<Sandbox>,
    sha256: String,
    module: Vec<u8>,
    events: UnboundedSender<Event>,
) {
    std::thread::spawn(move || {
        let result = sandbox.compile(&module).map_err(|e| e.to_string());
        let _ = events.send(Event::Compiled { sha256, result });
    });
}

/// A program from the disk cache, if present and intact.
pub fn cached_program(dir: &Path, sha256: &str) -> Option<Vec<u8>> {
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes = std::fs::read(dir.join("programs").join(format!("{sha256}.wasm"))).ok()?;
    let actual = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    (actual == sha256).then_some(bytes)
}

/// Saves a program into the disk cache (best effort).
pub fn store_program(dir: &Path, sha256: &str, module: &[u8]) {
    let path = dir.join("programs").join(format!("{sha256}.wasm"));
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, module)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .is_err()
    {
        tracing::warn!(path = %path.display(), "cannot cache program on disk");
    }
}

/// Total physical memory in bytes (0 when unknown).
pub fn total_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
