//! One connection's message loop: assignments, programs and cancellations come in; output,
//! results, failures, heartbeats and the blobs held go out.
//!
//! An attempt runs once it has its blobs (loaded off the connection task, `fetch_blobs`) and
//! its program (from memory, else the disk cache or the coordinator, then compiled off the
//! runtime); then it goes to `Slots`. What comes back from those threads and tasks arrives as an
//! [`Event`], and messages meant for an earlier connection are dropped.

use crate::connection::{Connection, SessionError, Sink, text};
use crate::{Event, Worker, WorkerError, runner};
use ed25519_dalek::SigningKey;
use futures_util::{SinkExt, StreamExt};
use runegrid_core::AttemptId;
use runegrid_proto::worker::{
    Assign, AssignDigest, FailureKind, ToCoordinator, ToWorker, assign_digest, signed_failure,
};
use runegrid_sandbox::{Blob, SandboxError};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio_tungstenite::tungstenite::Message;

/// What one connection keeps: the attempts that cannot run yet, and what to send next.
pub(crate) struct Session {
    /// Numbers the worker's connections; events carry it.
    id: u64,
    /// Attempts (with their blobs) waiting for their program, by the program's sha256.
    waiting_program: HashMap<String, Vec<(Assign, Vec<Blob>)>>,
    /// Programs asked for (from the coordinator or the disk cache) and not compiled yet.
    asked: HashSet<String>,
    /// Attempts whose blobs are loading.
    waiting_blobs: HashMap<AttemptId, Assign>,
    /// The blobs this session last told the coordinator it holds.
    told: Vec<String>,
    /// Messages for the coordinator, sent at the end of the loop's turn.
    outbox: Vec<ToCoordinator>,
    /// The digest of each assignment not yet answered: a failure signs it.
    assigned: HashMap<AttemptId, AssignDigest>,
}

/// What one turn of the loop got.
enum Input {
    Tick,
    Event(Event),
    Message(ToWorker),
}

impl Session {
    /// Connection number `id`, whose hello said the worker holds the blobs `told`.
    pub(crate) fn new(id: u64, told: Vec<String>) -> Session {
        Session {
            id,
            waiting_program: HashMap::new(),
            asked: HashSet::new(),
            waiting_blobs: HashMap::new(),
            told,
            outbox: Vec::new(),
            assigned: HashMap::new(),
        }
    }

    /// Queues a chunk of output; chunks of one attempt that piled up meanwhile travel as one
    /// message (up to 1 MiB).
    fn push_output(&mut self, msg: ToCoordinator) {
        if let (
            ToCoordinator::Output { attempt, data },
            Some(ToCoordinator::Output {
                attempt: last,
                data: buf,
            }),
        ) = (&msg, self.outbox.last_mut())
            && attempt == last
            && buf.len() < 1 << 20
        {
            buf.extend_from_slice(data);
            return;
        }
        self.outbox.push(msg);
    }

    /// Ends an attempt without a result (signed with `key`; nothing to say for an attempt not
    /// assigned on this connection).
    fn fail(&mut self, key: &SigningKey, attempt: AttemptId, reason: String, kind: FailureKind) {
        let Some(assign) = self.assigned.remove(&attempt) else {
            return;
        };
        self.outbox
            .push(signed_failure(key, attempt, &assign, reason, Some(kind)));
    }

    /// Forgets an attempt that has not started; whether it was waiting here.
    fn forget(&mut self, attempt: AttemptId) -> bool {
        let mut found = self.waiting_blobs.remove(&attempt).is_some();
        for list in self.waiting_program.values_mut() {
            let before = list.len();
            list.retain(|(a, _)| a.attempt != attempt);
            found |= list.len() != before;
        }
        found
    }
}

