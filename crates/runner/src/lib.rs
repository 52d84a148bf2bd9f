//! The Rune runner: Rune scripts as remote functions.
//!
//! [`RUNE_RUNNER`] is a WASI preview-1 program, the `rune` crate (0.14) compiled to
//! `wasm32-wasip1` by this crate's build script from the guest workspace in `guest/`. It is an
//! ordinary task program: the coordinator instruments it like an uploaded module and registers
//! it under the name [`PROGRAM_NAME`], so scripts run on every worker, native or browser,
//! metered and verified like any other task, with no second engine on the workers.
//!
//! # Protocol
//!
//! - stdin: one JSON object `{"script": SOURCE, "function": NAME, "args": [VALUES...]}`
//!   ([`call_stdin`] writes it). `NAME` is a `pub fn` of the script (`a::b` for one in a `pub
//!   mod`).
//! - stdout: what the script prints (`print!`, `println!`, `dbg!`), as it runs; then one final
//!   line, preceded by `\n` when the printed text does not end with one:
//!   `{"ok": VALUE}` (exit code 0) or
//!   `{"error": {"kind": KIND, "message": TEXT, "line": N|null, "column": N|null}}` (exit code
//!   1). [`decode`] reads it back.
//! - KIND ([`ErrorKind`]): `compile` (the first error in the script, with its 1-based line and
//!   column; an undefined function or variable is a compile error in Rune), `runtime` (a VM
//!   error such as an integer overflow, a type error or `panic!`, placed where the failing
//!   instruction is; or an `Err(e)` the function returned, without a place), `input` (stdin is
//!   not such an object, the function does not exist or is not `pub`, the argument count is
//!   wrong) or `value` (the result has no JSON form). Columns count characters.
//!
//! Values: JSON `null` → `()`, booleans, integers that fit in `i64` → `i64`, other numbers →
//! `f64`, strings, arrays → `Vec`, objects → `Object`. Results: `()` → `null`, booleans,
//! integers, finite floats, `char` and strings → strings, `Vec`, tuples and `Bytes` → arrays,
//! `Object` → object (keys sorted), `None` → `null`, `Some(v)` → `v`, `Ok(v)` → `v`, `Err(e)`
//! → a `runtime` error whose message is `e` (a string as is, anything else as JSON, or its
//! debug form). Structs, enums, functions, NaN and infinite floats are `value` errors: return
//! an object (`#{x: 1}`) instead of a struct.
//!
//! A script that does not end runs out of fuel like any task (`out_of_fuel`); one that uses
//! too much memory ends with `memory_limit`. Everything is deterministic: the same stdin gives
//! the same stdout and fuel on every worker.

use runegrid_core::ExecStatus;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// The Rune runner module (WASI preview 1, not instrumented).
pub const RUNE_RUNNER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/rune-runner.wasm"));

/// The runner's pre-initialization export: it builds what every call needs (rune's context),
/// reading no input; `runegrid_sandbox::preinitialize` runs it once and snapshots the result
/// into the module, so that each call starts with it built. The runner works without it too
/// (the first call then builds the context itself).
pub const INIT_FUNC: &str = "wizer-initialize";

/// The name that stands for the Rune runner in `POST /v1/jobs` (`"program": "rune"`).
pub const PROGRAM_NAME: &str = "rune";

/// One call, as the runner reads it from stdin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// The Rune source.
    pub script: String,
    /// The function to call (a `pub fn` of the script).
    pub function: String,
    /// Its arguments.
    pub args: Vec<Json>,
}

/// The stdin of a call: `{"script": ..., "function": ..., "args": [...]}`.
pub fn call_stdin(script: &str, function: &str, args: &[Json]) -> String {
    #[derive(Serialize)]
    struct CallRef<'a> {
        script: &'a str,
        function: &'a str,
        args: &'a [Json],
    }
    serde_json::to_string(&CallRef {
        script,
        function,
        args,
    })
    .expect("json values serialize")
}

/// What kind of error the runner reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// The script does not compile.
    Compile,
    /// The call failed while running (or returned `Err`).
    Runtime,
    /// Bad stdin: malformed, no such function, wrong argument count.
    Input,
    /// The result has no JSON form.
    Value,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Compile => "compile",
            ErrorKind::Runtime => "runtime",
            ErrorKind::Input => "input",
            ErrorKind::Value => "value",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// An error the runner reported on its final line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind} error{}: {message}", place(*.line, *.column))]
pub struct ScriptError {
    pub kind: ErrorKind,
    pub message: String,
    /// 1-based line in the script, where the runner can tell.
    pub line: Option<u64>,
    /// 1-based column (in characters), where the runner can tell.
    pub column: Option<u64>,
}

fn place(line: Option<u64>, column: Option<u64>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" at {l}:{c}"),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    }
}

impl ScriptError {
    /// `FILE:LINE:COL: message` (`FILE: message` without a place), the way compilers say it.
    pub fn located(&self, file: &str) -> String {
        match (self.line, self.column) {
            (Some(l), Some(c)) => format!("{file}:{l}:{c}: {}", self.message),
            (Some(l), None) => format!("{file}:{l}: {}", self.message),
            _ => format!("{file}: {}", self.message),
        }
    }
}

/// Why a call gave no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The runner reported an error.
    #[error("{0}")]
    Script(ScriptError),
    /// The run ended before the runner could answer: out of fuel, memory limit, stack
    /// overflow, stdout limit, a trap.
    #[error("{0}")]
    Stopped(ExecStatus),
    /// The output is not what the runner writes (not a runner task, or a bug).
    #[error("unexpected output from the rune runner: {0}")]
    Malformed(String),
}

