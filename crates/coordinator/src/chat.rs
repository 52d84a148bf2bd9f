//! LLM inference as a job: `POST /v1/chat/completions` (OpenAI-compatible, streamed or not) and
//! `GET /v1/models`.
//!
//! A chat request becomes a job of one task: the built-in inference program
//! (`runegrid_infer::INFER_WASM`) with the model's weights mounted as `/blobs/model.gguf`, the
//! request (messages, sampling settings and a seed) on stdin, and limits sized from the model and
//! the request. Replicas run with the same seed, so they produce the same tokens and the job's
//! policy verifies the answer like any other result. Streaming follows one attempt's stdout as
//! the worker writes it (shown as `running`), then says `unverified` when a first result is in,
//! and `verified` when the policy accepts one; if the accepted answer is not what was streamed
//! (the streaming worker lied, or its attempt was lost), a `corrected` chunk carries it whole.

use crate::api::{ApiError, AppState, Authed, Json};
use crate::app::App;
use crate::builtins;
use crate::submit::{EventReceiver, create_job, create_job_followed};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use runegrid_core::{AttemptId, JobId};
use runegrid_infer::{MODEL_BLOB, Model, Summary};
use runegrid_proto::chat::{
    AnswerState, ChatChoice, ChatChunk, ChatCompletion, ChatMessage, ChatRequest, ChunkChoice,
    Delta, GridInfo, ModelGridInfo, ModelInfo, ModelList, Usage,
};
use runegrid_proto::{JobEvent, ResultState, SubmitJob, TaskResult, TaskSpec};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Default sampling: what SmolLM2's authors suggest.
pub const DEFAULT_TEMPERATURE: f64 = 0.2;
pub const DEFAULT_TOP_P: f64 = 0.9;

/// The models this grid serves, and whether workers can run them now.
#[utoipa::path(get, path = "/v1/models", tag = "chat", security(("token" = [])),
    responses((status = 200, body = ModelList)))]
pub async fn models(State(app): State<AppState>, Authed(_): Authed) -> Json<ModelList> {
    let data = runegrid_infer::MODELS
        .iter()
        .map(|m| {
            let (workers, workers_holding) = app.workers_for(m.sha256, m.size, m.memory_bytes);
            ModelInfo {
                id: m.id.into(),
                object: "model".into(),
                created: 0,
                owned_by: "runegrid".into(),
                runegrid: ModelGridInfo {
                    available: app.blobs.size(m.sha256).is_some(),
                    blob: m.sha256.into(),
                    size: m.size,
                    tier: m.tier(),
                    memory_bytes: m.memory_bytes,
                    workers,
                    workers_holding,
                    aliases: m.aliases.iter().map(|a| a.to_string()).collect(),
                },
            }
        })
        .collect();
    Json(ModelList {
        object: "list".into(),
        data,
    })
}

/// A request checked and turned into the inference program's input.
struct Prepared {
    model: &'static Model,
    input: runegrid_infer::Request,
    prompt_bytes: u64,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad("invalid_request", message)
}

fn prepare(req: &ChatRequest) -> Result<Prepared, ApiError> {
    let model = Model::find(&req.model).ok_or_else(|| {
        let known: Vec<&str> = runegrid_infer::MODELS.iter().map(|m| m.id).collect();
        ApiError::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!(
                "no model named {:?} on this grid; models: {}",
                req.model,
                known.join(", ")
            ),
        )
    })?;
    if req.messages.is_empty() {
        return Err(bad("messages is empty: give at least one message"));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    let mut prompt_bytes = 0u64;
    for (i, m) in req.messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            other => {
                return Err(bad(format!(
                    "messages[{i}]: role {other:?} is not supported (system, user, assistant)"
                )));
            }
        };
        let content = m.text().map_err(|e| bad(format!("messages[{i}]: {e}")))?;
        prompt_bytes += content.len() as u64 + role.len() as u64;
        messages.push(runegrid_infer::Message {
            role: role.into(),
            content,
        });
    }
    if req.n.is_some_and(|n| n != 1) {
        return Err(bad("n must be 1: one answer per request"));
    }
    let stop_set = match &req.stop {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    };
    if stop_set {
        return Err(bad("stop sequences are not supported"));
    }
    if req
        .tools
        .as_ref()
        .is_some_and(|t| !t.is_null() && t.as_array().is_none_or(|a| !a.is_empty()))
    {
        return Err(bad("tools are not supported"));
    }
    if req.logprobs == Some(true) {
        return Err(bad("logprobs are not supported"));
    }
    let max_tokens = req
        .max_completion_tokens
        .or(req.max_tokens)
        .unwrap_or(runegrid_infer::DEFAULT_MAX_TOKENS);
    if max_tokens == 0 || max_tokens > runegrid_infer::MAX_TOKENS {
        return Err(bad(format!(
            "max_tokens must be between 1 and {}",
            runegrid_infer::MAX_TOKENS
        )));
    }
    let temperature = req.temperature.unwrap_or(DEFAULT_TEMPERATURE);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(bad("temperature must be between 0 and 2"));
    }
    let top_p = req.top_p.unwrap_or(DEFAULT_TOP_P);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(bad("top_p must be in (0, 1]"));
    }
    let seed = match req.seed {
        Some(s) => s,
        // Below 2^53 so every JSON reader keeps it exact.
        None => rand::random::<u64>() & ((1 << 53) - 1),
    };
    Ok(Prepared {
        model,
        input: runegrid_infer::Request {
            messages: Some(messages),
            max_tokens,
            temperature,
            top_p: (top_p < 1.0).then_some(top_p),
            seed,
            ..runegrid_infer::Request::default()
        },
        prompt_bytes,
    })
}

