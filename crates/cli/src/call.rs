//! `runegrid call`: runs a function of a Rune script on the grid, through the built-in Rune
//! runner (`runegrid_runner`), and prints what it returned.

use crate::commands::{CheckArgs, Conn};
use anyhow::{Context, Result, bail};
use clap::Args;
use runegrid_client::Client;
use runegrid_core::ExecStatus;
use runegrid_proto::{JobResults, ResultState, SubmitJob, TaskResult, TaskSpec};
use runegrid_runner::{CallError, decode};
use serde::Serialize;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Args)]
pub struct CallArgs {
    /// The Rune script.
    pub script: PathBuf,
    /// The function to call (a `pub fn` of the script).
    pub function: String,
    /// Its arguments, each read as JSON, or taken as a string when it is not JSON
    /// (`3`, `2.5`, `true`, `null`, `[1,2]`, `{"k":1}`, `hello`).
    #[arg(allow_negative_numbers = true)]
    pub args: Vec<String>,
    /// One call per line of this file, each line a JSON array of arguments; prints one result
    /// per line, in input order.
    #[arg(long, value_name = "FILE.jsonl", conflicts_with = "args")]
    pub map: Option<PathBuf>,
    #[command(flatten)]
    pub check: CheckArgs,
    /// Fuel per attempt (a trivial call takes about 0.4 million; compiling the script is most of it).
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Linear memory cap per attempt, in MiB (the runner starts with 10.1; a small call runs in
    /// 16).
    #[arg(long)]
    pub memory_mb: Option<u64>,
    /// Wall-clock cap per attempt, in seconds.
    #[arg(long)]
    pub wall_time: Option<f64>,
    /// Stdout cap per attempt (what the script prints, and the result), in bytes.
    #[arg(long)]
    pub stdout_bytes: Option<u64>,
    /// Cap on the writable in-memory file system per attempt, in MiB; 0: none (default 64).
    #[arg(long)]
    pub scratch_mb: Option<u64>,
    /// A name for the job (default: SCRIPT:FUNCTION).
    #[arg(long)]
    pub name: Option<String>,
    /// Print each call's whole task result (as `results --json` shows a task), one JSON object
    /// per line.
    #[arg(long)]
    pub json: bool,
}

/// One argument: JSON when it reads as JSON, otherwise the text as a string.
pub fn parse_arg(arg: &str) -> Json {
    serde_json::from_str(arg).unwrap_or_else(|_| Json::String(arg.to_string()))
}

/// Reads a `--map` file: one JSON array of arguments per non-empty line.
pub fn read_map(path: &Path) -> Result<Vec<Vec<Json>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_map(&text, &path.display().to_string())
}

fn parse_map(text: &str, name: &str) -> Result<Vec<Vec<Json>>> {
    let mut calls = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Json>(line) {
            Ok(Json::Array(args)) => calls.push(args),
            _ => bail!(
                "{name}:{}: not a json array of arguments (expected e.g. [1, \"two\"])",
                i + 1
            ),
        }
    }
    if calls.is_empty() {
        bail!("{name} has no calls");
    }
    Ok(calls)
}

pub async fn call(conn: &Conn, a: CallArgs) -> Result<i32> {
    let script = std::fs::read_to_string(&a.script)
        .with_context(|| format!("reading {}", a.script.display()))?;
    let file = a.script.display().to_string();
    let calls = match &a.map {
        Some(path) => read_map(path)?,
        None => vec![a.args.iter().map(|s| parse_arg(s)).collect()],
    };
    let tasks: Vec<TaskSpec> = calls
        .iter()
        .map(|args| TaskSpec {
            buffers: Default::default(),
            args: Vec::new(),
            stdin: runegrid_runner::call_stdin(&script, &a.function, args),
            env: BTreeMap::new(),
        })
        .collect();
    let limits = crate::commands::limits_from(
        a.fuel,
        a.memory_mb,
        a.wall_time,
        a.stdout_bytes,
        a.scratch_mb,
        None,
    );
    let script_name = a
        .script
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.clone());
    let job = SubmitJob {
        gpu: None,
        max_price: None,
        seed: None,
        cache: None,
        program: runegrid_runner::PROGRAM_NAME.to_string(),
        name: Some(
            a.name
                .clone()
                .unwrap_or_else(|| format!("{script_name}:{}", a.function)),
        ),
        tasks,
        policy: a.check.policy,
        replicas: a.check.replicas,
        agree: a.check.agree,
        max_attempts: a.check.max_attempts,
        limits,
        blobs: Default::default(),
    };
    job.resolved_policy().map_err(anyhow::Error::msg)?;
    let client = conn.client()?;
    let results = submit_and_wait(&client, &job).await?;

    if a.json {
        let mut out = std::io::stdout().lock();
        for t in &results.tasks {
            writeln!(out, "{}", serde_json::to_string(t)?)?;
        }
    }
    if a.map.is_some() {
        let mut failed = false;
        let mut out = std::io::stdout().lock();
        for t in &results.tasks {
            let outcome = outcome(t);
            if !a.json {
                print_printed(&outcome.printed);
            }
            let line = match &outcome.result {
                Ok(v) => v.to_string(),
                Err(e) => {
                    failed = true;
                    #[derive(Serialize)]
                    struct ErrorLine {
                        error: ErrorJson,
                    }
                    serde_json::to_string(&ErrorLine {
                        error: e.to_error(),
                    })?
                }
            };
            if !a.json {
                writeln!(out, "{line}")?;
            }
        }
        return Ok(if failed { 3 } else { 0 });
    }
    let task = results
        .tasks
        .first()
        .context("the coordinator returned no task")?;
    let outcome = outcome(task);
    if !a.json {
        print_printed(&outcome.printed);
    }
    match outcome.result {
        Ok(v) => {
            if !a.json {
                println!("{v}");
            }
            Ok(0)
        }
        Err(e) => {
            eprintln!("error: {}", e.describe(&file));
            Ok(3)
        }
    }
}

