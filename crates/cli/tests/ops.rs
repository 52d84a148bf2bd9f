//! Operating a coordinator: `/metrics` after real work, the error envelope on every kind of
//! bad request, the OpenAPI document, the sign-up rate limit and JSON logs.

mod common;

use common::*;
use runegrid_proto::{ErrorBody, ResultState};
use std::time::Duration;

/// The sum of the samples of `name` whose labels include every one of `labels` (`k="v"`).
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name && labels.iter().all(|x| rest.contains(x)))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

async fn scrape(g: &Grid) -> String {
    let res = reqwest::get(format!("{}/metrics", g.url)).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    res.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_real_job() {
    let mut g = Grid::start().await;
    let program = g.upload(runegrid_examples::ECHO).await;
    // Submitted before any worker is there: its tasks wait in the queue.
    let sub = g
        .client()
        .submit(&job(&program, vec![args(&["a"]), args(&["b"])], 2, 2))
        .await
        .unwrap();
    let before = scrape(&g).await;
    assert_eq!(
        metric(&before, "runegrid_tasks", &[r#"state="queued""#]),
        2.0
    );
    assert_eq!(metric(&before, "runegrid_queue_depth", &[]), 2.0);
    assert_eq!(metric(&before, "runegrid_attempts_started_total", &[]), 0.0);
    assert_eq!(metric(&before, "runegrid_workers", &[]), 0.0);
    // A follower of the job's events is an open SSE stream.
    let events = reqwest::Client::new()
        .get(format!("{}/v1/jobs/{}/events", g.url, sub.job))
        .bearer_auth(&g.token)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let open = scrape(&g).await;
    assert_eq!(
        metric(&open, "runegrid_open_connections", &[r#"kind="sse""#]),
        1.0
    );

    g.worker("w0", 1, &[]);
    g.worker("w1", 1, &[]);
    let r = g.wait(sub.job).await;
    assert!(
        r.tasks.iter().all(|t| t.state == ResultState::Verified),
        "{r:?}"
    );
    drop(events);
    let after = wait_until(
        "the event stream to close",
        Duration::from_secs(10),
        || async {
            let t = scrape(&g).await;
            (metric(&t, "runegrid_open_connections", &[r#"kind="sse""#]) == 0.0).then_some(t)
        },
    )
    .await;
    assert!(metric(&after, "runegrid_attempts_started_total", &[]) >= 4.0);
    assert_eq!(
        metric(
            &after,
            "runegrid_task_outcomes_total",
            &[r#"state="verified""#, r#"acceptance="quorum""#]
        ),
        2.0
    );
    assert_eq!(
        metric(&after, "runegrid_dispatch_latency_seconds_count", &[]),
        2.0
    );
    assert!(metric(&after, "runegrid_store_commit_seconds_count", &[]) >= 1.0);
    assert!(metric(&after, "runegrid_store_commit_batch_size_sum", &[]) >= 4.0);
    assert_eq!(
        metric(&after, "runegrid_workers", &[r#"kind="native""#]),
        2.0
    );
    assert_eq!(
        metric(
            &after,
            "runegrid_open_connections",
            &[r#"kind="websocket""#]
        ),
        2.0
    );
    assert_eq!(metric(&after, "runegrid_queue_depth", &[]), 0.0);
    assert_eq!(metric(&after, "runegrid_tasks", &[]), 0.0);
    // Credits: the job is paid for and released; what was minted is all somewhere.
    let price = metric(&after, "runegrid_price_micros", &[]);
    assert!((500_000.0..=2_000_000.0).contains(&price), "{price}");
    let held = |h: &str| {
        let label = format!(r#"holder="{h}""#);
        metric(&after, "runegrid_credits_micros", &[label.as_str()])
    };
    assert!(held("minted") > 0.0 && held("treasury") > 0.0);
    assert_eq!(held("escrow"), 0.0);
    // (f64 carries the test's 10^17 micro-credits to 16 digits.)
    let sum = held("accounts") + held("escrow") + held("treasury");
    assert!((sum - held("minted")).abs() <= held("minted") * 1e-12);
    assert_eq!(
        metric(
            &after,
            "runegrid_http_requests_total",
            &[r#"route="/v1/jobs""#, r#"method="POST""#, r#"status="200""#]
        ),
        1.0
    );
    assert!(
        metric(
            &after,
            "runegrid_http_requests_total",
            &[r#"route="/v1/jobs/{id}""#, r#"status="200""#]
        ) >= 1.0,
        "requests are counted by route pattern:\n{after}"
    );
    // The scrapes before this one (a request is counted once answered).
    assert!(
        metric(
            &after,
            "runegrid_http_requests_total",
            &[r#"route="/metrics""#]
        ) >= 2.0
    );
}

/// Sends a request and returns its status, headers and error body.
async fn refused(req: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, ErrorBody) {
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{status} answer {text:?} is not the error envelope: {e}"));
    (status, headers, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_answer_uses_the_envelope() {
    let g = Grid::start().await;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", g.url);
    let authed = |r: reqwest::RequestBuilder| r.bearer_auth(&g.token);

    let (status, _, b) = refused(
        authed(http.post(url("/v1/jobs")))
            .header("content-type", "application/json")
            .body("{\"program\": "),
    )
    .await;
    assert_eq!((status, b.error.code.as_str()), (400, "invalid_request"));
    assert!(b.error.message.contains("JSON"), "{}", b.error.message);

    let (status, _, b) = refused(
        authed(http.post(url("/v1/jobs")))
            .header("content-type", "application/json")
            .body(r#"{"program": 7, "tasks": []}"#),
    )
    .await;
    assert_eq!((status, b.error.code.as_str()), (422, "invalid_request"));
    assert!(
        b.error.message.contains("invalid type"),
        "{}",
        b.error.message
    );

    let (status, _, b) = refused(authed(http.post(url("/v1/jobs"))).body("{}")).await;
    assert_eq!((status, b.error.code.as_str()), (415, "invalid_request"));

    let (status, _, b) = refused(authed(http.get(url("/v1/jobs/seven")))).await;
    assert_eq!((status, b.error.code.as_str()), (400, "invalid_request"));

    let (status, _, b) = refused(authed(http.get(url("/v1/jobs?limit=many")))).await;
    assert_eq!((status, b.error.code.as_str()), (400, "invalid_request"));

    let (status, _, b) = refused(authed(http.get(url("/v1/no-such-route")))).await;
    assert_eq!((status, b.error.code.as_str()), (404, "not_found"));
    assert!(b.error.message.contains("/v1/no-such-route"));

    let (status, headers, b) = refused(http.delete(url("/v1/stats"))).await;
    assert_eq!((status, b.error.code.as_str()), (405, "method_not_allowed"));
    assert!(headers["allow"].to_str().unwrap().contains("GET"));

    let (status, _, b) = refused(http.get(url("/v1/me"))).await;
    assert_eq!((status, b.error.code.as_str()), (401, "unauthorized"));

    // A plain GET of the worker protocol's WebSocket is not an upgrade.
    let (status, _, b) = refused(authed(http.get(url("/v1/worker")))).await;
    assert!((400..500).contains(&status), "{status}");
    assert_eq!(b.error.code, "invalid_request");

    let (status, _, b) = refused(http.get(url("/web/no-such-file.js"))).await;
    assert_eq!((status, b.error.code.as_str()), (404, "not_found"));

    // The OpenAPI document is served, and names the routes.
    let doc: serde_json::Value = http
        .get(url("/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in ["/v1/jobs", "/v1/chat/completions", "/v1/worker", "/metrics"] {
        assert!(doc["paths"][path].is_object(), "{path} not documented");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signups_are_rate_limited_per_address_and_logs_can_be_json() {
    let g = Grid::start_opts(
        300,
        &[
            "--signup-burst",
            "3",
            "--signup-per-minute",
            "1",
            "--log-format",
            "json",
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let signup = || http.post(format!("{}/v1/contributors", g.url)).send();
    for _ in 0..3 {
        let res = signup().await.unwrap();
        assert_eq!(res.status(), 200);
    }
    let (status, headers, b) = refused(http.post(format!("{}/v1/contributors", g.url))).await;
    assert_eq!((status, b.error.code.as_str()), (429, "rate_limited"));
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After: {wait}");
    // Routes with a token are not limited.
    for _ in 0..5 {
        assert_eq!(g.client().me().await.unwrap().name, "admin");
    }

    // `--log-format json`: the coordinator's log events are JSON objects, one a line.
    let log = std::fs::read_to_string(g.dir.path().join("coordinator.log")).unwrap();
    let events: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["message"] == "coordinator listening" && e["level"] == "INFO"),
        "{log}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["message"] == "contributor account created" && e["account"].is_string()),
        "{log}"
    );
}
