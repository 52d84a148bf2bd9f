//! The OpenAI-compatible chat API: `POST /v1/chat/completions` (with `"stream": true`, Server-Sent
//! Events of [`ChatChunk`]s ending with `data: [DONE]`) and `GET /v1/models`.
//!
//! runegrid adds one field to OpenAI's shapes, `runegrid` ([`GridInfo`]): the job that computed
//! the answer and whether the answer is verified yet. Clients that do not know it ignore it.

use runegrid_core::{Acceptance, Digest, JobId, PolicyKind};
use serde::{Deserialize, Serialize};

/// `POST /v1/chat/completions`. Fields OpenAI defines that runegrid does not implement are
/// refused when set to anything but their neutral value; unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// OpenAI's newer name for `max_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// 0 is greedy (default 0.2, as the model's authors suggest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling (default 0.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// The sampler's seed; when absent the coordinator picks one. Every replica uses the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// How the answer is verified (default: the grid's adaptive policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runegrid: Option<ChatGridOptions>,
}

/// Verification settings of a chat request (the same meaning as in `POST /v1/jobs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChatGridOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agree: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
}

/// One message. `content` is a string, or OpenAI's list of parts (only `text` parts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: serde_json::Value,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: serde_json::Value::String(content.into()),
        }
    }

    /// The message's text: the string, or its text parts joined.
    pub fn text(&self) -> Result<String, String> {
        match &self.content {
            serde_json::Value::String(s) => Ok(s.clone()),
            serde_json::Value::Null => Ok(String::new()),
            serde_json::Value::Array(parts) => {
                let mut out = String::new();
                for p in parts {
                    match (p.get("type").and_then(|t| t.as_str()), p.get("text")) {
                        (Some("text"), Some(serde_json::Value::String(t))) => out.push_str(t),
                        (kind, _) => {
                            return Err(format!(
                                "message content part of type {} is not supported: only text",
                                kind.unwrap_or("(none)")
                            ));
                        }
                    }
                }
                Ok(out)
            }
            _ => Err("message content must be a string or a list of text parts".into()),
        }
    }
}

/// Where a streamed answer stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AnswerState {
    /// Tokens are streaming from one worker.
    #[default]
    Running,
    /// A worker finished; replicas are pending.
    Unverified,
    /// The verified answer differs from what was streamed: `content` holds it whole.
    Corrected,
    Verified,
    Failed,
}

impl AnswerState {
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerState::Running => "running",
            AnswerState::Unverified => "unverified",
            AnswerState::Corrected => "corrected",
            AnswerState::Verified => "verified",
            AnswerState::Failed => "failed",
        }
    }
}

impl std::fmt::Display for AnswerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Where an answer stands on the grid.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GridInfo {
    pub job: JobId,
    pub state: AnswerState,
    /// How the answer was accepted, once verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acceptance: Option<Acceptance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// Attempts run for it so far.
    #[serde(default)]
    pub attempts: u32,
    /// With `corrected`: the whole verified answer, replacing what was streamed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// Token counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// What the request cost its account, in micro-credits (runegrid's addition; absent on a
    /// grid that does not charge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<i64>,
}

/// The answer to a request without `stream`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatCompletion {
    pub id: String,
    /// `chat.completion`.
    pub object: String,
    /// Seconds since the Unix epoch.
    pub created: i64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
    pub runegrid: GridInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatChoice {
    pub index: u32,
    pub message: ChatMessage,
    /// `stop` (the model ended its answer) or `length` (`max_tokens` reached).
    pub finish_reason: String,
}

/// One event of a streamed answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatChunk {
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: String,
    pub created: i64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    /// In the last chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// When the answer's standing changes (first chunk, unverified, corrected, verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runegrid: Option<GridInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelList {
    /// `list`.
    pub object: String,
    pub data: Vec<ModelInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelInfo {
    pub id: String,
    /// `model`.
    pub object: String,
    pub created: i64,
    pub owned_by: String,
    pub runegrid: ModelGridInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelGridInfo {
    /// Whether the coordinator holds the weights (requests are refused until it does).
    pub available: bool,
    /// The weights' blob.
    pub blob: String,
    pub size: u64,
    /// How much the model asks of a worker (`small`, `medium`, `large`), from the memory a run
    /// needs.
    pub tier: runegrid_core::ModelTier,
    /// Memory a run of a short request needs (longer contexts need more; each request's own
    /// need routes it): workers offering less never get the model's requests.
    pub memory_bytes: u64,
    /// Connected workers that can serve it, and those holding its weights already.
    pub workers: u32,
    pub workers_holding: u32,
    pub aliases: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_from_openai_clients_parse() {
        let r: ChatRequest = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"},
                {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
                "stream":true,"temperature":0,"frequency_penalty":0}"#,
        )
        .unwrap();
        assert!(r.stream);
        assert_eq!(r.temperature, Some(0.0));
        assert_eq!(r.messages[0].text().unwrap(), "hi");
        assert_eq!(r.messages[1].text().unwrap(), "ab");
        let img: ChatMessage =
            serde_json::from_str(r#"{"role":"user","content":[{"type":"image_url"}]}"#).unwrap();
        assert!(img.text().unwrap_err().contains("image_url"));
    }
}
