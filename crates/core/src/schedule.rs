//! The scheduling decision: which queued task replicas go to which workers with free slots.
//!
//! Architecture Invariant: [`plan`] is pure. The coordinator builds the views from its state,
//! calls `plan`, and carries out the assignments; every rule about who may run what lives here.

use crate::trust::Standing;
use crate::{AccountId, TaskId, WorkerId};
use std::collections::{BTreeMap, BTreeSet};

/// A worker as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerView {
    pub id: WorkerId,
    /// Slots the worker announced and has not been given work for.
    pub free_slots: u32,
    /// Attempts currently running on it.
    pub running: u32,
    /// The account that owns it.
    pub owner: AccountId,
    pub standing: Standing,
    /// [`crate::TrustRecord::score`]: reliability, completion and speed in [0, 1].
    pub score: f64,
    /// Relative attempt time (1.0 = typical for the jobs it ran, 0 = unknown).
    pub speed: f64,
    /// Memory the worker offers (0 = unknown, accepted for any task).
    pub memory_bytes: u64,
    /// Disk it keeps blobs in (0: it takes no task that mounts blobs, e.g. a browser worker).
    pub blob_space: u64,
    /// SHA-256 of the blobs it holds.
    pub blobs: Vec<String>,
    /// Its GPU, if it has one.
    pub gpu: Option<std::sync::Arc<crate::gpu::GpuAdapter>>,
}

impl WorkerView {
    /// How many of the need's blobs the worker holds already.
    pub fn holds(&self, need: &Need) -> usize {
        need.blobs
            .iter()
            .filter(|(sha, _)| self.blobs.contains(sha))
            .count()
    }
}

/// A task that wants `count` more attempts, on workers other than `exclude` (the workers that
/// already ran or are running it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Need {
    pub task: TaskId,
    pub count: u32,
    pub exclude: Vec<WorkerId>,
    /// Owners of the workers in `exclude`: workers of other owners are preferred.
    pub owners: Vec<AccountId>,
    /// The memory a task may use (its linear memory and scratch space): a worker offering less
    /// cannot take it.
    pub memory_bytes: u64,
    /// The blobs the task mounts: SHA-256 and size.
    pub blobs: Vec<(String, u64)>,
    /// A GPU task's needs (`None`: a CPU task, which any worker may run).
    pub gpu: Option<crate::gpu::GpuNeed>,
}

/// One decision: run `task` on `worker`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    pub task: TaskId,
    pub worker: WorkerId,
}

/// A worker slower than this (relative attempt time) is picked only after faster ones.
pub const SLOW: f64 = 2.0;

/// Attempts a worker may hold at once: two per slot, so it never idles for a round trip
/// between short tasks; a slow worker (relative attempt time past [`SLOW`]) gets one per slot,
/// so no attempt waits behind its slow ones.
pub fn capacity(slots: u32, speed: f64) -> u32 {
    if speed > SLOW {
        slots
    } else {
        slots.saturating_mul(2)
    }
}

/// Whether `w` may run the need's task at all.
pub fn eligible(w: &WorkerView, need: &Need) -> bool {
    w.standing != Standing::Quarantined
        && !need.exclude.contains(&w.id)
        && (w.memory_bytes == 0 || w.memory_bytes >= need.memory_bytes)
        && can_hold(w, need)
        && need.gpu.as_ref().is_none_or(|g| g.met_by(w.gpu.as_deref()))
}

/// Whether the worker can mount the need's blobs: it takes blobs at all, and what it lacks fits
/// in its blob space.
fn can_hold(w: &WorkerView, need: &Need) -> bool {
    if need.blobs.is_empty() {
        return true;
    }
    let missing: u64 = need
        .blobs
        .iter()
        .filter(|(sha, _)| !w.blobs.contains(sha))
        .map(|(_, size)| *size)
        .sum();
    w.blob_space > 0 && missing <= w.blob_space
}