/// Submits and waits until every task is final.
pub(crate) async fn submit_and_wait(client: &Client, job: &SubmitJob) -> Result<JobResults> {
    const WAIT: Duration = Duration::from_secs(60);
    let sub = client.submit_wait(job, WAIT).await?;
    let mut results = sub.results;
    loop {
        if let Some(r) = &results
            && r.tasks.len() == job.tasks.len()
            && r.tasks.iter().all(|t| t.state.is_final())
        {
            return Ok(results.expect("checked above"));
        }
        results = Some(client.results(sub.job, Some(WAIT)).await?);
    }
}

/// Writes what a script printed to stderr, so stdout carries only results.
fn print_printed(printed: &[u8]) {
    if !printed.is_empty() {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(printed);
        let _ = err.flush();
    }
}

/// What a call came to.
struct Outcome {
    printed: Vec<u8>,
    result: Result<Json, Failure>,
}

/// Why a call gave no value.
enum Failure {
    /// The runner's answer, agreed on by the replicas.
    Call(CallError),
    /// No verified answer (no quorum, too many lost attempts, cancelled).
    Unverified { state: ResultState, error: String },
}

impl Failure {
    /// The message after `error: `.
    fn describe(&self, file: &str) -> String {
        match self {
            Failure::Call(CallError::Script(e)) => e.located(file),
            Failure::Call(CallError::Stopped(status)) => {
                let hint = match status {
                    ExecStatus::OutOfFuel => " (raise --fuel)",
                    ExecStatus::MemoryLimit => " (raise --memory-mb)",
                    ExecStatus::StdoutLimit => " (raise --stdout-bytes)",
                    ExecStatus::OutputLimit => " (raise --output-mb)",
                    _ => "",
                };
                format!("{file}: {status}{hint}")
            }
            Failure::Call(e @ CallError::Malformed(_)) => e.to_string(),
            Failure::Unverified { state, error } => {
                format!("the call was not verified ({state}): {error}")
            }
        }
    }

    /// The `error` object of a `--map` line: the runner's error (`kind` compile, runtime,
    /// input or value, `message`, `line`, `column`), or `kind` the run's status
    /// (`out_of_fuel`, `memory_limit`, `stack_overflow`, `stdout_limit`, `trap:KIND`),
    /// `malformed`, or the task's state when no result was agreed (`failed`, `cancelled`).
    fn to_error(&self) -> ErrorJson {
        let (kind, message, line, column) = match self {
            Failure::Call(CallError::Script(e)) => {
                (e.kind.to_string(), e.message.clone(), e.line, e.column)
            }
            Failure::Call(CallError::Stopped(status)) => {
                (status.code(), status.to_string(), None, None)
            }
            Failure::Call(e @ CallError::Malformed(_)) => {
                ("malformed".to_string(), e.to_string(), None, None)
            }
            Failure::Unverified { state, error } => (state.to_string(), error.clone(), None, None),
        };
        ErrorJson {
            kind,
            message,
            line,
            column,
        }
    }
}

/// The `error` of a `--map` line, fields in the runner's order.
#[derive(Serialize)]
struct ErrorJson {
    kind: String,
    message: String,
    line: Option<u64>,
    column: Option<u64>,
}

