//! LLM inference on a real grid: a coordinator serving the model, native worker processes
//! fetching its weights as a blob, answers streamed and verified, a lying worker outvoted, and
//! blobs checked by their hash.

mod common;

use common::{Grid, wait_until};
use runegrid_client::Client;
use runegrid_core::{Acceptance, JobState};
use runegrid_proto::chat::{AnswerState, ChatChunk, ChatGridOptions, ChatMessage, ChatRequest};
use runegrid_proto::{ResultState, SubmitJob, TaskSpec};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const QUESTION: &str = "What is the capital of France? Answer in one sentence.";
/// The greedy answer (the same natively and in WASI, see crates/infer/tests/sandbox.rs).
const ANSWER: &str = "The capital of France is Paris.";
/// A question that means something only after [`QUESTION`].
const FOLLOW_UP: &str = "And of Italy?";

fn model() -> Option<PathBuf> {
    let m = runegrid_infer::model_for_tests();
    if m.is_none() {
        eprintln!("skipped: no model file (run scripts/fetch-model.sh or set RUNEGRID_MODEL)");
    }
    m
}

async fn grid_with_model(model: &std::path::Path) -> Grid {
    Grid::start_opts(300, &["--model", model.to_str().unwrap()]).await
}

fn quorum(replicas: u32, agree: u32) -> Option<ChatGridOptions> {
    Some(ChatGridOptions {
        replicas: Some(replicas),
        agree: Some(agree),
        ..ChatGridOptions::default()
    })
}

fn ask(question: &str, max_tokens: u32) -> ChatRequest {
    ChatRequest {
        model: "smollm2-135m-instruct".into(),
        messages: vec![ChatMessage::new("user", question)],
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        ..ChatRequest::default()
    }
}

async fn collect(c: &Client, req: &ChatRequest) -> Vec<ChatChunk> {
    let mut s = c.chat_stream(req).await.expect("stream opens");
    let mut out = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(240), s.next())
        .await
        .expect("a chunk within 240 s")
    {
        out.push(chunk.expect("a chunk, not an error"));
    }
    out
}

fn content(chunks: &[ChatChunk]) -> String {
    chunks
        .iter()
        .filter_map(|c| c.choices.first()?.delta.content.clone())
        .collect()
}