/// Assigns needs, in order (the queue order is the priority), to workers with free slots.
///
/// Hard rules: a worker gets at most its free slots; a task's attempts go to distinct workers,
/// none in its `exclude` list; a quarantined worker, one with too little memory, or one that
/// cannot hold the task's blobs gets nothing, nor a GPU task one whose GPU does not meet its
/// need ([`crate::gpu::GpuNeed`]).
/// Among eligible workers the preference is, in order: an owner the task has not met yet (so
/// replicas land with distinct accounts where possible), more of the task's blobs already held
/// (no download), higher standing (trusted first), not slow, more free slots (spreading load),
/// higher score, lower id. A need that no eligible
/// worker can take is skipped, so it never blocks the needs behind it.
///
/// The workers with a free slot are kept ordered by the part of that preference that is the
/// same for every need (standing, speed, free slots, score, id), so a need that mounts no
/// blobs takes the first eligible worker of an owner it has not met, walking down that order,
/// instead of weighing every worker: a plan costs about (needs + workers) × log(workers) when
/// the best workers are eligible, where weighing every worker for every need made dispatching a
/// large job to ten thousand workers hold the grid for seconds. A need mounting blobs (whose
/// preference depends on what each worker holds) still weighs every worker.
pub fn plan(needs: &[Need], workers: &[WorkerView]) -> Vec<Assignment> {
    let mut free: Vec<u32> = workers.iter().map(|w| w.free_slots).collect();
    let mut total_free: u64 = free.iter().map(|f| *f as u64).sum();
    let mut ranked: BTreeSet<Rank> = BTreeSet::new();
    // Ranked workers by owner: whether an owner the need has not met has any left.
    let mut by_owner: BTreeMap<AccountId, usize> = BTreeMap::new();
    for (i, w) in workers.iter().enumerate() {
        if free[i] > 0 {
            ranked.insert(Rank::of(w, free[i], i));
            *by_owner.entry(w.owner).or_default() += 1;
        }
    }
    let mut out = Vec::new();
    let mut chosen: Vec<WorkerId> = Vec::new();
    let mut owners: Vec<AccountId> = Vec::new();
    for need in needs {
        if total_free == 0 {
            break;
        }
        chosen.clear();
        owners.clear();
        owners.extend_from_slice(&need.owners);
        for _ in 0..need.count {
            let best = if need.blobs.is_empty() {
                best_ranked(need, workers, &ranked, &by_owner, &chosen, &owners)
            } else {
                best_weighed(need, workers, &free, &chosen, &owners)
            };
            let Some(i) = best else { break };
            let w = &workers[i];
            ranked.remove(&Rank::of(w, free[i], i));
            free[i] -= 1;
            total_free -= 1;
            if free[i] > 0 {
                ranked.insert(Rank::of(w, free[i], i));
            } else if let Some(n) = by_owner.get_mut(&w.owner) {
                *n -= 1;
            }
            chosen.push(w.id);
            owners.push(w.owner);
            out.push(Assignment {
                task: need.task,
                worker: w.id,
            });
        }
    }
    out
}

/// A worker's place in the order every need shares: the preference of [`plan`] after owner
/// and blobs; the greatest is the best.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    standing: Standing,
    fast: bool,
    free: u32,
    score: Score,
    id: std::cmp::Reverse<WorkerId>,
    /// Its index among the views (equal views: the first is preferred).
    index: std::cmp::Reverse<usize>,
}

impl Rank {
    fn of(w: &WorkerView, free: u32, index: usize) -> Rank {
        Rank {
            standing: w.standing,
            fast: w.speed <= SLOW,
            free,
            score: Score(w.score),
            id: std::cmp::Reverse(w.id),
            index: std::cmp::Reverse(index),
        }
    }
}

/// A score, totally ordered (scores are finite; -0 counts as 0).
#[derive(Debug, Clone, Copy)]
struct Score(f64);

impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0 + 0.0).total_cmp(&(other.0 + 0.0))
    }
}

