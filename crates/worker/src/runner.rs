//! Running attempts (`Slots`: the sandbox's runs, at most `--slots` at once, each reported
//! back signed, or misbehaving on purpose) and the program cache on disk.

use crate::Event;
use ed25519_dalek::{Signer, SigningKey};
use runegrid_core::{AttemptId, ExecStatus, Execution};
use runegrid_proto::worker::{
    Assign, AssignDigest, AttemptResult, ResultFile, ToCoordinator, assign_digest, result_message,
    signed_failure,
};
use runegrid_sandbox::{
    Blob, DoneSink, Program, RunOutput, Sandbox, SandboxError, StdoutSink, TaskRun,
};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

/// Deliberate faults, for tests and benchmarks of verification. Every result stays correctly
/// signed: these are workers that lie, not forgers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Misbehaviour {
    /// `lie`: every result is wrong, each in its own way (independent liars never agree): its
    /// stdout starts with a forged marker, in the chunks streamed and in the result.
    Lie,
    /// `lie:P`: each result is wrong with probability P.
    LieSometimes(f64),
    /// `lie-after:N`: honest for N results (earning trust), then always wrong.
    LieAfter(u32),
    /// `collude`: every result is wrong in the same way as every other colluder's.
    Collude,
    /// `slow:F`: correct results, delivered F times later than they took.
    Slow(f64),
    /// `vanish:P`: with probability P an attempt ends the process before its result is sent.
    Vanish(f64),
    /// `drift:N`: every `f32` in its output files moved N ULPs up, as a GPU that rounds
    /// differently would (outputs that are not whole `f32` arrays are left alone).
    Drift(u32),
}

const EXPECTED: &str = "expected lie, lie:P, lie-after:N, collude, slow:F, vanish:P or drift:N";

impl std::str::FromStr for Misbehaviour {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        let num = |what: &str| -> Result<f64, String> {
            let a = arg.ok_or_else(|| format!("{name} needs {what}: {EXPECTED}"))?;
            a.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| format!("{name}: {a} is not a valid {what}"))
        };
        let prob = || -> Result<f64, String> {
            let p = num("a probability")?;
            if p > 1.0 {
                return Err(format!("{name}: probability {p} is above 1"));
            }
            Ok(p)
        };
        match (name, arg) {
            ("lie", None) => Ok(Misbehaviour::Lie),
            ("lie", Some(_)) => Ok(Misbehaviour::LieSometimes(prob()?)),
            ("lie-after", _) => Ok(Misbehaviour::LieAfter(num("a count")? as u32)),
            ("collude", None) => Ok(Misbehaviour::Collude),
            ("slow", _) => {
                let f = num("a factor")?;
                if f < 1.0 {
                    return Err(format!("slow: factor {f} is below 1"));
                }
                Ok(Misbehaviour::Slow(f))
            }
            ("vanish", _) => Ok(Misbehaviour::Vanish(prob()?)),
            ("drift", _) => Ok(Misbehaviour::Drift(num("a number of ULPs")? as u32)),
            _ => Err(format!("unknown misbehaviour {s}: {EXPECTED}")),
        }
    }
}

/// A program ready to run: a compiled WASI module, or a GPU kernel.
pub enum Runnable {
    Wasm(Arc<Program>),
    Kernel(Arc<crate::gpu::KernelProgram>),
}

/// Runs attempts in the sandbox (or on the GPU), at most `slots` at once; the rest wait in
/// order.
pub struct Slots {
    slots: u32,
    running: u32,
    pending: VecDeque<(Assign, Arc<Runnable>, Vec<Blob>, u64)>,
    sandbox: Arc<Sandbox>,
    gpu: Option<Arc<crate::gpu::Device>>,
    reporter: Reporter,
}