/// A task's outcome: an accepted result (the state is `verified` when the runner exited 0,
/// `failed` otherwise) is the runner's answer; anything else has none.
fn outcome(t: &TaskResult) -> Outcome {
    let stdout = t.stdout_bytes().unwrap_or_default();
    let accepted =
        t.acceptance.is_some() && matches!(t.state, ResultState::Verified | ResultState::Failed);
    match &t.status {
        Some(status) if accepted => {
            let d = decode(status, &stdout);
            Outcome {
                printed: d.printed,
                result: d.result.map_err(Failure::Call),
            }
        }
        _ => Outcome {
            printed: Vec::new(),
            result: Err(Failure::Unverified {
                state: t.state,
                error: t.error.clone().unwrap_or_else(|| "no result".into()),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runegrid_core::Acceptance;

    use serde_json::json;

    #[test]
    fn args_are_json_or_strings() {
        assert_eq!(parse_arg("3"), json!(3));
        assert_eq!(parse_arg("-2.5"), json!(-2.5));
        assert_eq!(parse_arg("true"), json!(true));
        assert_eq!(parse_arg("null"), json!(null));
        assert_eq!(parse_arg("[1, \"a\"]"), json!([1, "a"]));
        assert_eq!(parse_arg("{\"k\": 1}"), json!({"k": 1}));
        assert_eq!(parse_arg("\"quoted\""), json!("quoted"));
        assert_eq!(parse_arg("hello"), json!("hello"));
        assert_eq!(parse_arg("hello world"), json!("hello world"));
        assert_eq!(parse_arg("[1,"), json!("[1,"));
        assert_eq!(parse_arg(""), json!(""));
    }

    #[test]
    fn map_lines_are_argument_arrays() {
        let calls = parse_map("[1, 2]\n\n[\"a\"]\n[]\n", "in.jsonl").unwrap();
        assert_eq!(
            calls,
            vec![vec![json!(1), json!(2)], vec![json!("a")], vec![]]
        );
        let e = parse_map("[1]\n{\"a\": 1}\n", "in.jsonl").unwrap_err();
        assert!(
            e.to_string().starts_with("in.jsonl:2: not a json array"),
            "{e}"
        );
        assert!(parse_map("\n \n", "in.jsonl").is_err());
    }

    #[test]
    fn failures_read_like_compiler_errors() {
        let e = Failure::Call(CallError::Script(runegrid_runner::ScriptError {
            kind: runegrid_runner::ErrorKind::Compile,
            message: "Expected `;`".into(),
            line: Some(3),
            column: Some(7),
        }));
        assert_eq!(e.describe("f.rn"), "f.rn:3:7: Expected `;`");
        assert_eq!(
            serde_json::to_string(&e.to_error()).unwrap(),
            r#"{"kind":"compile","message":"Expected `;`","line":3,"column":7}"#
        );
        let e = Failure::Call(CallError::Stopped(ExecStatus::OutOfFuel));
        assert_eq!(
            e.describe("f.rn"),
            "f.rn: out of fuel: the fuel limit was reached (raise --fuel)"
        );
        assert_eq!(e.to_error().kind, "out_of_fuel");
        let e = Failure::Unverified {
            state: ResultState::Failed,
            error: "no quorum".into(),
        };
        assert_eq!(e.to_error().kind, "failed");
        assert!(e.describe("f.rn").contains("no quorum"));
    }

    #[test]
    fn only_accepted_results_are_answers() {
        let mut t = TaskResult {
            index: 0,
            state: ResultState::Failed,
            acceptance: Some(Acceptance::Quorum),
            exit_code: Some(1),
            stdout: None,
            stdout_base64: None,
            fuel: Some(10),
            digest: None,
            attempts: 2,
            error: Some("program exited with code 1".into()),
            status: Some(ExecStatus::Exited { code: 1 }),
            stderr: None,
            files: vec![],
        };
        t.set_stdout(
            b"hi\n{\"error\":{\"kind\":\"runtime\",\"message\":\"m\",\"line\":1,\"column\":2}}\n",
        );
        let o = outcome(&t);
        assert_eq!(o.printed, b"hi\n");
        assert!(matches!(
            o.result,
            Err(Failure::Call(CallError::Script(ref e))) if e.line == Some(1)
        ));
        // No agreement: no answer, whatever a first attempt said.
        t.acceptance = None;
        assert!(matches!(
            outcome(&t).result,
            Err(Failure::Unverified { state, .. }) if state == ResultState::Failed
        ));
    }
}
