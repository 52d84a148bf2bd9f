//! What a transition asks of the world outside the grid, collected as data.

use super::Grid;
use crate::writer::Writer;
use runegrid_core::{JobId, WorkerId};
use runegrid_proto::JobEvent;
use runegrid_proto::worker::ToWorker;
use runegrid_store::Change;
use tokio::sync::mpsc;

/// The effects of one or more transitions, in the order they were produced.
#[derive(Debug, Default)]
pub struct Effects {
    /// Store changes, written in order by the writer thread.
    pub changes: Vec<Change>,
    /// Messages to workers.
    pub messages: Vec<Message>,
    /// Events for the followers of jobs (a job's `Done` also raises its completion flag).
    pub events: Vec<(JobId, JobEvent)>,
}

/// A message to one worker connection (the connection it was meant for, even if the worker
/// has reconnected since).
#[derive(Debug)]
pub struct Message {
    pub worker: WorkerId,
    pub msg: ToWorker,
    tx: mpsc::UnboundedSender<ToWorker>,
}

impl Effects {
    pub fn change(&mut self, c: Change) {
        self.changes.push(c);
    }

    pub fn send(&mut self, worker: WorkerId, tx: &mpsc::UnboundedSender<ToWorker>, msg: ToWorker) {
        self.messages.push(Message {
            worker,
            msg,
            tx: tx.clone(),
        });
    }

    pub fn event(&mut self, job: JobId, e: JobEvent) {
        self.events.push((job, e));
    }

    /// Messages on the connection of `tx`, in order (for tests).
    #[cfg(test)]
    pub fn on(&self, tx: &mpsc::UnboundedSender<ToWorker>) -> impl Iterator<Item = &ToWorker> {
        self.messages
            .iter()
            .filter(move |m| m.tx.same_channel(tx))
            .map(|m| &m.msg)
    }

    /// Messages for `worker`, in order (for tests).
    #[cfg(test)]
    pub fn to(&self, worker: WorkerId) -> impl Iterator<Item = &ToWorker> {
        self.messages
            .iter()
            .filter(move |m| m.worker == worker)
            .map(|m| &m.msg)
    }
}

impl Grid {
    /// Carries out `fx`: messages to workers and events to followers now, store changes handed
    /// to the writer. Call with the grid locked, right after the transitions that produced
    /// them. Returns the sequence number of the store changes (0 when there were none).
    pub fn flush(&mut self, fx: Effects, writer: &Writer) -> u64 {
        for m in fx.messages {
            if m.tx.send(m.msg).is_err() {
                // The connection closed meanwhile: its worker is gone, and so is the message.
                tracing::debug!(worker = m.worker, "message to a closed connection dropped");
            }
        }
        for (job, e) in fx.events {
            let Some(j) = self.jobs.get(&job) else {
                continue;
            };
            let done = matches!(e, JobEvent::Done { .. });
            if let Some(events) = &j.events {
                let _ = events.send(e);
            }
            if done {
                j.done.send_replace(true);
            }
        }
        writer.apply(fx.changes)
    }
}
