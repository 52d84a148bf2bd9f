//! `GET /v1/jobs/{id}/events`: a job's events as Server-Sent Events.

use super::Routes;
use super::jobs::status;
use crate::api::{ApiError, AppState, Authed, Path, visible};
use crate::metrics::Stream as OpenStream;
use axum::extract::State;
use axum::http::Method;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use runegrid_core::JobId;
use runegrid_proto::{ErrorBody, JobEvent};
use std::convert::Infallible;
use std::time::Duration;

pub fn routes() -> Routes {
    Routes::new().add(Method::GET, "/v1/jobs/{id}/events", job_events)
}

fn sse_event(e: &JobEvent) -> Event {
    Event::default()
        .event(e.name())
        .data(serde_json::to_string(e).expect("events serialize"))
}

/// A job's events until it is done: `progress` first, then `stdout`, `task`, `corrected` and
/// `progress` as they happen, and `done` last (the SSE event name is the event's `type`).
#[utoipa::path(get, path = "/v1/jobs/{id}/events", tag = "jobs", security(("token" = [])),
    params(("id" = i64, Path, description = "job id")),
    responses((status = 200, description = "Server-Sent Events, one JobEvent each",
            content_type = "text/event-stream", body = JobEvent),
        (status = 404, body = ErrorBody)))]
pub async fn job_events(
    State(app): State<AppState>,
    Authed(a): Authed,
    Path(id): Path<JobId>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    /// A live follower's receiver, and whose stdout it must not get: attempts that had
    /// streamed before it subscribed, and every attempt once it lagged (a chunk of an attempt
    /// always reaches a follower with all the attempt's earlier chunks).
    struct Live {
        rx: tokio::sync::broadcast::Receiver<JobEvent>,
        partial: std::collections::HashSet<runegrid_core::AttemptId>,
        lagged: bool,
    }
    enum S {
        Live(Box<Live>),
        Last(Box<JobEvent>),
        End,
    }
    let mut pending = Vec::new();
    let (first, rest) = match app.subscribe(id) {
        Some(sub) => {
            let (owner, rx, counts) = (sub.owner, sub.events, sub.counts);
            let partial = sub.partial;
            pending = sub.unverified;
            if !visible(&a, owner) {
                return Err(ApiError::not_found(format!("job {id}")));
            }
            let st = status(&app, &a, id).await?;
            if st.state.is_finished() {
                (
                    JobEvent::Progress { counts },
                    S::Last(Box::new(JobEvent::Done {
                        state: st.state,
                        counts,
                    })),
                )
            } else {
                (
                    JobEvent::Progress { counts },
                    S::Live(Box::new(Live {
                        rx,
                        partial,
                        lagged: false,
                    })),
                )
            }
        }
        None => {
            let st = status(&app, &a, id).await?;
            (
                JobEvent::Progress { counts: st.counts },
                S::Last(Box::new(JobEvent::Done {
                    state: st.state,
                    counts: st.counts,
                })),
            )
        }
    };
    let mut head = vec![Ok(sse_event(&first))];
    head.extend(
        pending
            .into_iter()
            .map(|result| Ok(sse_event(&JobEvent::Task { result }))),
    );
    let head = stream::iter(head);
    let writer = app.writer.clone();
    let tail = stream::unfold(rest, move |s| {
        let writer = writer.clone();
        async move {
            match s {
                S::End => None,
                S::Last(e) => Some((Ok(sse_event(&e)), S::End)),
                S::Live(mut live) => loop {
                    match live.rx.recv().await {
                        // A verified result and the end are told once stored (see `jobs::status`).
                        Ok(e @ JobEvent::Done { .. }) => {
                            writer.flush().await;
                            return Some((Ok(sse_event(&e)), S::End));
                        }
                        Ok(e @ JobEvent::Task { .. }) => {
                            writer.flush().await;
                            return Some((Ok(sse_event(&e)), S::Live(live)));
                        }
                        Ok(JobEvent::Stdout { attempt, .. })
                            if live.lagged || live.partial.contains(&attempt) => {}
                        Ok(e) => return Some((Ok(sse_event(&e)), S::Live(live))),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            tracing::debug!(skipped = n, "event stream reader lagged");
                            live.lagged = true;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    }
                },
            }
        }
    });
    use futures_util::StreamExt as _;
    // Counted as an open stream until the response body is dropped (ended or hung up).
    let open = app.config.metrics.open(OpenStream::Sse);
    let events = head.chain(tail).map(move |e| {
        let _ = &open;
        e
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