impl Slots {
    pub fn new(
        slots: u32,
        sandbox: Arc<Sandbox>,
        gpu: Option<Arc<crate::gpu::Device>>,
        key: SigningKey,
        events: UnboundedSender<Event>,
        misbehaviour: Option<Misbehaviour>,
    ) -> Slots {
        Slots {
            slots: slots.max(1),
            running: 0,
            pending: VecDeque::new(),
            sandbox,
            gpu,
            reporter: Reporter {
                key,
                events,
                misbehaviour,
                produced: Arc::new(AtomicU32::new(0)),
            },
        }
    }

    /// Runs the attempt now if a slot is free, else queues it; `blobs` are its mounts.
    pub fn submit(
        &mut self,
        assign: Assign,
        program: Arc<Runnable>,
        blobs: Vec<Blob>,
        session: u64,
    ) {
        self.pending.push_back((assign, program, blobs, session));
        self.fill();
    }

    /// A run ended: its slot is free again.
    pub fn finished(&mut self) {
        self.running = self.running.saturating_sub(1);
        self.fill();
    }

    /// Removes a queued attempt; false when it is not queued (running, or unknown).
    pub fn cancel(&mut self, attempt: AttemptId) -> bool {
        let before = self.pending.len();
        self.pending.retain(|(a, _, _, _)| a.attempt != attempt);
        self.pending.len() != before
    }

    /// Drops queued attempts (their connection is gone, so they are lost anyway).
    pub fn clear(&mut self) {
        self.pending.clear();
    }

    fn fill(&mut self) {
        while self.running < self.slots {
            let Some((assign, program, blobs, session)) = self.pending.pop_front() else {
                return;
            };
            self.running += 1;
            self.start(assign, &program, &blobs, session);
        }
    }

    fn start(&self, a: Assign, program: &Runnable, blobs: &[Blob], session: u64) {
        let program = match program {
            Runnable::Wasm(p) => p,
            Runnable::Kernel(k) => {
                let on_done = self
                    .reporter
                    .done_sink(a.attempt, assign_digest(&a), session, None);
                match &self.gpu {
                    Some(gpu) => gpu.spawn(k.clone(), &a, blobs, on_done),
                    None => on_done(Err(SandboxError::Internal(
                        "this worker has no GPU: it cannot run a GPU task".into(),
                    ))),
                }
                return;
            }
        };
        let run = TaskRun {
            args: &a.args,
            env: &a.env,
            stdin: &a.stdin,
            seed: a.seed,
            limits: a.limits,
            blobs,
        };
        // An always-lying worker shows its lie from the first byte it streams, as a worker that
        // computed something else would.
        let forged_prefix = (self.reporter.misbehaviour == Some(Misbehaviour::Lie))
            .then(|| format!("(forged {:016x}) ", rand::random::<u64>()).into_bytes());
        let on_stdout = self
            .reporter
            .stdout_sink(a.attempt, session, forged_prefix.clone());
        let on_done = self
            .reporter
            .done_sink(a.attempt, assign_digest(&a), session, forged_prefix);
        self.sandbox.spawn(program, &run, on_stdout, on_done);
    }
}

/// What reports a run back to the connection: the key that signs results, and the
/// misbehaviour (if any) the worker plays.
#[derive(Clone)]
struct Reporter {
    key: SigningKey,
    events: UnboundedSender<Event>,
    misbehaviour: Option<Misbehaviour>,
    /// Results produced so far (for `lie-after`).
    produced: Arc<AtomicU32>,
}

impl Reporter {
    /// Streams an attempt's stdout as it is written (after a liar's forged prefix).
    fn stdout_sink(
        &self,
        attempt: AttemptId,
        session: u64,
        mut forged_prefix: Option<Vec<u8>>,
    ) -> StdoutSink {
        let events = self.events.clone();
        Box::new(move |chunk: &[u8]| {
            let data = match forged_prefix.take() {
                Some(mut p) => {
                    p.extend_from_slice(chunk);
                    p
                }
                None => chunk.to_vec(),
            };
            let msg = ToCoordinator::Output { attempt, data };
            let _ = events.send(Event::Out { session, msg });
        })
    }

