//! The program cache: a worker's `need_program` for a program of one of its attempts is
//! answered here once the relay holds that program; the first worker to ask fetches it
//! upstream, the others asking meanwhile wait for that fetch. A program is kept only when its
//! bytes hash to the name it was asked by.

use crate::session::{SessionState, WorkerOut};
use crate::{Hub, lock};
use axum::extract::ws::Utf8Bytes;
use runegrid_proto::relay::{Frame, SessionId};
use runegrid_proto::worker::ToCoordinator;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;

/// Programs kept (the least recently used leave first).
const PROGRAMS_KEPT: usize = 32;

pub(crate) struct ProgramCache {
    inner: Mutex<Inner>,
}

struct Inner {
    /// The `program` message of each program held, as sent to workers.
    ready: hashlink::LruCache<String, Utf8Bytes>,
    /// Programs being fetched: the session that asked upstream, and every session waiting.
    pending: HashMap<String, Pending>,
}

struct Pending {
    fetcher: SessionId,
    waiters: Vec<SessionId>,
}

impl Default for ProgramCache {
    fn default() -> ProgramCache {
        ProgramCache {
            inner: Mutex::new(Inner {
                ready: hashlink::LruCache::new(PROGRAMS_KEPT),
                pending: HashMap::new(),
            }),
        }
    }
}

impl ProgramCache {
    /// Forgets the fetches in flight (their upstream connection is gone).
    pub fn clear_pending(&self) {
        lock(&self.inner).pending.clear();
    }
}

/// What to do with a `need_program`.
pub(crate) enum Ask {
    /// Answered from the cache, or waiting for a fetch in flight.
    Answered,
    /// Forward it upstream: this session fetches the program for all.
    Fetch,
}

/// A session asks for a program of one of its attempts.
pub(crate) fn ask(hub: &Hub, session: &SessionState, sha256: &str) -> Ask {
    let mut inner = lock(&hub.programs.inner);
    if let Some(text) = inner.ready.get(sha256) {
        let text = text.clone();
        drop(inner);
        hub.stats.programs_from_cache.fetch_add(1, Relaxed);
        hub.stats
            .program_bytes_from_cache
            .fetch_add(text.len() as u64, Relaxed);
        let _ = session.to_worker.send(WorkerOut::Text(text));
        return Ask::Answered;
    }
    if let Some(p) = inner.pending.get_mut(sha256) {
        p.waiters.push(session.id);
        hub.stats.programs_from_cache.fetch_add(1, Relaxed);
        return Ask::Answered;
    }
    inner.pending.insert(
        sha256.to_string(),
        Pending {
            fetcher: session.id,
            waiters: vec![session.id],
        },
    );
    hub.stats.programs_fetched.fetch_add(1, Relaxed);
    Ask::Fetch
}

/// A program arrived from upstream for `session`: kept if its bytes match its name, and sent
/// to `session` and every session waiting for it.
pub(crate) fn arrived(hub: &Hub, session: SessionId, sha256: String, module: &[u8], text: String) {
    let text = Utf8Bytes::from(text);
    hub.stats
        .program_bytes_fetched
        .fetch_add(text.len() as u64, Relaxed);
    let good = hex::encode(Sha256::digest(module)) == sha256;
    let waiters = {
        let mut inner = lock(&hub.programs.inner);
        if good {
            inner.ready.insert(sha256.clone(), text.clone());
        }
        inner
            .pending
            .remove(&sha256)
            .map(|p| p.waiters)
            .unwrap_or_default()
    };
    if !good {
        tracing::warn!(%sha256, "a program from the coordinator does not match its hash: not kept");
    }
    let mut to = waiters;
    if !to.contains(&session) {
        to.push(session);
    }
    for id in to {
        let Some(s) = hub.session(id) else { continue };
        if good || id == session {
            if id != session {
                hub.stats
                    .program_bytes_from_cache
                    .fetch_add(text.len() as u64, Relaxed);
            }
            let _ = s.to_worker.send(WorkerOut::Text(text.clone()));
        } else {
            // Not kept: each waiter asks for itself.
            ask_upstream(hub, id, &sha256);
        }
    }
}

/// A session ended: the fetches it made for others are made again by one of them.
pub(crate) fn abandon(hub: &Hub, session: SessionId) {
    let mut refetch = Vec::new();
    {
        let mut inner = lock(&hub.programs.inner);
        inner.pending.retain(|sha, p| {
            p.waiters.retain(|w| *w != session);
            if p.fetcher == session {
                match p.waiters.first() {
                    Some(next) => {
                        p.fetcher = *next;
                        refetch.push((*next, sha.clone()));
                    }
                    None => return false,
                }
            }
            true
        });
    }
    for (id, sha) in refetch {
        ask_upstream(hub, id, &sha);
    }
}

fn ask_upstream(hub: &Hub, session: SessionId, sha256: &str) {
    let message = serde_json::value::to_raw_value(&ToCoordinator::NeedProgram {
        sha256: sha256.to_string(),
    })
    .expect("messages serialize");
    hub.stats.programs_fetched.fetch_add(1, Relaxed);
    hub.send_upstream(Frame::Message { session, message });
}