impl Worker {
    /// Serves a welcomed connection until it ends (`Ok`: dial again at once) or the
    /// coordinator rejects this worker.
    pub(crate) async fn serve(
        &mut self,
        mut session: Session,
        conn: Connection,
    ) -> Result<(), SessionError> {
        let Connection {
            mut sink,
            mut stream,
            heartbeat,
            ..
        } = conn;
        let mut ticker = tokio::time::interval(heartbeat);
        loop {
            let input = tokio::select! {
                _ = ticker.tick() => Input::Tick,
                ev = self.events_rx.recv() => match ev {
                    Some(ev) => Input::Event(ev),
                    None => return Ok(()),
                },
                msg = stream.next() => match msg {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                    Some(Ok(Message::Text(t))) => match serde_json::from_str::<ToWorker>(&t) {
                        Ok(msg) => Input::Message(msg),
                        Err(e) => {
                            tracing::warn!(error = %e, "malformed message from the coordinator");
                            continue;
                        }
                    },
                    Some(Ok(_)) => continue,
                },
            };
            match input {
                Input::Tick => session.outbox.push(ToCoordinator::Heartbeat),
                Input::Event(ev) => {
                    self.on_event(&mut session, ev);
                    while let Ok(ev) = self.events_rx.try_recv() {
                        self.on_event(&mut session, ev);
                    }
                }
                Input::Message(msg) => self.on_message(&mut session, msg)?,
            }
            if !send_all(&mut sink, &mut session.outbox).await {
                return Ok(());
            }
        }
    }

    fn on_message(&mut self, s: &mut Session, msg: ToWorker) -> Result<(), SessionError> {
        match msg {
            ToWorker::Assign(a) => self.on_assign(s, a),
            ToWorker::Program { sha256, module } => self.on_program(sha256, module),
            ToWorker::Cancel { attempt, .. } => self.on_cancel(s, attempt),
            ToWorker::Reject { message } => {
                return Err(SessionError::Fatal(WorkerError::Rejected(message)));
            }
            ToWorker::Standing { standing, reason } => match reason {
                Some(reason) => {
                    tracing::warn!(%standing, %reason, "the coordinator changed this worker's standing")
                }
                None => tracing::info!(%standing, "the coordinator changed this worker's standing"),
            },
            ToWorker::Challenge { .. } | ToWorker::Welcome { .. } => {}
        }
        Ok(())
    }

    /// A new attempt: it runs at once if it mounts no blobs and its program is compiled;
    /// otherwise its program comes (or compiles) while its blobs load.
    fn on_assign(&mut self, s: &mut Session, a: Assign) {
        s.assigned.insert(a.attempt, assign_digest(&a));
        if a.blobs.is_empty() {
            self.ready(s, a, Vec::new());
            return;
        }
        if !self.programs.contains(&a.program) {
            self.need_program(s, &a.program);
        }
        self.fetch_blobs(s, &a);
        s.waiting_blobs.insert(a.attempt, a);
    }