    /// Ends an attempt: a signed result or a failure, delivered as the misbehaviour says.
    /// `assign` is the digest of the assignment run, signed with the result.
    fn done_sink(
        &self,
        attempt: AttemptId,
        assign: AssignDigest,
        session: u64,
        forged_prefix: Option<Vec<u8>>,
    ) -> DoneSink {
        let reporter = self.clone();
        let started = Instant::now();
        Box::new(move |r: Result<RunOutput, SandboxError>| {
            let produced = reporter.produced.fetch_add(1, Ordering::Relaxed);
            let msg = match r {
                Ok(out) => reporter.result(out, attempt, &assign, forged_prefix, produced, started),
                Err(e) => failed(&reporter.key, attempt, &assign, &e),
            };
            reporter.deliver(msg, attempt, session, started);
        })
    }

    /// The signed result of a run (made wrong first if this worker lies).
    fn result(
        &self,
        out: RunOutput,
        attempt: AttemptId,
        assign: &AssignDigest,
        forged_prefix: Option<Vec<u8>>,
        produced: u32,
        started: Instant,
    ) -> ToCoordinator {
        let mut exec = out.execution;
        let mut out_files = out.files;
        self.forge(&mut exec, forged_prefix, produced);
        if let Some(Misbehaviour::Drift(n)) = self.misbehaviour {
            drift(&mut exec, &mut out_files, n);
        }
        let digest = exec.digest();
        let signature = hex::encode(
            self.key
                .sign(&result_message(attempt, assign, &digest))
                .to_bytes(),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let files = exec
            .files
            .into_iter()
            .zip(out_files)
            .map(|(file, data)| ResultFile { file, data })
            .collect();
        ToCoordinator::Result(AttemptResult {
            attempt,
            status: exec.status,
            stdout: exec.stdout,
            fuel: exec.fuel,
            digest,
            signature,
            stderr: tail(&stderr, 4096),
            elapsed_us: started.elapsed().as_micros() as u64,
            files,
        })
    }

    /// Makes an execution wrong the way the misbehaviour says (an honest worker: untouched);
    /// `produced` counts the results before this one.
    fn forge(&self, exec: &mut Execution, forged_prefix: Option<Vec<u8>>, produced: u32) {
        if let Some(mut p) = forged_prefix {
            p.append(&mut exec.stdout);
            exec.stdout = p;
            exec.status = ExecStatus::Exited { code: 0 };
        }
        let forge = match self.misbehaviour {
            Some(Misbehaviour::LieSometimes(p)) if rand::random::<f64>() < p => {
                Some(format!(" (forged {:016x})", rand::random::<u64>()))
            }
            Some(Misbehaviour::LieAfter(n)) if produced >= n => {
                Some(format!(" (forged {:016x})", rand::random::<u64>()))
            }
            Some(Misbehaviour::Collude) => Some(" (forged together)".to_string()),
            _ => None,
        };
        if let Some(f) = forge {
            exec.stdout.extend_from_slice(f.as_bytes());
            exec.status = ExecStatus::Exited { code: 0 };
        }
    }

    /// Sends the message that ends an attempt: now, later (`slow`), or never, ending the
    /// process (`vanish`).
    fn deliver(&self, msg: ToCoordinator, attempt: AttemptId, session: u64, started: Instant) {
        match self.misbehaviour {
            Some(Misbehaviour::Vanish(p)) if rand::random::<f64>() < p => {
                tracing::warn!(attempt, "misbehaving on purpose: vanishing mid-task");
                std::process::exit(17);
            }
            Some(Misbehaviour::Slow(f)) => {
                let delay = started.elapsed().mul_f64(f - 1.0);
                let events = self.events.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    let _ = events.send(Event::Done { session, msg });
                });
            }
            _ => {
                let _ = self.events.send(Event::Done { session, msg });
            }
        }
    }
}

