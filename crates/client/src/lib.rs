//! A typed client for the runegrid API, used by the CLI, the benchmarks and the tests.

use reqwest::{Method, RequestBuilder, StatusCode};
use runegrid_proto::chat::{ChatChunk, ChatCompletion, ChatRequest, ModelList};
use runegrid_proto::{
    AccountCredits, AccountInfo, AccountSettings, BlobInfo, CreateAccount, ErrorBody, GrantCredits,
    JobEvent, JobResults, JobStatus, Leaderboard, PriceInfo, ProgramInfo, Statement, SubmitJob,
    SubmitJobResponse, WorkerInfo,
};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The coordinator answered with an error.
    #[error("{message} ({code}, http {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The coordinator could not be reached or the connection broke.
    #[error("cannot reach the coordinator at {url}")]
    Transport { url: String, source: reqwest::Error },
    /// The answer was not what the API promises.
    #[error("unexpected answer from the coordinator: {0}")]
    Decode(String),
}

impl ClientError {
    /// The API error code (`not_found`, `invalid_module`, ...), if the coordinator sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A connection to a coordinator with one account's token.
///
/// Given several coordinators (one active, the others standing by on the same database), a
/// request a standby refuses, or one that could not connect (and so was never received), goes
/// to the active coordinator the standby named, or to the next one given, for up to
/// [`FAILOVER_WAIT`] while a standby takes over. A request whose connection broke after it was
/// sent is not repeated: it may have been done.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The coordinators' base URLs, without a trailing slash.
    bases: Arc<[String]>,
    /// Which of them requests go to.
    at: Arc<AtomicUsize>,
    token: Option<String>,
}

/// How long a request waits for an active coordinator when several are given.
pub const FAILOVER_WAIT: Duration = Duration::from_secs(30);

/// The header in which a standby coordinator names the active one (empty when none is).
pub const ACTIVE_HEADER: &str = runegrid_proto::failover::ACTIVE_HEADER;

impl Client {
    /// `base` is like `http://127.0.0.1:7070`, or several such URLs separated by commas
    /// (coordinators sharing one database).
    pub fn new(base: &str, token: Option<String>) -> Client {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(64)
            .build()
            .expect("http client builds");
        let mut bases: Vec<String> = base
            .split(',')
            .map(|b| b.trim().trim_end_matches('/').to_string())
            .filter(|b| !b.is_empty())
            .collect();
        if bases.is_empty() {
            bases.push(base.trim().to_string());
        }
        Client {
            http,
            bases: bases.into(),
            at: Arc::new(AtomicUsize::new(0)),
            token,
        }
    }

    /// The coordinator requests go to now.
    pub fn base(&self) -> &str {
        &self.bases[self.at.load(Ordering::Relaxed) % self.bases.len()]
    }

    fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.authed(self.http.request(method, format!("{}{path}", self.base())))
    }

    /// `r` with this client's token.
    fn authed(&self, r: RequestBuilder) -> RequestBuilder {
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends a request, to another coordinator if this one stands by (see [`Client`]).
    async fn send(&self, r: RequestBuilder) -> Result<reqwest::Response> {
        let mut req = r.build().map_err(|source| ClientError::Transport {
            url: self.base().to_string(),
            source,
        })?;
        let deadline = std::time::Instant::now() + FAILOVER_WAIT;
        let mut tries = 0usize;
        let resp = loop {
            let again = (self.bases.len() > 1).then(|| req.try_clone()).flatten();
            let from = self.base().to_string();
            let hint = match self.http.execute(req).await {
                Ok(resp) => match standby_hint(&resp).filter(|_| again.is_some()) {
                    Some(hint) => hint,
                    None => break resp,
                },
                Err(source) if again.is_some() && source.is_connect() => None,
                Err(source) => return Err(ClientError::Transport { url: from, source }),
            };
            let Some(mut next) = again else {
                unreachable!("only retried with a copy")
            };
            tries += 1;
            if std::time::Instant::now() > deadline {
                return Err(ClientError::Api {
                    status: 503,
                    code: "standby".into(),
                    message: format!(
                        "no coordinator of {} is active after {FAILOVER_WAIT:?}",
                        self.bases.join(", ")
                    ),
                });
            }
            let named = hint.and_then(|h| self.bases.iter().position(|b| *b == h));
            let at =
                named.unwrap_or_else(|| (self.at.load(Ordering::Relaxed) + 1) % self.bases.len());
            self.at.store(at, Ordering::Relaxed);
            if named.is_none() && tries.is_multiple_of(self.bases.len()) {
                // Every one refused: a takeover is under way.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let rest = next
                .url()
                .as_str()
                .strip_prefix(from.as_str())
                .map(str::to_string);
            if let Some(url) =
                rest.and_then(|r| reqwest::Url::parse(&format!("{}{r}", self.base())).ok())
            {
                *next.url_mut() = url;
            }
            req = next;
        };
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => ClientError::Api {
                status: status.as_u16(),
                code: b.error.code,
                message: b.error.message,
            },
            Err(_) => ClientError::Api {
                status: status.as_u16(),
                code: status_code(status).into(),
                message: if text.is_empty() {
                    status.to_string()
                } else {
                    text
                },
            },
        })
    }

    /// The whole body of a successful answer.
    async fn bytes(&self, r: RequestBuilder) -> Result<Vec<u8>> {
        let resp = self.send(r).await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Transport {
                url: self.base().to_string(),
                source,
            })?;
        Ok(bytes.to_vec())
    }

    async fn json<T: DeserializeOwned>(&self, r: RequestBuilder) -> Result<T> {
        let bytes = self.bytes(r).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub async fn me(&self) -> Result<AccountInfo> {
        self.json(self.req(Method::GET, "/v1/me")).await
    }

    /// Creates an account (admin only); the answer carries its token.
    pub async fn create_account(&self, name: &str, admin: bool) -> Result<AccountInfo> {
        let body = CreateAccount {
            name: name.into(),
            admin,
        };
        self.json(self.req(Method::POST, "/v1/accounts").json(&body))
            .await
    }

    /// The caller's credits.
    pub async fn credits(&self) -> Result<AccountCredits> {
        self.json(self.req(Method::GET, "/v1/account")).await
    }

    /// The caller's statement, newest first: `limit` entries older than `before`.
    pub async fn ledger(&self, before: Option<i64>, limit: u32) -> Result<Statement> {
        let path = match before {
            Some(b) => format!("/v1/ledger?before={b}&limit={limit}"),
            None => format!("/v1/ledger?limit={limit}"),
        };
        self.json(self.req(Method::GET, &path)).await
    }

    /// Sets (`None`: withdraws) the caller's name on the contributors' leaderboard.
    pub async fn set_display_name(&self, name: Option<&str>) -> Result<AccountCredits> {
        let body = AccountSettings {
            display_name: name.map(str::to_string),
        };
        self.json(self.req(Method::PUT, "/v1/account").json(&body))
            .await
    }

    /// The contributors who earned most (no token needed).
    pub async fn leaderboard(&self) -> Result<Leaderboard> {
        self.json(self.req(Method::GET, "/v1/leaderboard")).await
    }

    /// What work costs now.
    pub async fn price(&self) -> Result<PriceInfo> {
        self.json(self.req(Method::GET, "/v1/price")).await
    }

    /// Grants `amount` micro-credits to the account `name` (admin only).
    pub async fn grant(&self, name: &str, amount: i64) -> Result<AccountCredits> {
        self.json(
            self.req(Method::POST, &format!("/v1/accounts/{name}/credits"))
                .json(&GrantCredits { amount }),
        )
        .await
    }

    /// Uploads a module (binary or WAT); the coordinator validates and meters it.
    pub async fn upload_program(&self, module: Vec<u8>) -> Result<ProgramInfo> {
        self.json(self.req(Method::POST, "/v1/programs").body(module))
            .await
    }

    pub async fn submit(&self, job: &SubmitJob) -> Result<SubmitJobResponse> {
        self.json(self.req(Method::POST, "/v1/jobs").json(job))
            .await
    }

    /// Submits and waits up to `wait` for the job to finish: one round trip for a remote call.
    pub async fn submit_wait(&self, job: &SubmitJob, wait: Duration) -> Result<SubmitJobResponse> {
        let path = format!("/v1/jobs?wait={}", wait.as_secs_f64());
        self.json(self.req(Method::POST, &path).json(job)).await
    }

    pub async fn jobs(&self) -> Result<Vec<JobStatus>> {
        self.json(self.req(Method::GET, "/v1/jobs")).await
    }

    pub async fn status(&self, job: i64) -> Result<JobStatus> {
        self.json(self.req(Method::GET, &format!("/v1/jobs/{job}")))
            .await
    }

    pub async fn cancel(&self, job: i64) -> Result<JobStatus> {
        self.json(self.req(Method::DELETE, &format!("/v1/jobs/{job}")))
            .await
    }

    /// Results now, or after waiting up to `wait` for the job to finish.
    pub async fn results(&self, job: i64, wait: Option<Duration>) -> Result<JobResults> {
        let path = match wait {
            Some(w) => format!("/v1/jobs/{job}/results?wait={}", w.as_secs_f64()),
            None => format!("/v1/jobs/{job}/results"),
        };
        self.json(self.req(Method::GET, &path)).await
    }

    /// The bytes of a file task `index` of `job` left under `/out` (`path` below it, as its
    /// result lists it).
    pub async fn task_file(&self, job: i64, index: u32, path: &str) -> Result<Vec<u8>> {
        let mut url = reqwest::Url::parse(&format!(
            "{}/v1/jobs/{job}/tasks/{index}/files",
            self.base()
        ))
        .map_err(|e| ClientError::Decode(format!("bad coordinator url: {e}")))?;
        url.path_segments_mut()
            .map_err(|()| ClientError::Decode("bad coordinator url".into()))?
            .extend(path.split('/'));
        self.bytes(self.authed(self.http.get(url))).await
    }

    pub async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        self.json(self.req(Method::GET, "/v1/workers")).await
    }

    /// Lifts a worker's quarantine (admin only).
    pub async fn release_worker(&self, id: i64) -> Result<WorkerInfo> {
        self.json(self.req(Method::POST, &format!("/v1/workers/{id}/release")))
            .await
    }

    /// Opens the job's event stream.
    pub async fn events(&self, job: i64) -> Result<EventStream> {
        let resp = self
            .send(self.req(Method::GET, &format!("/v1/jobs/{job}/events")))
            .await?;
        Ok(EventStream {
            sse: SseReader::new(resp, self.base()),
        })
    }

    /// Uploads a blob (`POST /v1/blobs`); the coordinator names it by its hash.
    pub async fn upload_blob(&self, bytes: Vec<u8>) -> Result<BlobInfo> {
        self.json(self.req(Method::POST, "/v1/blobs").body(bytes))
            .await
    }

    /// Uploads a blob under the hash it must have (`PUT /v1/blobs/{sha256}`).
    pub async fn put_blob(&self, sha256: &str, bytes: Vec<u8>) -> Result<BlobInfo> {
        self.json(
            self.req(Method::PUT, &format!("/v1/blobs/{sha256}"))
                .body(bytes),
        )
        .await
    }

    /// `GET /v1/models`.
    pub async fn models(&self) -> Result<ModelList> {
        self.json(self.req(Method::GET, "/v1/models")).await
    }

    /// A chat answer, once verified (`stream` is turned off).
    pub async fn chat(&self, req: &ChatRequest) -> Result<ChatCompletion> {
        let mut req = req.clone();
        req.stream = false;
        self.json(self.req(Method::POST, "/v1/chat/completions").json(&req))
            .await
    }

    /// A chat answer as it is generated (`stream` is turned on).
    pub async fn chat_stream(&self, req: &ChatRequest) -> Result<ChatStream> {
        let mut req = req.clone();
        req.stream = true;
        let resp = self
            .send(self.req(Method::POST, "/v1/chat/completions").json(&req))
            .await?;
        Ok(ChatStream {
            sse: SseReader::new(resp, self.base()),
        })
    }
}

