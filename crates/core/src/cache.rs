//! The result cache's rules: which inputs name a result ([`CacheKey`]), which results may be
//! reused ([`cacheable`]), and which entries stay when the cache is full ([`ResultCache`], least
//! recently used first out, bounded by bytes).
//!
//! A task is a deterministic function of its instrumented program, arguments, environment,
//! stdin, seed, mounted blobs and the limits that can change how it ends (fuel, memory,
//! stdout, scratch file system), so a task with the same inputs as one already verified has
//! the same result: it can be answered from that result with no attempt. The wall-time limit is left out of the
//! key: an attempt that runs past it is lost, never verified, so it shapes no verified result.

use crate::trust::Acceptance;
use crate::{Digest, Limits};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};

/// What names a cached result: SHA-256 over every input that can change it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub [u8; 32]);

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CacheKey({})", hex::encode(&self.0[..8]))
    }
}

/// The inputs of a task that decide its result.
#[derive(Debug, Clone, Copy)]
pub struct TaskInputs<'a> {
    /// SHA-256 (hex) of the instrumented program: a change of instrumentation is a new key.
    pub program: &'a str,
    /// What the host under the program answers (its WASI behaviour): a coordinator whose
    /// hosts answer differently keys its results apart.
    pub host: &'a str,
    pub limits: Limits,
    pub args: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub stdin: &'a [u8],
    pub seed: u64,
    /// Mounted blobs: name → SHA-256 (hex).
    pub blobs: &'a BTreeMap<String, String>,
}

/// The key of a task with these inputs. Every variable-length part is length-prefixed, so two
/// different inputs never hash the same bytes.
pub fn cache_key(t: &TaskInputs<'_>) -> CacheKey {
    fn part(h: &mut Sha256, bytes: &[u8]) {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    let mut h = Sha256::new();
    // v2: `scratch_bytes` and `output_bytes` joined the limits; entries stored under v1 keys
    // never answer again.
    part(&mut h, b"runegrid result cache v2");
    part(&mut h, t.program.as_bytes());
    part(&mut h, t.host.as_bytes());
    h.update(t.limits.fuel.to_le_bytes());
    h.update(t.limits.memory_bytes.to_le_bytes());
    h.update(t.limits.stdout_bytes.to_le_bytes());
    h.update(t.limits.scratch_bytes.to_le_bytes());
    h.update(t.limits.output_bytes.to_le_bytes());
    h.update((t.args.len() as u64).to_le_bytes());
    for a in t.args {
        part(&mut h, a.as_bytes());
    }
    h.update((t.env.len() as u64).to_le_bytes());
    for (k, v) in t.env {
        part(&mut h, k.as_bytes());
        part(&mut h, v.as_bytes());
    }
    part(&mut h, t.stdin);
    h.update(t.seed.to_le_bytes());
    h.update((t.blobs.len() as u64).to_le_bytes());
    for (name, sha) in t.blobs {
        part(&mut h, name.as_bytes());
        part(&mut h, sha.as_bytes());
    }
    CacheKey(h.finalize().into())
}

/// Whether a result accepted this way may answer later tasks: only results that replicas on
/// distinct workers agreed on (a quorum, or the quorum of an audit). A result accepted on one
/// trusted worker's word, or run once unreplicated, is never reused: an audit could still
/// overturn it, and a copy handed to another job would not be corrected with it.
pub fn cacheable(acceptance: Acceptance) -> bool {
    matches!(acceptance, Acceptance::Quorum | Acceptance::Audited)
}

/// A result as the cache keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedResult {
    pub status: crate::ExecStatus,
    pub stdout: Vec<u8>,
    pub fuel: u64,
    pub digest: Digest,
    /// What the run wrote to stderr, as the first agreeing replica reported it: shown (a chat
    /// answer's token counts come from it), never compared.
    pub stderr: String,
    /// The records of its output files (their bytes stay in the coordinator's blob store).
    pub files: Vec<crate::OutputFile>,
}

impl CachedResult {
    /// What it counts for against the cache's bound: its stdout, stderr, file records and a
    /// fixed overhead.
    pub fn bytes(&self) -> u64 {
        let files: usize = self.files.iter().map(|f| f.path.len() + 80).sum();
        (self.stdout.len() + self.stderr.len() + files) as u64 + ENTRY_OVERHEAD
    }
}

