//! The market: each job bids a price per 10^9 fuel (its `max_price`, else the price it was
//! accepted at). Queued work is dispatched highest bid first, first come first served among
//! equal bids; a job whose bid is below the grid's price waits (`waiting_for_price`), its worst
//! case held, and starts — priced then — when the price falls to its bid.

use super::{Effects, Grid};
use runegrid_core::{JobId, TaskId};
use runegrid_store::{Change, JobState};

impl Grid {
    /// What the job of queued task `id` bids (the grid's own audits and probes first).
    fn bid_of(&self, id: TaskId) -> u64 {
        let Some(t) = self.tasks.get(&id) else {
            return 0;
        };
        if t.is_special() {
            return u64::MAX;
        }
        self.jobs.get(&t.job).map_or(0, |j| j.bid())
    }

    /// Queues a starting job's tasks after every queued task whose job bids at least as much.
    pub(super) fn enqueue(&mut self, job: JobId, ids: Vec<TaskId>) {
        let bid = self.jobs.get(&job).map_or(0, |j| j.bid());
        for id in &ids {
            if let Some(t) = self.tasks.get_mut(id) {
                t.queued = true;
            }
        }
        // Most jobs bid the price: the back of the queue is where they go.
        if self
            .queue
            .back()
            .is_none_or(|last| self.bid_of(*last) >= bid)
        {
            self.queue.extend(ids);
            return;
        }
        let at = self
            .queue
            .iter()
            .position(|t| self.bid_of(*t) < bid)
            .unwrap_or(self.queue.len());
        let rest = self.queue.split_off(at);
        self.queue.extend(ids);
        self.queue.extend(rest);
    }

    /// Starts the waiting jobs whose bid the price has fallen to, highest bid first.
    pub(super) fn start_waiting(&mut self, fx: &mut Effects) {
        if self.waiting.is_empty() {
            return;
        }
        let price = self.books.price();
        self.waiting.retain(|id| {
            self.jobs
                .get(id)
                .is_some_and(|j| j.rec.state == JobState::WaitingForPrice)
        });
        let mut ready: Vec<(u64, JobId)> = self
            .waiting
            .iter()
            .filter_map(|id| self.jobs.get(id).map(|j| (j.bid(), *id)))
            .filter(|(bid, _)| *bid >= price)
            .collect();
        if ready.is_empty() {
            return;
        }
        ready.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        self.waiting
            .retain(|id| !ready.iter().any(|(_, r)| r == id));
        for (_, id) in ready {
            self.start_job(id, price, fx);
        }
    }

    /// A waiting job starts at `price`: its tasks are queued.
    fn start_job(&mut self, id: JobId, price: u64, fx: &mut Effects) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        j.rec.state = JobState::Active;
        j.rec.price = price;
        let tasks: Vec<TaskId> = j.tasks.clone();
        fx.change(Change::StartJob { id, price });
        tracing::info!(job = id, price, "the price fell to the job's bid: starting");
        let todo: Vec<TaskId> = tasks
            .into_iter()
            .filter(|t| self.tasks.get(t).is_some_and(|t| !t.state.is_final()))
            .collect();
        self.enqueue(id, todo);
        if self.followed(id) {
            self.progress_event(id, fx);
        }
    }
}
