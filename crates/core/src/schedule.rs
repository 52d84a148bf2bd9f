//! The scheduling decision: which queued task replicas go to which workers with free slots.
//!
//! Architecture Invariant: [`plan`] is pure. The coordinator builds the views from its state,
//! calls `plan`, and carries out the assignments; every rule about who may run what lives here.

use crate::{TaskId, WorkerId};

/// A worker as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerView {
    pub id: WorkerId,
    /// Slots the worker announced and has not been given work for.
    pub free_slots: u32,
    /// Attempts currently running on it.
    pub running: u32,
}

/// A task that wants `count` more attempts, on workers other than `exclude` (the workers that
/// already ran or are running it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub task: TaskId,
    pub count: u32,
    pub exclude: Vec<WorkerId>,
}

/// One decision: run `task` on `worker`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    pub task: TaskId,
    pub worker: WorkerId,
}

/// Assigns needs, in order (the queue order is the priority), to workers with free slots.
///
/// Rules: a worker gets at most its free slots; a task's attempts go to distinct workers, none in
/// its `exclude` list; among eligible workers the one with the most free slots wins (then the
/// fewest running attempts, then the lowest id), which spreads load. A need that no eligible
/// worker can take is skipped, so it never blocks the needs behind it.
pub fn plan(needs: &[Need], workers: &[WorkerView]) -> Vec<Assignment> {
    let mut free: Vec<u32> = workers.iter().map(|w| w.free_slots).collect();
    let mut running: Vec<u32> = workers.iter().map(|w| w.running).collect();
    let mut total_free: u64 = free.iter().map(|f| *f as u64).sum();
    let mut out = Vec::new();
    let mut chosen: Vec<WorkerId> = Vec::new();
    for need in needs {
        if total_free == 0 {
            break;
        }
        chosen.clear();
        for _ in 0..need.count {
            let mut best: Option<usize> = None;
            for (i, w) in workers.iter().enumerate() {
                if free[i] == 0 || need.exclude.contains(&w.id) || chosen.contains(&w.id) {
                    continue;
                }
                let better = match best {
                    None => true,
                    Some(b) => {
                        (
                            free[i],
                            std::cmp::Reverse(running[i]),
                            std::cmp::Reverse(w.id),
                        ) > (
                            free[b],
                            std::cmp::Reverse(running[b]),
                            std::cmp::Reverse(workers[b].id),
                        )
                    }
                };
                if better {
                    best = Some(i);
                }
            }
            let Some(i) = best else { break };
            free[i] -= 1;
            running[i] += 1;
            total_free -= 1;
            chosen.push(workers[i].id);
            out.push(Assignment {
                task: need.task,
                worker: workers[i].id,
            });
        }
    }
    out
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
        }
    }

    #[test]
    fn replicas_spread_over_distinct_workers() {
        let needs = vec![Need {
            task: 1,
            count: 3,
            exclude: vec![],
        }];
        let a = plan(&needs, &[w(1, 4), w(2, 4), w(3, 4)]);
        let ws: HashSet<_> = a.iter().map(|a| a.worker).collect();
        assert_eq!(a.len(), 3);
        assert_eq!(ws.len(), 3);
    }

    #[test]
    fn too_few_workers_assigns_what_it_can() {
        let needs = vec![Need {
            task: 1,
            count: 3,
            exclude: vec![],
        }];
        let a = plan(&needs, &[w(1, 4), w(2, 4)]);
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn excluded_worker_is_skipped_and_does_not_block() {
        let needs = vec![
            Need {
                task: 1,
                count: 1,
                exclude: vec![1],
            },
            Need {
                task: 2,
                count: 1,
                exclude: vec![],
            },
        ];
        let a = plan(&needs, &[w(1, 1)]);
        assert_eq!(a, vec![Assignment { task: 2, worker: 1 }]);
    }

    #[test]
    fn prefers_the_least_loaded_worker() {
        let needs = vec![Need {
            task: 1,
            count: 1,
            exclude: vec![],
        }];
        let a = plan(&needs, &[w(1, 1), w(2, 3)]);
        assert_eq!(a[0].worker, 2);
    }

    proptest! {
        #[test]
        fn plan_is_safe_and_work_conserving(
            slots in proptest::collection::vec(0u32..4, 0..6),
            needs in proptest::collection::vec((1u32..4, proptest::collection::vec(0i64..6, 0..3)), 0..12),
        ) {
            let workers: Vec<WorkerView> =
                slots.iter().enumerate().map(|(i, s)| w(i as i64, *s)).collect();
            let needs: Vec<Need> = needs
                .into_iter()
                .enumerate()
                .map(|(i, (count, exclude))| Need { task: i as i64, count, exclude })
                .collect();
            let a = plan(&needs, &workers);
            // Never more than a worker's free slots.
            let mut per_worker: HashMap<WorkerId, u32> = HashMap::new();
            for x in &a {
                *per_worker.entry(x.worker).or_default() += 1;
            }
            for wv in &workers {
                prop_assert!(per_worker.get(&wv.id).copied().unwrap_or(0) <= wv.free_slots);
            }
            // Distinct workers per task, never an excluded one, never more than asked.
            for n in &needs {
                let mine: Vec<_> = a.iter().filter(|x| x.task == n.task).map(|x| x.worker).collect();
                let set: HashSet<_> = mine.iter().collect();
                prop_assert_eq!(set.len(), mine.len());
                prop_assert!(mine.len() as u32 <= n.count);
                for wid in &mine {
                    prop_assert!(!n.exclude.contains(wid));
                }
                // Work conserving: if the need is not fully served, every worker left with a
                // free slot is one it may not use.
                if (mine.len() as u32) < n.count {
                    for wv in &workers {
                        let left = wv.free_slots - per_worker.get(&wv.id).copied().unwrap_or(0);
                        if left > 0 {
                            prop_assert!(n.exclude.contains(&wv.id) || mine.contains(&wv.id));
                        }
                    }
                }
            }
        }
    }
}