/// `Some` for a standby's refusal, with the active coordinator it names in [`ACTIVE_HEADER`]
/// (if any).
fn standby_hint(resp: &reqwest::Response) -> Option<Option<String>> {
    runegrid_proto::failover::standby_hint(
        resp.status().as_u16(),
        resp.headers().get(ACTIVE_HEADER).map(|v| v.as_bytes()),
    )
}

fn status_code(s: StatusCode) -> &'static str {
    match s.as_u16() {
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        413 => "too_large",
        _ => "http_error",
    }
}

/// Server-Sent Events of one job, decoded.
pub struct EventStream {
    sse: SseReader,
}

impl EventStream {
    /// The next event; `None` when the stream ended.
    pub async fn next(&mut self) -> Option<Result<JobEvent>> {
        let data = self.sse.next().await?;
        Some(
            data.and_then(|d| {
                serde_json::from_str(&d).map_err(|e| ClientError::Decode(e.to_string()))
            }),
        )
    }
}

/// A streamed chat answer: its chunks, until `data: [DONE]`.
pub struct ChatStream {
    sse: SseReader,
}

impl ChatStream {
    /// The next chunk; `None` after the last. An error the coordinator streams (the answer
    /// could not be computed or verified) is returned as [`ClientError::Api`].
    pub async fn next(&mut self) -> Option<Result<ChatChunk>> {
        let data = match self.sse.next().await? {
            Ok(d) => d,
            Err(e) => return Some(Err(e)),
        };
        if data.trim() == "[DONE]" {
            return None;
        }
        let v: serde_json::Value = match serde_json::from_str(&data) {
            Ok(v) => v,
            Err(e) => return Some(Err(ClientError::Decode(e.to_string()))),
        };
        if let Some(err) = v.get("error") {
            let text = |k: &str| err.get(k).and_then(|x| x.as_str()).unwrap_or_default();
            return Some(Err(ClientError::Api {
                status: 502,
                code: text("code").to_string(),
                message: text("message").to_string(),
            }));
        }
        Some(serde_json::from_value(v).map_err(|e| ClientError::Decode(e.to_string())))
    }
}

