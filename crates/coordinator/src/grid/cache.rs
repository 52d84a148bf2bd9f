//! The result cache in the grid: a new job's tasks answered from results verified before
//! (`Acceptance::Cached`, no attempt, nothing paid), results a quorum agreed on kept, and the
//! cache rebuilt from the store at start. The rules — the key, what may be kept, what leaves
//! first — are `runegrid_core::cache`'s.

use super::{Effects, Grid, TaskMem, now_ms};
use runegrid_core::cache::{CacheKey, CachedResult, ResultCache, TaskInputs, cache_key, cacheable};
use runegrid_core::{Acceptance, Limits, TaskId};
use runegrid_store::{CacheEntry, Change, TaskOutcome, TaskState};
use std::collections::BTreeMap;

/// Bytes of results the cache holds by default (`serve --cache-bytes`).
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

/// What the hosts under the programs answer: results computed by another version's hosts are
/// keyed apart.
const HOST: &str = concat!("runegrid ", env!("CARGO_PKG_VERSION"));

/// The key of a task of a job running `program` (instrumented SHA-256) with `limits` and
/// `blobs`.
pub(super) fn task_key(
    program: &str,
    limits: Limits,
    blobs: &BTreeMap<String, String>,
    args: &[String],
    env: &BTreeMap<String, String>,
    stdin: &[u8],
    seed: u64,
) -> CacheKey {
    cache_key(&TaskInputs {
        program,
        host: HOST,
        limits,
        args,
        env,
        stdin,
        seed,
        blobs,
    })
}

/// The outcome a task answered from the cache ends with.
pub(super) fn cached_outcome(r: &CachedResult) -> TaskOutcome {
    TaskOutcome {
        status: Some(r.status),
        stdout: r.stdout.clone(),
        fuel: r.fuel,
        digest: Some(r.digest),
        error: None,
        acceptance: Some(Acceptance::Cached),
        files: r.files.clone(),
    }
}

impl Grid {
    /// The result cache, emptied and bounded to `capacity` bytes.
    pub(super) fn reset_cache(&mut self, capacity: u64) {
        self.cache = ResultCache::new(capacity);
    }

    /// Puts stored entries back (least recently used first); those that no longer fit leave
    /// the store too.
    pub(super) fn load_cache(&mut self, entries: Vec<CacheEntry>, fx: &mut Effects) {
        for e in entries {
            let bytes = e.result.bytes();
            let put = self.cache.put(e.key, e.result, bytes);
            if !put.kept {
                fx.change(Change::CacheEvict { key: e.key });
            }
            for key in put.evicted {
                fx.change(Change::CacheEvict { key });
            }
        }
    }

    /// Keeps a task's final outcome in the cache when it may answer later tasks: a success a
    /// quorum agreed on, of a job that uses the cache.
    pub(super) fn remember_result(&mut self, id: TaskId, fx: &mut Effects) {
        let Some(t) = self.tasks.get(&id) else {
            return;
        };
        let Some((key, result)) = cacheable_result(t) else {
            return;
        };
        let bytes = result.bytes();
        let put = self.cache.put(key, result.clone(), bytes);
        if put.kept {
            fx.change(Change::CachePut {
                key,
                result,
                at: now_ms(),
            });
        }
        for key in put.evicted {
            fx.change(Change::CacheEvict { key });
        }
    }

    /// Answers tasks of a job just accepted from the cache.
    pub(super) fn answer_from_cache(
        &mut self,
        hits: Vec<(TaskId, CachedResult)>,
        fx: &mut Effects,
    ) {
        for (id, r) in hits {
            if let Some(t) = self.tasks.get_mut(&id) {
                t.cached_stderr = Some(r.stderr.clone());
            }
            self.finalize(id, TaskState::Verified, cached_outcome(&r), fx);
        }
    }
}

/// A task's key and result, when its outcome may be kept.
fn cacheable_result(t: &TaskMem) -> Option<(CacheKey, CachedResult)> {
    let key = t.cache_key?;
    let o = t.outcome.as_ref()?;
    if t.state != TaskState::Verified || o.error.is_some() || !o.acceptance.is_some_and(cacheable) {
        return None;
    }
    let digest = o.digest?;
    let stderr = t
        .results
        .iter()
        .find(|r| r.digest == digest)
        .map(|r| r.stderr.clone())
        .or_else(|| t.cached_stderr.clone())
        .unwrap_or_default();
    Some((
        key,
        CachedResult {
            status: o.status?,
            stdout: o.stdout.clone(),
            fuel: o.fuel,
            digest,
            stderr,
            files: o.files.clone(),
        },
    ))
}