/// Bytes an entry counts beyond its stdout (key, digest, bookkeeping).
pub const ENTRY_OVERHEAD: u64 = 128;

struct Entry<V> {
    value: V,
    bytes: u64,
    /// When it was last used: larger is more recent.
    used: u64,
}

/// Values by key, at most `capacity` bytes of them; the least recently used leave first.
pub struct ResultCache<V> {
    capacity: u64,
    bytes: u64,
    clock: u64,
    entries: HashMap<CacheKey, Entry<V>>,
    by_use: BTreeMap<u64, CacheKey>,
}

/// What [`ResultCache::put`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Put {
    /// The value was kept (false: larger than the whole cache, or the cache is off).
    pub kept: bool,
    /// Entries that left to make room, least recently used first.
    pub evicted: Vec<CacheKey>,
}

impl<V> ResultCache<V> {
    /// An empty cache of at most `capacity` bytes (0: a cache that keeps nothing).
    pub fn new(capacity: u64) -> ResultCache<V> {
        ResultCache {
            capacity,
            bytes: 0,
            clock: 0,
            entries: HashMap::new(),
            by_use: BTreeMap::new(),
        }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, key: &CacheKey) -> bool {
        self.entries.contains_key(key)
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The value under `key`, which becomes the most recently used.
    pub fn get(&mut self, key: &CacheKey) -> Option<&V> {
        let now = self.clock + 1;
        let e = self.entries.get_mut(key)?;
        self.clock = now;
        self.by_use.remove(&e.used);
        e.used = now;
        self.by_use.insert(now, *key);
        Some(&e.value)
    }

    /// Keeps `value` under `key` (replacing what was there) as the most recently used, then
    /// evicts the least recently used entries until the cache fits its capacity.
    pub fn put(&mut self, key: CacheKey, value: V, bytes: u64) -> Put {
        self.remove(&key);
        if bytes > self.capacity {
            return Put::default();
        }
        let used = self.tick();
        self.entries.insert(key, Entry { value, bytes, used });
        self.by_use.insert(used, key);
        self.bytes += bytes;
        let mut evicted = Vec::new();
        while self.bytes > self.capacity {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            if let Some(e) = self.entries.remove(&oldest) {
                self.bytes -= e.bytes;
            }
            evicted.push(oldest);
        }
        Put {
            kept: true,
            evicted,
        }
    }

    /// Removes the entry under `key`; true if there was one.
    pub fn remove(&mut self, key: &CacheKey) -> bool {
        match self.entries.remove(key) {
            Some(e) => {
                self.by_use.remove(&e.used);
                self.bytes -= e.bytes;
                true
            }
            None => false,
        }
    }

    /// Keys from the least to the most recently used.
    pub fn keys_by_use(&self) -> impl Iterator<Item = &CacheKey> {
        self.by_use.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(i: u8) -> CacheKey {
        CacheKey([i; 32])
    }

    fn inputs<'a>(
        args: &'a [String],
        env: &'a BTreeMap<String, String>,
        blobs: &'a BTreeMap<String, String>,
    ) -> TaskInputs<'a> {
        TaskInputs {
            program: "ab",
            host: "1",
            limits: Limits::default(),
            args,
            env,
            stdin: b"in",
            seed: 7,
            blobs,
        }
    }

    #[test]
    fn every_input_changes_the_key() {
        let args = vec!["a".to_string(), "b".to_string()];
        let env = BTreeMap::from([("K".to_string(), "V".to_string())]);
        let blobs = BTreeMap::from([("x".to_string(), "00".to_string())]);
        let base = inputs(&args, &env, &blobs);
        let k = cache_key(&base);
        assert_eq!(k, cache_key(&base));
        let joined = vec!["ab".to_string()];
        let moved = vec!["a".to_string(), "".to_string(), "b".to_string()];
        let env2 = BTreeMap::from([("KV".to_string(), "".to_string())]);
        let blobs2 = BTreeMap::from([("x".to_string(), "01".to_string())]);
        let mut variants = vec![
            TaskInputs {
                program: "ac",
                ..base
            },
            TaskInputs { host: "2", ..base },
            TaskInputs {
                args: &joined,
                ..base
            },
            TaskInputs {
                args: &moved,
                ..base
            },
            TaskInputs { env: &env2, ..base },
            TaskInputs {
                stdin: b"in2",
                ..base
            },
            TaskInputs { seed: 8, ..base },
            TaskInputs {
                blobs: &blobs2,
                ..base
            },
        ];
        for limits in [
            Limits {
                fuel: 1,
                ..base.limits
            },
            Limits {
                memory_bytes: 1 << 16,
                ..base.limits
            },
            Limits {
                stdout_bytes: 1,
                ..base.limits
            },
            Limits {
                scratch_bytes: 0,
                ..base.limits
            },
            Limits {
                output_bytes: 0,
                ..base.limits
            },
        ] {
            variants.push(TaskInputs { limits, ..base });
        }
        for v in &variants {
            assert_ne!(cache_key(v), k, "{v:?}");
        }
        // The wall-time limit shapes no verified result.
        let longer = TaskInputs {
            limits: Limits {
                wall_time_ms: 1,
                ..base.limits
            },
            ..base
        };
        assert_eq!(cache_key(&longer), k);
    }