/// A call's output, read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// What the script printed (everything before the final line; when the run stopped early,
    /// all of stdout).
    pub printed: Vec<u8>,
    /// The returned value, or why there is none.
    pub result: Result<Json, CallError>,
}

/// Reads a runner task's output: its status and stdout.
pub fn decode(status: &ExecStatus, stdout: &[u8]) -> Decoded {
    let code = match status {
        ExecStatus::Exited { code } if *code == 0 || *code == 1 => *code,
        ExecStatus::Exited { code } => {
            return Decoded {
                printed: stdout.to_vec(),
                result: Err(CallError::Malformed(format!("exit code {code}"))),
            };
        }
        other => {
            return Decoded {
                printed: stdout.to_vec(),
                result: Err(CallError::Stopped(*other)),
            };
        }
    };
    let malformed = |why: String| Decoded {
        printed: stdout.to_vec(),
        result: Err(CallError::Malformed(why)),
    };
    let Some(body) = stdout.strip_suffix(b"\n") else {
        return malformed("stdout does not end with a line".into());
    };
    let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let (printed, last) = (&stdout[..start], &body[start..]);
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Final {
        error: Option<ScriptError>,
    }
    // `{"ok": null}` must read as a value: tell a missing key from a null one.
    let Ok(raw) = serde_json::from_slice::<serde_json::Map<String, Json>>(last) else {
        return malformed(format!(
            "last line is not a json object: {}",
            String::from_utf8_lossy(last)
        ));
    };
    let result = match (code, raw.contains_key("ok"), raw.contains_key("error")) {
        (0, true, false) => Ok(raw.get("ok").cloned().unwrap_or(Json::Null)),
        (1, false, true) => match serde_json::from_value::<Final>(Json::Object(raw)) {
            Ok(Final { error: Some(e) }) => Err(CallError::Script(e)),
            Ok(_) => return malformed("error line without an error".into()),
            Err(e) => return malformed(format!("bad error line: {e}")),
        },
        _ => {
            return malformed(format!(
                "exit code {code} with last line {}",
                String::from_utf8_lossy(last)
            ));
        }
    };
    Decoded {
        printed: printed.to_vec(),
        result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stdin_is_the_protocol_object() {
        let s = call_stdin("pub fn f(a) { a }", "f", &[json!(1), json!("x")]);
        let v: Json = serde_json::from_str(&s).unwrap();
        assert_eq!(
            v,
            json!({"script": "pub fn f(a) { a }", "function": "f", "args": [1, "x"]})
        );
        let call: Call = serde_json::from_str(&s).unwrap();
        assert_eq!(call.function, "f");
    }

    #[test]
    fn decodes_values_and_printed_text() {
        let ok = ExecStatus::Exited { code: 0 };
        let d = decode(&ok, b"{\"ok\":3}\n");
        assert_eq!(d.printed, b"");
        assert_eq!(d.result, Ok(json!(3)));
        let d = decode(&ok, b"hello\nworld\n{\"ok\":null}\n");
        assert_eq!(d.printed, b"hello\nworld\n");
        assert_eq!(d.result, Ok(Json::Null));
        // The runner ends an unfinished printed line before its own.
        let d = decode(&ok, b"partial\n{\"ok\":[1,2.5]}\n");
        assert_eq!(d.printed, b"partial\n");
        assert_eq!(d.result, Ok(json!([1, 2.5])));
    }

    #[test]
    fn decodes_errors() {
        let failed = ExecStatus::Exited { code: 1 };
        let d = decode(
            &failed,
            b"x\n{\"error\":{\"kind\":\"compile\",\"message\":\"oops\",\"line\":2,\"column\":5}}\n",
        );
        assert_eq!(d.printed, b"x\n");
        let Err(CallError::Script(e)) = d.result else {
            panic!("{:?}", d.result)
        };
        assert_eq!(e.kind, ErrorKind::Compile);
        assert_eq!((e.line, e.column), (Some(2), Some(5)));
        assert_eq!(e.located("a.rn"), "a.rn:2:5: oops");
        assert_eq!(e.to_string(), "compile error at 2:5: oops");
        let d = decode(
            &failed,
            b"{\"error\":{\"kind\":\"input\",\"message\":\"no\",\"line\":null,\"column\":null}}\n",
        );
        let Err(CallError::Script(e)) = d.result else {
            panic!()
        };
        assert_eq!(e.located("a.rn"), "a.rn: no");
    }

    #[test]
    fn stopped_and_malformed_runs() {
        let d = decode(&ExecStatus::OutOfFuel, b"half a li");
        assert_eq!(d.printed, b"half a li");
        assert_eq!(d.result, Err(CallError::Stopped(ExecStatus::OutOfFuel)));
        let ok = ExecStatus::Exited { code: 0 };
        for bad in [
            &b""[..],
            b"{\"ok\":1}",
            b"not json\n",
            b"{\"error\":{\"kind\":\"input\",\"message\":\"m\",\"line\":null,\"column\":null}}\n",
            b"{\"ok\":1,\"error\":null}\n",
        ] {
            assert!(
                matches!(decode(&ok, bad).result, Err(CallError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            decode(&ExecStatus::Exited { code: 1 }, b"{\"ok\":1}\n").result,
            Err(CallError::Malformed(_))
        ));
        assert!(matches!(
            decode(&ExecStatus::Exited { code: 2 }, b"{\"ok\":1}\n").result,
            Err(CallError::Malformed(_))
        ));
    }
}