fn states(chunks: &[ChatChunk]) -> Vec<AnswerState> {
    chunks
        .iter()
        .filter_map(|c| Some(c.runegrid.as_ref()?.state))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_native_workers_agree_token_for_token_and_tokens_stream() {
    let Some(model) = model() else { return };
    let mut g = grid_with_model(&model).await;
    let c = g.client();
    let models = c.models().await.unwrap();
    let m = &models.data[0];
    assert_eq!(m.id, "smollm2-135m-instruct");
    assert!(m.runegrid.available, "{m:?}");
    assert_eq!(m.runegrid.workers, 0);
    assert_eq!(m.runegrid.tier, runegrid_core::ModelTier::Small);
    assert_eq!(
        m.runegrid.memory_bytes,
        runegrid_infer::SMOLLM2_135M.memory_bytes
    );

    // A worker that keeps no blobs cannot serve it, nor one offering less memory than a run
    // needs: they are not counted, and never get a request.
    g.worker("no-room", 2, &["--blob-space", "0"]);
    g.worker("no-memory", 2, &["--memory", "100M"]);
    g.wait_workers(2).await;
    assert_eq!(c.models().await.unwrap().data[0].runegrid.workers, 0);
    // Two workers that can arrive and answer, verified by a quorum of both (the same tokens from
    // two processes).
    g.worker("w1", 1, &[]);
    g.worker("w2", 1, &[]);
    g.wait_workers(4).await;
    assert_eq!(c.models().await.unwrap().data[0].runegrid.workers, 2);
    let mut req = ask(QUESTION, 16);
    req.runegrid = quorum(2, 2);
    let answer = c
        .chat(&req)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", g.logs()));
    let text = answer.choices[0].message.text().unwrap();
    assert_eq!(text, ANSWER);
    assert_eq!(answer.choices[0].finish_reason, "stop");
    assert_eq!(answer.runegrid.state, AnswerState::Verified);
    assert_eq!(answer.runegrid.acceptance, Some(Acceptance::Quorum));
    assert_eq!(answer.runegrid.attempts, 2, "{answer:?}");
    assert_eq!(answer.usage.completion_tokens, 7, "{answer:?}");
    assert!(answer.usage.prompt_tokens > 10, "{answer:?}");
    // The job is an ordinary job: its task shows the same answer, accepted by quorum.
    let results = c.results(answer.runegrid.job, None).await.unwrap();
    assert_eq!(results.tasks[0].stdout.as_deref(), Some(ANSWER));
    // Both workers now hold the weights and say so.
    wait_until(
        "both workers to hold the model",
        Duration::from_secs(30),
        || {
            let c = c.clone();
            async move {
                let m = c.models().await.ok()?;
                (m.data[0].runegrid.workers_holding == 2).then_some(())
            }
        },
    )
    .await;
    // `/v1/workers` shows the blobs a worker holds now, not those of its hello.
    let sha = runegrid_infer::MODELS[0].sha256;
    for w in c.workers().await.unwrap() {
        let held: Vec<String> =
            serde_json::from_value(w.capabilities["blobs"].clone()).unwrap_or_default();
        let want = w.name != "no-room" && w.name != "no-memory";
        assert_eq!(held.iter().any(|b| b == sha), want, "{}: {held:?}", w.name);
    }

    // Streamed and sampled (seeded): the tokens arrive before the answer is verified, then an
    // unverified mark, then the verified end; what streamed is the verified answer.
    let mut req = ask("Write a short poem about sharing computers.", 24);
    req.temperature = Some(0.8);
    req.seed = Some(7);
    req.runegrid = quorum(2, 2);
    let chunks = collect(&c, &req).await;
    let st = states(&chunks);
    assert_eq!(st.first(), Some(&AnswerState::Running), "{st:?}");
    assert_eq!(st.last(), Some(&AnswerState::Verified), "{st:?}");
    assert!(!st.contains(&AnswerState::Corrected), "{st:?}");
    let first_mark = chunks
        .iter()
        .position(|c| {
            c.runegrid
                .as_ref()
                .is_some_and(|i| i.state != AnswerState::Running)
        })
        .unwrap();
    let streamed_before: String = content(&chunks[..first_mark]);
    assert!(
        !streamed_before.is_empty(),
        "tokens are shown before any result is in: {chunks:?}"
    );
    let text = content(&chunks);
    let last = chunks.last().unwrap();
    assert_eq!(last.choices[0].finish_reason.as_deref(), Some("length"));
    assert_eq!(last.usage.unwrap().completion_tokens, 24);
    // The same request again (same seed) gives the same text: sampling is a function of it.
    // A request with a seed is repeatable, so it is answered from the result cache at once:
    // no attempt, the same usage.
    let again = c.chat(&req).await.unwrap();
    assert_eq!(again.choices[0].message.text().unwrap(), text);
    assert_eq!(
        again.runegrid.acceptance,
        Some(Acceptance::Cached),
        "{again:?}"
    );
    assert_eq!(again.runegrid.attempts, 0);
    assert_eq!(again.usage.completion_tokens, 24);
    assert_eq!(again.choices[0].finish_reason, "length");
    // Streamed from the cache: the whole verified text, then the end.
    let cached = collect(&c, &req).await;
    assert_eq!(content(&cached), text);
    assert_eq!(states(&cached).last(), Some(&AnswerState::Verified));
    // Without a seed a request is never reused (even greedy: the first answer above).
    let unseeded = c
        .chat(&{
            let mut r = ask(QUESTION, 16);
            r.runegrid = quorum(2, 2);
            r
        })
        .await
        .unwrap();
    assert_eq!(unseeded.runegrid.acceptance, Some(Acceptance::Quorum));

    // The terminal client.
    let out = g.cli(&[
        "chat",
        "--temperature",
        "0",
        "--max-tokens",
        "16",
        "--replicas",
        "2",
        "--agree",
        "2",
        QUESTION,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim_end(), ANSWER);
    assert!(stderr.contains("[verified (quorum)"), "{stderr}");

    // On a terminal `runegrid chat` holds a conversation: each turn sends the history.
    let mut term = Terminal::chat(&g, &["--temperature", "0", "--max-tokens", "16"]);
    term.wait_for("the first prompt", |o| o.ends_with("> "));
    term.send(QUESTION);
    term.wait_for("the first answer", |o| {
        o.matches("[verified").count() == 1 && o.ends_with("> ")
    });
    term.send(FOLLOW_UP);
    let out = term.wait_for("the second answer", |o| {
        o.matches("[verified").count() == 2 && o.ends_with("> ")
    });
    term.send("");
    let status = term.finish();
    assert!(status.success(), "{out}");
    let first = between(&out, QUESTION, "[verified");
    let second = between(&out, FOLLOW_UP, "[verified");
    assert_eq!(first, ANSWER, "{out}");
    // The second turn's answer is the one to the whole conversation.
    let mut conversation = ask(QUESTION, 16);
    conversation.messages.extend([
        ChatMessage::new("assistant", ANSWER),
        ChatMessage::new("user", FOLLOW_UP),
    ]);
    let want = c.chat(&conversation).await.unwrap();
    assert_eq!(second, want.choices[0].message.text().unwrap(), "{out}");
    // Alone, the follow-up gets another answer (greedy, so this is a fixed fact of the model).
    let alone = c.chat(&ask(FOLLOW_UP, 16)).await.unwrap();
    assert_ne!(second, alone.choices[0].message.text().unwrap(), "{out}");

    // A client that hangs up mid-answer cancels its job.
    let mut req = ask("Write a long story about a dragon.", 200);
    req.runegrid = quorum(2, 2);
    let mut s = c.chat_stream(&req).await.unwrap();
    let first = s.next().await.unwrap().unwrap();
    let job = first.runegrid.unwrap().job;
    drop(s);
    wait_until(
        "the abandoned job to be cancelled",
        Duration::from_secs(30),
        || {
            let c = c.clone();
            async move { (c.status(job).await.ok()?.state == JobState::Cancelled).then_some(()) }
        },
    )
    .await;

    let ws = c.workers().await.unwrap();
    let no_room = ws.iter().find(|w| w.name == "no-room").unwrap();
    assert_eq!(no_room.completed, 0, "{no_room:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_returns_other_tokens_is_outvoted_and_the_stream_corrected() {
    let Some(model) = model() else { return };
    let mut g = grid_with_model(&model).await;
    let c = g.client();
    // The liar is alone at first, so the tokens streamed to the user are its (forged) ones.
    g.worker("liar", 1, &["--misbehave", "lie"]);
    g.wait_workers(1).await;
    let mut req = ask(QUESTION, 16);
    req.runegrid = quorum(2, 2);
    let mut s = c.chat_stream(&req).await.unwrap();
    let mut chunks = Vec::new();
    let mut joined = false;
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(240), s.next())
        .await
        .expect("a chunk within 240 s")
    {
        let chunk = chunk.expect("a chunk, not an error");
        let has_text = chunk.choices[0]
            .delta
            .content
            .as_ref()
            .is_some_and(|t| !t.is_empty());
        chunks.push(chunk);
        // Once the liar's tokens show, two honest workers arrive: one disagrees with the liar,
        // the other breaks the tie.
        if has_text && !joined {
            joined = true;
            g.worker("honest1", 1, &[]);
            g.worker("honest2", 1, &[]);
        }
    }
    let st = states(&chunks);
    assert_eq!(st.last(), Some(&AnswerState::Verified), "{st:?}");
    let last = chunks.last().unwrap().runegrid.clone().unwrap();
    assert_eq!(last.acceptance, Some(Acceptance::Quorum));
    assert_eq!(last.attempts, 3, "{last:?}");
    // What streamed was the liar's; the verified answer replaced it.
    let corrected_at = chunks
        .iter()
        .position(|c| {
            c.runegrid
                .as_ref()
                .is_some_and(|i| i.state == AnswerState::Corrected)
        })
        .unwrap_or_else(|| panic!("no correction: {chunks:?}"));
    let streamed = content(&chunks[..corrected_at]);
    assert!(streamed.starts_with("(forged "), "{streamed:?}");
    let info = chunks[corrected_at].runegrid.as_ref().unwrap();
    assert_eq!(info.content.as_deref(), Some(ANSWER));
    assert_eq!(
        content(&chunks[corrected_at..]),
        "",
        "nothing streams after the correction"
    );
    let ws = c.workers().await.unwrap();
    let liar = ws.iter().find(|w| w.name == "liar").unwrap();
    assert_eq!(liar.disagreed, 1, "{liar:?}");
    assert!(
        ws.iter()
            .filter(|w| w.name.starts_with("honest"))
            .all(|w| w.agreed == 1 && w.disagreed == 0),
        "{ws:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_are_checked_by_their_hash() {
    let mut g = Grid::start().await;
    let c = g.client();
    let echo = g.upload(runegrid_examples::ECHO).await;
    let data = b"a blob of data\n".to_vec();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data));

    // An upload that does not hash to its name is refused and stores nothing.
    let other = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"other"));
    let e = c.put_blob(&other, data.clone()).await.unwrap_err();
    assert_eq!(e.code(), Some("blob_mismatch"), "{e}");
    let job = |blobs: BTreeMap<String, String>| SubmitJob {
        gpu: None,
        max_price: None,
        seed: None,
        cache: None,
        blobs,
        ..common::job(
            &echo,
            vec![TaskSpec {
                args: vec!["cat:/blobs/data.txt".into()],
                ..TaskSpec::default()
            }],
            1,
            1,
        )
    };
    let e = c
        .submit(&job(BTreeMap::from([("data.txt".into(), other.clone())])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("unknown_blob"), "{e}");
    let e = c
        .submit(&job(BTreeMap::from([("../x".into(), other.clone())])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("invalid_blobs"), "{e}");

    // Stored under its hash, fetched by the worker and mounted read-only.
    let info = c.put_blob(&sha, data.clone()).await.unwrap();
    assert_eq!((info.sha256.as_str(), info.size), (sha.as_str(), 15));
    g.worker("w", 1, &[]);
    g.wait_workers(1).await;
    let mount = BTreeMap::from([("data.txt".to_string(), sha.clone())]);
    let r = g.run(&job(mount.clone())).await;
    let t = &r.tasks[0];
    assert_eq!(t.state, ResultState::Verified, "{t:?}\n{}", g.logs());
    assert!(
        t.stdout
            .as_deref()
            .unwrap()
            .contains("cat /blobs/data.txt=a blob of data\n"),
        "{t:?}"
    );
    let cached = g.dir.path().join("w").join("blobs").join(&sha);
    assert_eq!(std::fs::read(&cached).unwrap(), data);

    // The worker's copy is damaged on disk: a new worker process (same data directory) notices
    // by the hash when it loads it, fetches it again and answers right.
    g.kill_worker(0);
    std::fs::write(&cached, b"a blob of dat4\n").unwrap();
    let w = g.worker("w", 1, &[]);
    g.wait_workers(1).await;
    let r = g.run(&job(mount.clone())).await;
    assert!(
        r.tasks[0]
            .stdout
            .as_deref()
            .unwrap()
            .contains("=a blob of data\n"),
        "{:?}",
        r.tasks[0]
    );
    assert_eq!(std::fs::read(&cached).unwrap(), data);
    g.kill_worker(w);

    // The coordinator's copy is damaged: a worker that has none downloads it, sees the hash is
    // wrong and refuses to run the task; the task fails saying why, and nothing is cached.
    let stored = g.data().join("blobs").join(&sha);
    std::fs::write(&stored, b"tampered blob!\n").unwrap();
    g.worker("fresh", 1, &[]);
    g.wait_workers(1).await;
    let r = g.run(&job(mount)).await;
    let t = &r.tasks[0];
    assert_eq!(t.state, ResultState::Failed, "{t:?}");
    let err = t.error.as_deref().unwrap_or_default();
    assert!(err.contains(&sha) && err.contains("sha256"), "{err}");
    assert!(!g.dir.path().join("fresh").join("blobs").join(&sha).exists());
}

#[test]
fn the_inference_benchmark_runs() {
    let Some(model) = model() else { return };
    let out = common::output_within(
        {
            let mut cmd = std::process::Command::new(common::BIN);
            cmd.args([
                "bench", "infer", "--tokens", "4", "--rounds", "1", "--model",
            ])
            .arg(&model);
            cmd
        },
        Duration::from_secs(300),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "local WASI",
        "local time to first token, by phase",
        "memory per request",
        "grid, 1 worker",
        "grid, 2 workers",
        "grid ÷ local",
    ] {
        assert!(stdout.contains(line), "{line:?} missing:\n{stdout}");
    }
    // The browser worker's rounds, or a note saying why not.
    assert!(
        stdout.contains("browser worker (headless Chromium)")
            || stdout.contains("browser worker skipped"),
        "{stdout}"
    );
}

/// `runegrid chat` on a pseudo-terminal (util-linux `script`), so it sees a terminal on stdin
/// and holds a conversation; what it writes (the terminal's echo included) is collected.
struct Terminal {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<String>>,
}

impl Terminal {
    fn chat(g: &Grid, args: &[&str]) -> Terminal {
        let cmd = std::iter::once(common::BIN.to_string())
            .chain(["chat".to_string()])
            .chain(args.iter().map(|a| a.to_string()))
            .collect::<Vec<_>>()
            .join(" ");
        let mut child = Command::new("script")
            .args(["-q", "-e", "-c", &cmd, "/dev/null"])
            .envs(g.cli_env())
            .env("SHELL", "/bin/sh")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("util-linux `script` runs the chat on a pseudo-terminal");
        let mut stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]).replace('\r', ""));
            }
        });
        Terminal {
            stdin: child.stdin.take(),
            child,
            out,
        }
    }

    /// Types a line.
    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits (up to 240 s) until what was written satisfies `done`; returns it.
    fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let out = self.out.lock().unwrap().clone();
            if done(&out) {
                return out;
            }
            assert!(
                start.elapsed() < Duration::from_secs(240),
                "timed out waiting for {what}; the terminal shows:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Closes the terminal's input and waits (up to 30 s) for the chat to end.
    fn finish(mut self) -> ExitStatus {
        drop(self.stdin.take());
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("the chat did not end: {}", self.out.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The text after the last line that is `line` and before the next `end`, trimmed.
fn between<'a>(out: &'a str, line: &str, end: &str) -> &'a str {
    let from = out.rfind(&format!("{line}\n")).expect("the line") + line.len() + 1;
    let to = out[from..].find(end).map_or(out.len(), |i| from + i);
    out[from..to].trim()
}