/// The best worker for a need mounting no blobs: walking the ranked workers from the best, the
/// first eligible one of an owner the need has not met, else the first eligible one.
fn best_ranked(
    need: &Need,
    workers: &[WorkerView],
    ranked: &BTreeSet<Rank>,
    by_owner: &BTreeMap<AccountId, usize>,
    chosen: &[WorkerId],
    owners: &[AccountId],
) -> Option<usize> {
    let mut met: Vec<AccountId> = owners.to_vec();
    met.sort_unstable();
    met.dedup();
    let of_met: usize = met.iter().filter_map(|o| by_owner.get(o)).sum();
    let unmet_left = ranked.len() > of_met;
    let mut fallback = None;
    for r in ranked.iter().rev() {
        let i = r.index.0;
        let w = &workers[i];
        if chosen.contains(&w.id) || !eligible(w, need) {
            continue;
        }
        if !owners.contains(&w.owner) {
            return Some(i);
        }
        if fallback.is_none() {
            fallback = Some(i);
            if !unmet_left {
                break;
            }
        }
    }
    fallback
}

/// The best worker for a need, weighing every worker with a free slot by the whole preference.
fn best_weighed(
    need: &Need,
    workers: &[WorkerView],
    free: &[u32],
    chosen: &[WorkerId],
    owners: &[AccountId],
) -> Option<usize> {
    let key = |i: usize| {
        let w = &workers[i];
        (
            !owners.contains(&w.owner),
            w.holds(need),
            w.standing,
            w.speed <= SLOW,
            free[i],
            w.score,
            std::cmp::Reverse(w.id),
        )
    };
    let mut best: Option<usize> = None;
    for (i, w) in workers.iter().enumerate() {
        if free[i] == 0 || chosen.contains(&w.id) || !eligible(w, need) {
            continue;
        }
        let better = match best {
            None => true,
            Some(b) => key(i).partial_cmp(&key(b)) == Some(std::cmp::Ordering::Greater),
        };
        if better {
            best = Some(i);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    fn w(id: WorkerId, free: u32) -> WorkerView {
        WorkerView {
            id,
            free_slots: free,
            running: 0,
            owner: id,
            standing: Standing::New,
            score: 0.5,
            speed: 0.0,
            memory_bytes: 0,
            blob_space: 0,
            blobs: vec![],
            gpu: None,
        }
    }

    /// Worker `i`'s GPU in the property tests: none, a hardware one, or a software one.
    fn gpu_of(i: usize) -> Option<std::sync::Arc<crate::gpu::GpuAdapter>> {
        let adapter = |software: bool| crate::gpu::GpuAdapter {
            name: "gpu".into(),
            vendor: 0x1002,
            device: 7,
            device_type: if software { "cpu" } else { "discrete" }.into(),
            backend: "vulkan".into(),
            driver: if software { "llvmpipe" } else { "radv" }.into(),
            driver_info: String::new(),
            software,
            features: vec![],
            max_buffer_bytes: 0,
            max_storage_binding_bytes: 0,
            max_workgroups_per_dimension: 0,
            max_invocations_per_workgroup: 0,
        };
        match i % 3 {
            0 => None,
            n => Some(std::sync::Arc::new(adapter(n == 2))),
        }
    }

    /// Need `i`'s GPU need: none (a CPU task), a GPU, any adapter, or the hardware class.
    fn gpu_need(i: usize) -> Option<crate::gpu::GpuNeed> {
        let class = gpu_of(1).map(|a| a.class());
        match i % 4 {
            0 => None,
            1 => Some(crate::gpu::GpuNeed::default()),
            2 => Some(crate::gpu::GpuNeed {
                allow_software: true,
                class: None,
            }),
            _ => Some(crate::gpu::GpuNeed {
                allow_software: true,
                class,
            }),
        }
    }

    /// The plan as it was first written: every need weighs every worker with a free slot by
    /// the whole preference. [`plan`] must answer exactly the same.
    fn plan_weighing_all(needs: &[Need], workers: &[WorkerView]) -> Vec<Assignment> {
        let mut free: Vec<u32> = workers.iter().map(|w| w.free_slots).collect();
        let mut out = Vec::new();
        for need in needs {
            let mut chosen = Vec::new();
            let mut owners = need.owners.clone();
            for _ in 0..need.count {
                let Some(i) = best_weighed(need, workers, &free, &chosen, &owners) else {
                    break;
                };
                free[i] -= 1;
                chosen.push(workers[i].id);
                owners.push(workers[i].owner);
                out.push(Assignment {
                    task: need.task,
                    worker: workers[i].id,
                });
            }
        }
        out
    }

    fn need(task: TaskId, count: u32, exclude: Vec<WorkerId>) -> Need {
        Need {
            task,
            count,
            exclude,
            ..Need::default()
        }
    }

    proptest! {
        /// Capacity is at least a slot each, twice that unless slow, and never more.
        #[test]
        fn capacity_is_two_per_slot_unless_slow(slots in 0u32..1000, speed in 0.0f64..50.0) {
            let c = capacity(slots, speed);
            prop_assert!(c >= slots && c <= 2 * slots);
            prop_assert_eq!(c == slots * 2, speed <= SLOW || slots == 0);
        }
    }

    #[test]
    fn replicas_spread_over_distinct_workers() {
        let a = plan(&[need(1, 3, vec![])], &[w(1, 4), w(2, 4), w(3, 4)]);
        let ws: HashSet<_> = a.iter().map(|a| a.worker).collect();
        assert_eq!(a.len(), 3);
        assert_eq!(ws.len(), 3);
    }

    #[test]
    fn too_few_workers_assigns_what_it_can() {
        let a = plan(&[need(1, 3, vec![])], &[w(1, 4), w(2, 4)]);
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn excluded_worker_is_skipped_and_does_not_block() {
        let a = plan(&[need(1, 1, vec![1]), need(2, 1, vec![])], &[w(1, 1)]);
        assert_eq!(a, vec![Assignment { task: 2, worker: 1 }]);
    }

    #[test]
    fn prefers_the_least_loaded_worker() {
        let a = plan(&[need(1, 1, vec![])], &[w(1, 1), w(2, 3)]);
        assert_eq!(a[0].worker, 2);
    }

    #[test]
    fn trusted_fast_workers_first() {
        let mut t = w(1, 1);
        t.standing = Standing::Trusted;
        let mut slow = w(2, 4);
        slow.standing = Standing::Trusted;
        slow.speed = 10.0;
        let a = plan(&[need(1, 1, vec![])], &[w(3, 4), slow.clone(), t]);
        assert_eq!(a[0].worker, 1);
        // With the fast one busy, the slow trusted one still beats a new one.
        let a = plan(&[need(1, 1, vec![])], &[w(3, 4), slow]);
        assert_eq!(a[0].worker, 2);
    }

    #[test]
    fn replicas_go_to_distinct_owners_where_possible() {
        let mut ws: Vec<WorkerView> = (1..=4).map(|i| w(i, 2)).collect();
        ws[0].owner = 7;
        ws[1].owner = 7;
        ws[2].owner = 7;
        ws[3].owner = 8;
        let a = plan(&[need(1, 2, vec![])], &ws);
        let owners: HashSet<_> = a
            .iter()
            .map(|x| ws.iter().find(|w| w.id == x.worker).unwrap().owner)
            .collect();
        assert_eq!(owners.len(), 2);
        // An owner already on the task counts too.
        let n = Need {
            owners: vec![8],
            exclude: vec![4],
            ..need(2, 1, vec![])
        };
        let a = plan(&[n], &ws);
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn quarantined_or_too_small_workers_get_nothing() {
        let mut q = w(1, 4);
        q.standing = Standing::Quarantined;
        let mut small = w(2, 4);
        small.memory_bytes = 1 << 20;
        let n = Need {
            memory_bytes: 64 << 20,
            ..need(1, 2, vec![])
        };
        assert!(plan(&[n], &[q, small]).is_empty());
    }

    #[test]
    fn blob_tasks_go_to_workers_that_can_hold_them_holders_first() {
        let model = ("m".repeat(64), 100u64);
        let n = Need {
            blobs: vec![model.clone()],
            ..need(1, 1, vec![])
        };
        // A worker with no blob space (an older browser) never gets it; a worker with too little space neither.
        let browser = w(1, 4);
        let mut tiny = w(2, 4);
        tiny.blob_space = 50;
        assert!(plan(std::slice::from_ref(&n), &[browser.clone(), tiny.clone()]).is_empty());
        // A worker with room takes it; one already holding it is preferred, even less free.
        let mut roomy = w(3, 4);
        roomy.blob_space = 1 << 30;
        let mut holder = w(4, 1);
        holder.blob_space = 100;
        holder.blobs = vec![model.0.clone()];
        let all = [browser, tiny.clone(), roomy.clone(), holder.clone()];
        assert_eq!(plan(std::slice::from_ref(&n), &all)[0].worker, 4);
        assert_eq!(plan(std::slice::from_ref(&n), &all[..3])[0].worker, 3);
        // A worker holding the blob needs no room for it.
        let mut full = w(5, 1);
        full.blob_space = 1;
        full.blobs = vec![model.0.clone()];
        assert_eq!(plan(&[n], &[full])[0].worker, 5);
        // Tasks without blobs still go anywhere.
        assert_eq!(plan(&[need(2, 1, vec![])], &[tiny])[0].worker, 2);
    }

    fn standing() -> impl Strategy<Value = Standing> {
        prop_oneof![
            Just(Standing::Quarantined),
            Just(Standing::Doubtful),
            Just(Standing::New),
            Just(Standing::Trusted)
        ]
    }

    proptest! {
        /// Safety: never more than a worker's free slots, distinct workers per task, never an
        /// excluded, quarantined or too small worker. Liveness: a need left short means no
        /// worker with a free slot could take it.
        #[test]
        fn plan_is_safe_and_work_conserving(
            workers in proptest::collection::vec(
                (0u32..4, standing(), 0i64..3, 0f64..5.0, prop_oneof![Just(0u64), Just(1u64 << 20), Just(1u64 << 30)], (prop_oneof![Just(0u64), Just(10u64), Just(1000u64)], proptest::collection::vec(0usize..3, 0..3))),
                0..6),
            needs in proptest::collection::vec(
                (1u32..4, proptest::collection::vec(0i64..6, 0..3), proptest::collection::vec(0i64..3, 0..2), prop_oneof![Just(0u64), Just(1u64 << 24)], proptest::collection::vec((0usize..3, 1u64..100), 0..3)),
                0..12),
        ) {
            let workers: Vec<WorkerView> = workers
                .into_iter()
                .enumerate()
                .map(|(i, (free, standing, owner, speed, memory_bytes, (blob_space, held)))| WorkerView {
                    id: i as i64,
                    free_slots: free,
                    running: 0,
                    owner,
                    standing,
                    score: 1.0 / (1.0 + speed),
                    speed,
                    memory_bytes,
                    blob_space,
                    blobs: held.into_iter().map(|b| b.to_string()).collect(),
                    gpu: gpu_of(i),
                })
                .collect();
            let needs: Vec<Need> = needs
                .into_iter()
                .enumerate()
                .map(|(i, (count, exclude, owners, memory_bytes, blobs))| Need {
                    task: i as i64,
                    count,
                    exclude,
                    owners,
                    memory_bytes,
                    blobs: blobs.into_iter().map(|(b, size)| (b.to_string(), size)).collect(),
                    gpu: gpu_need(i),
                })
                .collect();
            let a = plan(&needs, &workers);
            prop_assert_eq!(&a, &plan_weighing_all(&needs, &workers));
            let mut per_worker: HashMap<WorkerId, u32> = HashMap::new();
            for x in &a {
                *per_worker.entry(x.worker).or_default() += 1;
            }
            for wv in &workers {
                let got = per_worker.get(&wv.id).copied().unwrap_or(0);
                prop_assert!(got <= wv.free_slots);
                if wv.standing == Standing::Quarantined {
                    prop_assert_eq!(got, 0);
                }
            }
            for n in &needs {
                let mine: Vec<_> = a.iter().filter(|x| x.task == n.task).map(|x| x.worker).collect();
                let set: HashSet<_> = mine.iter().collect();
                prop_assert_eq!(set.len(), mine.len());
                prop_assert!(mine.len() as u32 <= n.count);
                for wid in &mine {
                    let wv = workers.iter().find(|w| w.id == *wid).unwrap();
                    prop_assert!(eligible(wv, n));
                    if !n.blobs.is_empty() {
                        prop_assert!(wv.blob_space > 0);
                    }
                    if let Some(g) = &n.gpu {
                        let gpu = wv.gpu.as_deref();
                        prop_assert!(gpu.is_some());
                        prop_assert!(g.allow_software || !gpu.unwrap().software);
                        if let Some(c) = &g.class {
                            prop_assert_eq!(&gpu.unwrap().class(), c);
                        }
                    }
                }
                if (mine.len() as u32) < n.count {
                    for wv in &workers {
                        let left = wv.free_slots - per_worker.get(&wv.id).copied().unwrap_or(0);
                        if left > 0 {
                            prop_assert!(!eligible(wv, n) || mine.contains(&wv.id));
                        }
                    }
                }
            }
        }

        /// Many workers, few owners, equal scores: the ranked walk picks what weighing every
        /// worker picks.
        #[test]
        fn ranked_plan_is_the_weighed_plan(
            workers in proptest::collection::vec(
                (0u32..4, standing(), 0i64..3, prop_oneof![Just(0.0f64), Just(1.0), Just(3.0)], prop_oneof![Just(0u64), Just(1u64 << 30)]),
                0..80),
            needs in proptest::collection::vec(
                (1u32..4, proptest::collection::vec(0i64..80, 0..4), proptest::collection::vec(0i64..3, 0..3), prop_oneof![Just(0u64), Just(1u64 << 24)]),
                0..40),
        ) {
            let workers: Vec<WorkerView> = workers
                .into_iter()
                .enumerate()
                .map(|(i, (free, standing, owner, speed, memory_bytes))| WorkerView {
                    free_slots: free,
                    owner,
                    standing,
                    score: 1.0 / (1.0 + speed),
                    speed,
                    memory_bytes,
                    ..w(i as i64, free)
                })
                .collect();
            let needs: Vec<Need> = needs
                .into_iter()
                .enumerate()
                .map(|(i, (count, exclude, owners, memory_bytes))| Need {
                    memory_bytes,
                    owners,
                    ..need(i as i64, count, exclude)
                })
                .collect();
            prop_assert_eq!(plan(&needs, &workers), plan_weighing_all(&needs, &workers));
        }

        /// When enough eligible workers of distinct owners are free, one task's replicas land
        /// with distinct owners.
        #[test]
        fn distinct_owners_when_possible(owners in proptest::collection::vec(0i64..4, 1..8), count in 1u32..4) {
            let workers: Vec<WorkerView> = owners.iter().enumerate().map(|(i, o)| {
                let mut v = w(i as i64, 1);
                v.owner = *o;
                v
            }).collect();
            let distinct: HashSet<_> = owners.iter().collect();
            let a = plan(&[need(1, count, vec![])], &workers);
            let got: HashSet<_> = a.iter().map(|x| workers[x.worker as usize].owner).collect();
            prop_assert_eq!(got.len(), a.len().min(distinct.len()));
        }
    }
}
