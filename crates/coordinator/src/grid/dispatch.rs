//! Dispatch: the queue's tasks to free worker capacity. The grid builds what `core::plan`
//! sees (each task's need, each worker's view), and carries out its answer.

use super::{Effects, Grid, WorkerConn};
use runegrid_core::gpu::{GpuNeed, GpuVerify};
use runegrid_core::schedule;
use runegrid_core::{Need, Standing, TaskId, WorkerId, WorkerView, plan};

/// How many queued tasks one dispatch pass looks at, at most.
const SCAN_LIMIT: usize = 8192;
/// Free slots a sample of the free workers offers the scheduler before it is weighed (see
/// `views_sampled`).
const SAMPLE_SLOTS: u32 = 2048;

impl Grid {
    /// Fills free worker capacity from the queue, then gives idle new workers probes.
    pub fn dispatch(&mut self, fx: &mut Effects) {
        for _ in 0..3 {
            self.again = false;
            self.dispatch_once(fx);
            if !self.again {
                break;
            }
        }
        self.give_probes(fx);
    }

    /// What the scheduler sees of a connected worker, busy or not.
    pub(super) fn view(&self, id: WorkerId, w: &WorkerConn) -> WorkerView {
        let record = self.trust.record(id);
        let owner = self.trust.owner(id).unwrap_or(w.owner);
        let speed = record.map_or(0.0, |r| r.speed);
        let busy = w.busy.len() as u32;
        WorkerView {
            id,
            free_slots: schedule::capacity(w.slots, speed).saturating_sub(busy),
            running: busy,
            owner,
            standing: self.trust.standing(id),
            score: record.map_or(0.5, |r| r.score()),
            speed,
            memory_bytes: w.memory_bytes,
            blob_space: w.blob_space,
            blobs: w.blobs.clone(),
            gpu: w.gpu.clone(),
        }
    }

    /// The workers that can take an attempt now (all of them in `free`).
    fn views(&self) -> Vec<WorkerView> {
        self.free
            .iter()
            .filter_map(|id| self.free_view(*id))
            .collect()
    }

    fn free_view(&self, id: WorkerId) -> Option<WorkerView> {
        Some(self.view(id, self.workers.get(&id)?))
            .filter(|v| v.free_slots > 0 && v.standing != Standing::Quarantined)
    }

    /// Some of the workers that can take an attempt now, offering [`SAMPLE_SLOTS`] free slots,
    /// and whether they are all of them. With 100,000 workers connected, weighing every free
    /// one for every few tasks held the grid lock for seconds; a sample is enough for tasks any
    /// worker can run, and a task the sample cannot place is weighed against every free worker
    /// after it (`dispatch_once`). Samples start where the last one ended, so all free workers
    /// take their turn.
    fn views_sampled(&mut self) -> (Vec<WorkerView>, bool) {
        let mut views = Vec::new();
        let mut slots = 0u32;
        let mut last = None;
        let from = self.free_cursor;
        let ids = self.free.range(from..).chain(self.free.range(..from));
        for id in ids {
            if slots >= SAMPLE_SLOTS {
                break;
            }
            last = Some(*id);
            if let Some(v) = self.free_view(*id) {
                slots += v.free_slots;
                views.push(v);
            }
        }
        let all = slots < SAMPLE_SLOTS;
        self.free_cursor = last.map_or(0, |id| id + 1);
        (views, all)
    }

    /// What a queued task needs of the scheduler, if it wants attempts now.
    fn need_of(&self, id: TaskId) -> Option<Need> {
        let t = self.tasks.get(&id)?;
        let mut count = self.need_count(t);
        if count == 0 {
            return None;
        }
        let (program, limits) = self.run_spec(t)?;
        let gpu = runegrid_core::gpu::is_kernel(&program.module).then(|| {
            let options = self
                .jobs
                .get(&t.job)
                .and_then(|j| j.rec.gpu)
                .unwrap_or_default();
            let fresh = t.running.is_empty() && t.results.is_empty();
            let homogeneous = options.verify == GpuVerify::Homogeneous;
            if homogeneous && fresh {
                // One attempt first: its worker's adapter class is the one the others follow.
                count = 1;
            }
            GpuNeed {
                allow_software: options.allow_software,
                class: (homogeneous && !fresh)
                    .then(|| t.gpu_class.clone())
                    .flatten(),
            }
        });
        let exclude = self.exclude(t);
        let owners = exclude
            .iter()
            .filter_map(|w| self.trust.owner(*w))
            .collect();
        Some(Need {
            task: t.id,
            count,
            exclude,
            owners,
            // Its linear memory and its file system both live in the worker's memory.
            memory_bytes: limits.memory_bytes.saturating_add(limits.scratch_bytes),
            blobs: t
                .input
                .blobs
                .iter()
                .map(|b| (b.sha256.clone(), b.size))
                .collect(),
            gpu,
        })
    }

    fn dispatch_once(&mut self, fx: &mut Effects) {
        if self.queue.is_empty() {
            return;
        }
        let mut i = 0;
        let mut stuck = Vec::new();
        while i < self.queue.len() && i < SCAN_LIMIT {
            let (views, all) = self.views_sampled();
            let free: u32 = views.iter().map(|v| v.free_slots).sum();
            if free == 0 {
                break;
            }
            let start = i;
            let mut needs = Vec::new();
            let mut want = 0u32;
            while i < self.queue.len() && i - start < 1024 && want < free * 2 {
                let id = self.queue[i];
                i += 1;
                if let Some(need) = self.need_of(id) {
                    want += need.count;
                    needs.push(need);
                }
            }
            let mut planned = plan(&needs, &views);
            for a in &planned {
                self.start_attempt(a.task, a.worker, fx);
            }
            if !all && planned.len() < needs.iter().map(|n| n.count as usize).sum() {
                // What the sample could not place, weighed against every free worker.
                let rest: Vec<Need> = needs.iter().filter_map(|n| self.need_of(n.task)).collect();
                let more = plan(&rest, &self.views());
                for a in &more {
                    self.start_attempt(a.task, a.worker, fx);
                }
                planned.extend(more);
            }
            stuck.extend(
                needs
                    .into_iter()
                    .filter(|n| !planned.iter().any(|a| a.task == n.task)),
            );
        }
        // Drop the scanned entries that need nothing more now; keep the rest in order.
        let scanned: Vec<TaskId> = self.queue.drain(..i).collect();
        let mut keep = Vec::new();
        for id in scanned {
            let Some(t) = self.tasks.get(&id) else {
                continue;
            };
            if self.need_count(t) > 0 {
                keep.push(id);
            } else if let Some(t) = self.tasks.get_mut(&id) {
                t.queued = false;
            }
        }
        for id in keep.into_iter().rev() {
            self.queue.push_front(id);
        }
        for need in &stuck {
            self.settle_if_stuck(need, fx);
        }
    }
}