/// Why a run produced no result, as the protocol says it (signed, over the assignment run).
fn failed(
    key: &SigningKey,
    attempt: AttemptId,
    assign: &AssignDigest,
    e: &SandboxError,
) -> ToCoordinator {
    signed_failure(key, attempt, assign, e.to_string(), Some(e.failure_kind()))
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

/// Compiles a program (a GPU kernel: checks it) off the async runtime and reports back.
pub fn compile_async(
    sandbox: Arc<Sandbox>,
    sha256: String,
    module: Vec<u8>,
    events: UnboundedSender<Event>,
) {
    std::thread::spawn(move || {
        let result = if runegrid_core::gpu::is_kernel(&module) {
            crate::gpu::KernelProgram::parse(&module).map(|k| Runnable::Kernel(Arc::new(k)))
        } else {
            sandbox.compile(&module).map(Runnable::Wasm)
        }
        .map(Arc::new);
        let _ = events.send(Event::Compiled { sha256, result });
    });
}

/// A program from the disk cache, if present and intact.
pub fn cached_program(dir: &Path, sha256: &str) -> Option<Vec<u8>> {
    if !runegrid_proto::is_sha256(sha256) {
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

/// Moves every `f32` of each output file that is a whole `f32` array `n` ULPs up (NaNs and
/// infinities stay), and updates the files' records.
fn drift(exec: &mut Execution, files: &mut [Vec<u8>], n: u32) {
    use sha2::Digest as _;
    for (record, data) in exec.files.iter_mut().zip(files.iter_mut()) {
        if data.len() % 4 != 0 {
            continue;
        }
        for c in data.chunks_exact_mut(4) {
            let x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            let mut y = x;
            for _ in 0..n.min(1 << 20) {
                if !y.is_finite() {
                    break;
                }
                y = y.next_up();
            }
            if y.is_finite() {
                c.copy_from_slice(&y.to_le_bytes());
            }
        }
        record.sha256 = hex::encode(sha2::Sha256::digest(&data));
    }
}

#[cfg(test)]
mod tests {
    use super::{Misbehaviour, failed};
    use runegrid_sandbox::SandboxError;

    #[test]
    fn a_failed_run_says_its_kind_on_the_wire() {
        let cases = [
            (SandboxError::Timeout { wall_time_ms: 300 }, "wall_time"),
            (SandboxError::Compile("x".into()), "program"),
            (SandboxError::InvalidTask("x".into()), "invalid_task"),
            (SandboxError::Instantiate("x".into()), "internal"),
            (SandboxError::Internal("x".into()), "internal"),
        ];
        for (e, kind) in cases {
            let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
            let assign = runegrid_proto::worker::AssignDigest([5; 32]);
            let v = serde_json::to_value(failed(&key, 7, &assign, &e)).unwrap();
            assert_eq!(v["type"], "failed");
            assert_eq!(v["attempt"], 7);
            assert_eq!(v["kind"], kind, "{e}");
            assert_eq!(v["reason"], e.to_string());
            let check = runegrid_proto::worker::check_failure(
                &key.verifying_key(),
                &assign,
                7,
                &e.to_string(),
                Some(e.failure_kind()),
                v["signature"].as_str().unwrap(),
            );
            assert_eq!(check, Ok(()), "{e}");
        }
    }

    #[test]
    fn misbehaviours_parse() {
        assert_eq!("lie".parse(), Ok(Misbehaviour::Lie));
        assert_eq!("lie:0.3".parse(), Ok(Misbehaviour::LieSometimes(0.3)));
        assert_eq!("lie-after:20".parse(), Ok(Misbehaviour::LieAfter(20)));
        assert_eq!("collude".parse(), Ok(Misbehaviour::Collude));
        assert_eq!("slow:10".parse(), Ok(Misbehaviour::Slow(10.0)));
        assert_eq!("vanish:0.05".parse(), Ok(Misbehaviour::Vanish(0.05)));
        assert_eq!("drift:3".parse(), Ok(Misbehaviour::Drift(3)));
        for bad in ["lie:2", "slow:0.5", "slow", "vanish:x", "sulk", "collude:1"] {
            assert!(bad.parse::<Misbehaviour>().is_err(), "{bad}");
        }
    }
}