    /// A program's bytes from the coordinator: checked against their hash, kept on disk and
    /// compiled off the runtime (`Event::Compiled` follows).
    fn on_program(&self, sha256: String, module: Vec<u8>) {
        let actual = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&module));
        if actual != sha256 {
            tracing::error!(expected = %sha256, %actual, "program bytes do not match their hash");
            return;
        }
        runner::store_program(&self.config.data_dir, &sha256, &module);
        runner::compile_async(self.sandbox.clone(), sha256, module, self.events_tx.clone());
    }

    /// The coordinator no longer needs an attempt. One that has not started is dropped and
    /// reported cancelled; a running one finishes, and the coordinator ignores its result.
    fn on_cancel(&mut self, s: &mut Session, attempt: AttemptId) {
        if s.forget(attempt) || self.slots.cancel(attempt) {
            s.fail(
                &self.key,
                attempt,
                "cancelled".into(),
                FailureKind::Cancelled,
            );
        }
    }

    fn on_event(&mut self, s: &mut Session, ev: Event) {
        match ev {
            Event::Out { session, msg } => {
                if session == s.id {
                    s.push_output(msg);
                }
            }
            Event::Done { session, msg } => {
                self.slots.finished();
                if session == s.id {
                    if let ToCoordinator::Result(r) = &msg {
                        s.assigned.remove(&r.attempt);
                    } else if let ToCoordinator::Failed { attempt, .. } = &msg {
                        s.assigned.remove(attempt);
                    }
                    s.outbox.push(msg);
                }
            }
            Event::Compiled { sha256, result } => self.on_compiled(s, sha256, result),
            Event::BlobsReady {
                session,
                attempt,
                result,
            } => self.on_blobs_ready(s, session, attempt, result),
        }
    }

    /// A program compiled (or did not): the attempts waiting for it run (or fail).
    fn on_compiled(
        &mut self,
        s: &mut Session,
        sha256: String,
        result: Result<Arc<runner::Runnable>, SandboxError>,
    ) {
        s.asked.remove(&sha256);
        let waiting = s.waiting_program.remove(&sha256).unwrap_or_default();
        match result {
            Ok(program) => {
                self.programs.insert(sha256, program.clone());
                for (a, blobs) in waiting {
                    self.slots.submit(a, program.clone(), blobs, s.id);
                }
            }
            Err(e) => {
                tracing::error!(program = %sha256, error = %e, "program does not compile");
                for (a, _) in waiting {
                    s.fail(
                        &self.key,
                        a.attempt,
                        format!("compile error: {e}"),
                        e.failure_kind(),
                    );
                }
            }
        }
    }

    /// An attempt's blobs are loaded (or one cannot be): it goes on to wait for its program
    /// (or fails).
    fn on_blobs_ready(
        &mut self,
        s: &mut Session,
        session: u64,
        attempt: AttemptId,
        result: Result<Vec<Blob>, String>,
    ) {
        // Fetching (or finding a corrupted file) may have changed what is on disk.
        let held = self.blob_cache.held();
        if held != s.told {
            s.told = held.clone();
            s.outbox.push(ToCoordinator::Blobs { held });
        }
        if session != s.id {
            return;
        }
        // Absent: cancelled meanwhile.
        let Some(a) = s.waiting_blobs.remove(&attempt) else {
            return;
        };
        match result {
            Ok(blobs) => self.ready(s, a, blobs),
            Err(reason) => s.fail(&self.key, attempt, reason, FailureKind::Blob),
        }
    }

    /// An attempt has its blobs: it runs once its program is compiled.
    fn ready(&mut self, s: &mut Session, a: Assign, blobs: Vec<Blob>) {
        if let Some(program) = self.programs.get(&a.program) {
            self.slots.submit(a, program, blobs, s.id);
            return;
        }
        let sha = a.program.clone();
        s.waiting_program
            .entry(sha.clone())
            .or_default()
            .push((a, blobs));
        self.need_program(s, &sha);
    }

    /// Compiles the program from the disk cache, or asks the coordinator for it, unless that
    /// is under way.
    fn need_program(&self, s: &mut Session, sha: &str) {
        if !s.asked.insert(sha.to_string()) {
            return;
        }
        if let Some(bytes) = runner::cached_program(&self.config.data_dir, sha) {
            runner::compile_async(
                self.sandbox.clone(),
                sha.to_string(),
                bytes,
                self.events_tx.clone(),
            );
        } else {
            s.outbox.push(ToCoordinator::NeedProgram {
                sha256: sha.to_string(),
            });
        }
    }

    /// Loads an attempt's blobs off the connection task; `Event::BlobsReady` reports back.
    fn fetch_blobs(&self, s: &Session, a: &Assign) {
        let (cache, events) = (self.blob_cache.clone(), self.events_tx.clone());
        let (session, attempt, mounts) = (s.id, a.attempt, a.blobs.clone());
        tokio::spawn(async move {
            let mut blobs = Vec::with_capacity(mounts.len());
            let mut result = Ok(());
            for m in &mounts {
                match cache.get(m).await {
                    Ok(bytes) => blobs.push(Blob::new(m.name.clone(), bytes)),
                    Err(e) => {
                        tracing::warn!(attempt, blob = %m.sha256, name = %m.name, error = %e, "cannot load blob");
                        result = Err(format!("blob {}: {e}", m.name));
                        break;
                    }
                }
            }
            let result = result.map(|()| blobs);
            let _ = events.send(Event::BlobsReady {
                session,
                attempt,
                result,
            });
        });
    }
}

/// Sends the queued messages; false when the connection is gone.
async fn send_all(sink: &mut Sink, outbox: &mut Vec<ToCoordinator>) -> bool {
    if outbox.is_empty() {
        return true;
    }
    for msg in outbox.drain(..) {
        if sink.feed(text(&msg)).await.is_err() {
            return false;
        }
    }
    sink.flush().await.is_ok()
}