    #[test]
    fn only_agreed_results_are_reused() {
        assert!(cacheable(Acceptance::Quorum));
        assert!(cacheable(Acceptance::Audited));
        assert!(!cacheable(Acceptance::Trusted));
        assert!(!cacheable(Acceptance::Unreplicated));
        assert!(!cacheable(Acceptance::Cached));
    }

    #[test]
    fn least_recently_used_leave_first() {
        let mut c = ResultCache::new(30);
        assert!(c.put(key(1), 1, 10).evicted.is_empty());
        assert!(c.put(key(2), 2, 10).evicted.is_empty());
        assert!(c.put(key(3), 3, 10).evicted.is_empty());
        assert_eq!(c.get(&key(1)), Some(&1));
        assert_eq!(c.put(key(4), 4, 10).evicted, vec![key(2)]);
        assert_eq!(c.put(key(5), 5, 20).evicted, vec![key(3), key(1)]);
        assert_eq!(c.bytes(), 30);
        let too_big = c.put(key(6), 6, 31);
        assert!(!too_big.kept);
        assert!(!c.contains(&key(6)));
        assert_eq!(ResultCache::new(0).put(key(1), 1, 1), Put::default());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, u64),
        Get(u8),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..12, 0u64..40).prop_map(|(k, b)| Op::Put(k, b)),
            (0u8..12).prop_map(Op::Get),
            (0u8..12).prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// The cache behaves as a list ordered by last use, trimmed from its old end, and never
        /// holds more than its capacity.
        #[test]
        fn matches_a_list_ordered_by_use(capacity in 0u64..100, ops in prop::collection::vec(op(), 0..200)) {
            let mut c = ResultCache::new(capacity);
            // Most recently used last: (key, value, bytes).
            let mut model: Vec<(u8, u64, u64)> = Vec::new();
            for (n, o) in ops.into_iter().enumerate() {
                let n = n as u64;
                match o {
                    Op::Put(k, b) => {
                        let put = c.put(key(k), n, b);
                        model.retain(|e| e.0 != k);
                        let mut evicted = Vec::new();
                        if b <= capacity {
                            model.push((k, n, b));
                            while model.iter().map(|e| e.2).sum::<u64>() > capacity {
                                evicted.push(key(model.remove(0).0));
                            }
                        }
                        prop_assert_eq!(put.kept, b <= capacity);
                        prop_assert_eq!(put.evicted, evicted);
                    }
                    Op::Get(k) => {
                        let want = model.iter().position(|e| e.0 == k).map(|i| model.remove(i));
                        if let Some(e) = want {
                            model.push(e);
                        }
                        prop_assert_eq!(c.get(&key(k)).copied(), want.map(|e| e.1));
                    }
                    Op::Remove(k) => {
                        let had = model.iter().any(|e| e.0 == k);
                        model.retain(|e| e.0 != k);
                        prop_assert_eq!(c.remove(&key(k)), had);
                    }
                }
                prop_assert!(c.bytes() <= capacity);
                prop_assert_eq!(c.bytes(), model.iter().map(|e| e.2).sum::<u64>());
                let order: Vec<CacheKey> = c.keys_by_use().copied().collect();
                let want: Vec<CacheKey> = model.iter().map(|e| key(e.0)).collect();
                prop_assert_eq!(order, want);
            }
        }
    }
}