/// Cancels the job when the request goes away before its answer is final (the client hung up).
struct CancelOnDrop {
    app: AppState,
    job: JobId,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed && self.app.cancel(self.job) {
            tracing::info!(job = self.job, "chat client went away; job cancelled");
        }
    }
}

/// A chat answer computed on the grid (OpenAI-compatible). With `"stream": true`, Server-Sent
/// Events of `ChatChunk`s ending with `data: [DONE]`.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "chat", security(("token" = [])),
    request_body = ChatRequest,
    responses(
        (status = 200, description = "the verified answer; with `stream`, Server-Sent Events of ChatChunk",
            content((ChatCompletion = "application/json"), (ChatChunk = "text/event-stream"))),
        (status = 400, description = "invalid_request", body = runegrid_proto::ErrorBody),
        (status = 404, description = "model_not_found", body = runegrid_proto::ErrorBody),
        (status = 502, description = "inference_failed, cancelled", body = runegrid_proto::ErrorBody),
        (status = 503, description = "model_unavailable: the weights are not on the coordinator",
            body = runegrid_proto::ErrorBody)))]
pub async fn completions(
    State(app): State<AppState>,
    Authed(a): Authed,
    Json(req): Json<ChatRequest>,
) -> Result<Response, ApiError> {
    let p = prepare(&req)?;
    if app.blobs.size(p.model.sha256).is_none() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "model_unavailable",
            format!(
                "the weights of {} (blob {}) are not on this coordinator: start it with \
                 `runegrid serve --model FILE` or upload them (PUT /v1/blobs/{})",
                p.model.id, p.model.sha256, p.model.sha256
            ),
        ));
    }
    let opts = req.runegrid.clone().unwrap_or_default();
    let submit = SubmitJob {
        gpu: None,
        max_price: None,
        // A request that gives its sampler a seed is repeatable: answered from the result cache
        // when the same request was verified before (the seed is in the task's stdin; every
        // task starts its random stream from 0). Without one it is never reused.
        seed: req.seed.map(|_| 0),
        cache: Some(req.seed.is_some()),
        program: builtins::INFER.name.into(),
        name: Some(format!("chat {}", p.model.id)),
        tasks: vec![TaskSpec {
            stdin: String::from_utf8(p.input.to_stdin()).expect("json is utf-8"),
            ..TaskSpec::default()
        }],
        policy: opts.policy,
        replicas: opts.replicas,
        agree: opts.agree,
        max_attempts: opts.max_attempts,
        limits: p.model.limits(p.prompt_bytes, p.input.max_tokens),
        blobs: BTreeMap::from([(MODEL_BLOB.to_string(), p.model.sha256.to_string())]),
    };
    let (job, rx) = if req.stream {
        let (job, _, rx) = create_job_followed(&app, &a, submit).await?;
        (job, Some(rx))
    } else {
        (create_job(&app, &a, submit).await?.0, None)
    };
    let guard = CancelOnDrop {
        app: app.clone(),
        job,
        armed: true,
    };
    let head = Head {
        id: format!("chatcmpl-{job}"),
        created: crate::grid::now_ms() / 1000,
        model: p.model.id.to_string(),
        job,
    };
    tracing::info!(job, model = p.model.id, stream = req.stream, account = %a.name, "chat request");
    if req.stream {
        Ok(stream_answer(app, head, guard, rx).into_response())
    } else {
        whole_answer(app, head, guard).await
    }
}

/// What every chunk and completion of one request repeats.
#[derive(Clone)]
struct Head {
    id: String,
    created: i64,
    model: String,
    job: JobId,
}