/// Reads the `data` of Server-Sent Events from a response.
struct SseReader {
    resp: reqwest::Response,
    buf: Vec<u8>,
    base: String,
}

impl SseReader {
    fn new(resp: reqwest::Response, base: &str) -> SseReader {
        SseReader {
            resp,
            buf: Vec::new(),
            base: base.to_string(),
        }
    }

    /// The next event's data (its `data:` lines joined); `None` when the stream ended.
    async fn next(&mut self) -> Option<Result<String>> {
        loop {
            if let Some(pos) = find_blank_line(&self.buf) {
                let block: Vec<u8> = self.buf.drain(..pos.0 + pos.1).collect();
                let text = String::from_utf8_lossy(&block[..pos.0]).into_owned();
                let data: Vec<&str> = text
                    .lines()
                    .filter_map(|l| {
                        l.strip_prefix("data:")
                            .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    })
                    .collect();
                if data.is_empty() {
                    continue; // keep-alive comment
                }
                return Some(Ok(data.join("\n")));
            }
            match self.resp.chunk().await {
                Ok(Some(c)) => self.buf.extend_from_slice(&c),
                Ok(None) => return None,
                Err(source) => {
                    return Some(Err(ClientError::Transport {
                        url: self.base.clone(),
                        source,
                    }));
                }
            }
        }
    }
}

/// Position and length of the first blank-line separator.
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let a = buf.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2));
    let b = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4));
    match (a, b) {
        (Some(x), Some(y)) => Some(if x.0 <= y.0 { x } else { y }),
        (x, y) => x.or(y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_line_separators() {
        assert_eq!(find_blank_line(b"data: x\n\nrest"), Some((7, 2)));
        assert_eq!(find_blank_line(b"data: x\r\n\r\n"), Some((7, 4)));
        assert_eq!(find_blank_line(b"data: x\n"), None);
    }
}
