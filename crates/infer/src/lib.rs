//! LLM inference on the grid, host side: the inference program (`guest/`, built for
//! `wasm32-wasip1` by `build.rs` and embedded as [`INFER_WASM`]), the model it is measured
//! with, and the request it reads.
//!
//! The program is an ordinary WASI task: a JSON [`Request`] on stdin, the answer streamed on
//! stdout token by token, a JSON [`Summary`] line on stderr. The model is a read-only blob
//! mounted as `/blobs/model.gguf` ([`MODEL_BLOB`]); replicas agree token for token because the
//! module is deterministic (single-threaded, no SIMD, seeded sampler, canonical NaNs).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The inference program, not instrumented.
pub const INFER_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/infer.wasm"));

/// Name the model is mounted under (the program's default path is `/blobs/model.gguf`).
pub const MODEL_BLOB: &str = "model.gguf";
/// The model `scripts/fetch-model.sh` fetches: SmolLM2-135M-Instruct, Q4_1 (Apache-2.0).
pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// SHA-256 of [`MODEL_FILE`].
pub const MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// Where the model file is, if it has been fetched: `$RUNEGRID_MODEL` (a file), else
/// `$RUNEGRID_MODELS/<MODEL_FILE>`, else `<repo>/.runegrid/models/<MODEL_FILE>`.
pub fn model_path() -> Option<PathBuf> {
    let path = if let Some(p) = std::env::var_os("RUNEGRID_MODEL") {
        PathBuf::from(p)
    } else if let Some(dir) = std::env::var_os("RUNEGRID_MODELS") {
        PathBuf::from(dir).join(MODEL_FILE)
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../.runegrid/models")
            .join(MODEL_FILE)
    };
    path.is_file().then_some(path)
}

/// The model for a test: [`model_path`], or `None` (the test then skips, saying so) — unless
/// `RUNEGRID_REQUIRE_MODEL` is set (CI sets it), when a missing model fails the test.
pub fn model_for_tests() -> Option<PathBuf> {
    let path = model_path();
    if path.is_none() && std::env::var_os("RUNEGRID_REQUIRE_MODEL").is_some() {
        panic!(
            "RUNEGRID_REQUIRE_MODEL is set but the model is missing: run scripts/fetch-model.sh"
        );
    }
    path
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// What the program reads on stdin (see `guest/src/lib.rs` for the meaning of each field).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Request {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Message>>,
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub raw: bool,
    pub max_tokens: u32,
    pub temperature: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    pub seed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl Request {
    /// A chat request with one user message.
    pub fn chat(prompt: &str, max_tokens: u32) -> Request {
        Request {
            prompt: Some(prompt.to_owned()),
            max_tokens,
            ..Request::default()
        }
    }

    /// The request as the program's stdin.
    pub fn to_stdin(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a request always serializes")
    }
}

/// The last line the program writes to stderr on success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub prompt_tokens: usize,
    pub tokens: usize,
    /// `eos` or `length`.
    pub stop: String,
}

impl Summary {
    /// The summary in the program's stderr, if there is one.
    pub fn from_stderr(stderr: &[u8]) -> Option<Summary> {
        let text = String::from_utf8_lossy(stderr);
        let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
        serde_json::from_str(line).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_is_embedded() {
        assert!(INFER_WASM.starts_with(b"\0asm"));
    }

    #[test]
    fn requests_serialize_as_the_program_reads_them() {
        let r = Request::chat("hi", 8);
        assert_eq!(
            String::from_utf8(r.to_stdin()).unwrap(),
            r#"{"prompt":"hi","max_tokens":8,"temperature":0.0,"seed":0}"#
        );
        let s = Summary::from_stderr(b"x\n{\"prompt_tokens\":3,\"tokens\":2,\"stop\":\"eos\"}\n");
        assert_eq!(s.unwrap().tokens, 2);
        assert_eq!(Summary::from_stderr(b"infer: oops\n"), None);
    }
}