impl Head {
    fn chunk(&self, delta: Delta, finish: Option<String>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish,
            }],
            usage: None,
            runegrid: None,
        }
    }

    fn info(&self, state: AnswerState, r: Option<&TaskResult>) -> GridInfo {
        GridInfo {
            job: self.job,
            state,
            acceptance: r.and_then(|r| r.acceptance),
            digest: r.and_then(|r| r.digest),
            attempts: r.map_or(0, |r| r.attempts),
            content: None,
        }
    }
}

/// The answer's text, usage and finish reason from an accepted result.
fn answer_of(r: &TaskResult) -> (String, Usage, String) {
    let text = String::from_utf8_lossy(&r.stdout_bytes().unwrap_or_default()).into_owned();
    let summary = r
        .stderr
        .as_deref()
        .and_then(|s| Summary::from_stderr(s.as_bytes()));
    let usage = summary.as_ref().map_or(Usage::default(), |s| Usage {
        prompt_tokens: s.prompt_tokens as u64,
        completion_tokens: s.tokens as u64,
        total_tokens: (s.prompt_tokens + s.tokens) as u64,
        cost: None,
    });
    let finish = match summary.as_ref().map(|s| s.stop.as_str()) {
        Some("length") => "length",
        _ => "stop",
    };
    (text, usage, finish.into())
}

/// What a chat request's job paid (its result is accepted, so paid for), on a grid that
/// charges.
fn cost_of(app: &App, job: JobId) -> Option<i64> {
    app.job_status(job)
        .and_then(|(_, s)| s.cost)
        .filter(|c| c.held > 0)
        .map(|_| app.job_spent(job))
}

/// Why a final result is not an answer.
fn failure_of(r: &TaskResult) -> Option<ApiError> {
    if r.state == ResultState::Verified && r.exit_code == Some(0) {
        return None;
    }
    let detail = r
        .stderr
        .as_deref()
        .and_then(|s| s.lines().rev().find(|l| l.starts_with("infer:")))
        .map(|l| format!(" ({l})"))
        .unwrap_or_default();
    let message = match (&r.error, r.state) {
        (Some(e), _) => format!("the answer could not be computed: {e}{detail}"),
        (None, ResultState::Verified) => format!(
            "the inference program failed with exit code {}{detail}",
            r.exit_code.unwrap_or(-1)
        ),
        (None, state) => format!("the answer is {state}{detail}"),
    };
    Some(ApiError::new(
        StatusCode::BAD_GATEWAY,
        if r.state == ResultState::Cancelled {
            "cancelled"
        } else {
            "inference_failed"
        },
        message,
    ))
}

async fn final_result(app: &AppState, job: JobId) -> Option<TaskResult> {
    if let Some((_, mut done)) = app.done_flag(job) {
        let _ = done.wait_for(|d| *d).await;
    }
    let r = app
        .job_results(job)
        .and_then(|(_, r)| r.tasks.into_iter().next());
    // The answer is given once stored (see `http::jobs::status`).
    app.writer.flush().await;
    r
}

async fn whole_answer(
    app: AppState,
    head: Head,
    mut guard: CancelOnDrop,
) -> Result<Response, ApiError> {
    let r = final_result(&app, head.job).await.ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("job {} has no result", head.job),
        )
    })?;
    guard.armed = false;
    if let Some(e) = failure_of(&r) {
        return Err(e);
    }
    let (text, mut usage, finish_reason) = answer_of(&r);
    usage.cost = cost_of(&app, head.job);
    Ok(Json(ChatCompletion {
        id: head.id.clone(),
        object: "chat.completion".into(),
        created: head.created,
        model: head.model.clone(),
        choices: vec![ChatChoice {
            index: 0,
            message: ChatMessage::new("assistant", &text),
            finish_reason,
        }],
        usage,
        runegrid: head.info(AnswerState::Verified, Some(&r)),
    })
    .into_response())
}

/// A streamed answer in progress.
struct Streaming {
    app: AppState,
    head: Head,
    guard: CancelOnDrop,
    rx: Option<tokio::sync::broadcast::Receiver<JobEvent>>,
    /// The attempt whose tokens are being shown.
    followed: Option<AttemptId>,
    /// No more tokens are shown as they come (chunks were missed, or a finished result was
    /// shown whole): the final result fills in or corrects the rest.
    stopped: bool,
    /// What the client has been shown.
    shown: String,
    said_unverified: bool,
    out: VecDeque<Event>,
    finished: bool,
}

fn data(v: &impl serde::Serialize) -> Event {
    Event::default().data(serde_json::to_string(v).expect("chunks serialize"))
}

impl Streaming {
    fn push(&mut self, chunk: ChatChunk) {
        self.out.push_back(data(&chunk));
    }

    fn content(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        self.shown.push_str(text);
        let c = self.head.chunk(
            Delta {
                role: None,
                content: Some(text.into()),
            },
            None,
        );
        self.push(c);
    }

    /// Brings what was shown in line with `r`'s answer: the rest of it when what was shown is
    /// its beginning, else (with `correct`) a `corrected` chunk carrying it whole.
    fn reconcile(&mut self, r: &TaskResult, correct: bool) {
        let (text, _, _) = answer_of(r);
        if let Some(rest) = text.strip_prefix(self.shown.as_str()) {
            let rest = rest.to_string();
            self.content(&rest);
        } else if correct {
            let mut c = self.head.chunk(Delta::default(), None);
            let mut info = self.head.info(AnswerState::Corrected, Some(r));
            info.content = Some(text.clone());
            c.runegrid = Some(info);
            self.push(c);
            self.shown = text;
        }
    }

    fn on_task(&mut self, r: TaskResult) {
        match r.state {
            ResultState::Unverified => {
                if !self.said_unverified && r.exit_code == Some(0) {
                    self.said_unverified = true;
                    // The first result may come from another attempt than the one streaming:
                    // shown in full now, so the followed attempt's later tokens would repeat it.
                    let before = self.shown.len();
                    self.reconcile(&r, false);
                    if self.shown.len() != before {
                        self.stopped = true;
                    }
                    let mut c = self.head.chunk(Delta::default(), None);
                    c.runegrid = Some(self.head.info(AnswerState::Unverified, Some(&r)));
                    self.push(c);
                }
            }
            _ => self.finish(r),
        }
    }

    fn finish(&mut self, r: TaskResult) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.guard.armed = false;
        if let Some(e) = failure_of(&r) {
            self.out.push_back(data(&serde_json::json!({
                "error": {"message": e.message, "type": "runegrid_error", "code": e.code},
                "runegrid": self.head.info(AnswerState::Failed, Some(&r)),
            })));
        } else {
            self.reconcile(&r, true);
            let (_, mut usage, finish) = answer_of(&r);
            usage.cost = cost_of(&self.app, self.head.job);
            let mut c = self.head.chunk(Delta::default(), Some(finish));
            c.usage = Some(usage);
            c.runegrid = Some(self.head.info(AnswerState::Verified, Some(&r)));
            self.push(c);
        }
        self.out.push_back(Event::default().data("[DONE]"));
    }

    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.out.pop_front() {
                return Some(e);
            }
            if self.finished {
                return None;
            }
            let ev = match self.rx.as_mut() {
                Some(rx) => match rx.recv().await {
                    Ok(ev) => Some(ev),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // Chunks were missed: stop showing this attempt's tokens; the final
                        // result fills in the rest.
                        self.stopped = true;
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
                },
                None => None,
            };
            match ev {
                Some(JobEvent::Stdout { attempt, data, .. }) => {
                    if self.followed.is_none() {
                        self.followed = Some(attempt);
                    }
                    if self.followed == Some(attempt) && !self.stopped {
                        self.content(&data);
                    }
                }
                Some(JobEvent::Task { result }) => self.on_task(result),
                Some(JobEvent::Done { .. }) | None => {
                    self.rx = None;
                    match final_result(&self.app, self.head.job).await {
                        Some(r) => self.finish(r),
                        None => {
                            self.finished = true;
                            self.out.push_back(Event::default().data("[DONE]"));
                        }
                    }
                }
                Some(JobEvent::Progress { .. }) | Some(JobEvent::Corrected { .. }) => {}
            }
        }
    }
}

fn stream_answer(
    app: AppState,
    head: Head,
    guard: CancelOnDrop,
    rx: Option<EventReceiver>,
) -> Response {
    let open = app.config.metrics.open(crate::metrics::Stream::Sse);
    let mut s = Streaming {
        app: app.clone(),
        head: head.clone(),
        guard,
        rx,
        followed: None,
        stopped: false,
        shown: String::new(),
        said_unverified: false,
        out: VecDeque::new(),
        finished: false,
    };
    let mut first = head.chunk(
        Delta {
            role: Some("assistant".into()),
            content: Some(String::new()),
        },
        None,
    );
    first.runegrid = Some(head.info(AnswerState::Running, None));
    s.push(first);
    // Subscribed before dispatch: every event of the job is in `rx`, from the first output
    // chunk to the final `done`.
    // Counted as an open stream until the response body is dropped (ended or hung up).
    let events = stream::unfold((s, open), |(mut s, open)| async move {
        s.next_event()
            .await
            .map(|e| (Ok::<_, std::convert::Infallible>(e), (s, open)))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
