//! LLM inference as a deterministic WASI program: a llama-architecture GGUF model (candle's
//! `quantized_llama`), its own byte-level BPE vocabulary, and a seeded sampler. The same code
//! builds natively (for speed comparisons) and for `wasm32-wasip1` (what workers run).
//!
//! Input is one JSON [`Request`] on stdin; output is the generated text on stdout, written and
//! flushed token by token (each write is valid UTF-8: a token that ends inside a multi-byte
//! character is held back until the character is complete). A one-line JSON summary
//! ([`Summary`]) goes to stderr at the end.
//!
//! Determinism: single-threaded, no host randomness (the sampler's generator is seeded from the
//! request), no clock. On a WebAssembly engine every float operation, scalar or `simd128`
//! lane, is IEEE and NaNs are canonicalized by the instrumentation, so replicas agree token
//! for token.

mod llama;
pub mod tokenizer;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use llama::{MAX_SEQ_LEN, ModelWeights};
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, Write};
use tokenizer::{Tokenizer, Utf8Stream};

/// Where the model is read from when neither the request nor the command line says.
pub const DEFAULT_MODEL_PATH: &str = "/blobs/model.gguf";
/// Tokens generated when the request does not say.
pub const DEFAULT_MAX_TOKENS: u32 = 64;
/// The system prompt SmolLM2's chat template adds when the conversation has none.
pub const DEFAULT_SYSTEM_PROMPT: &str =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// A user message (chat-formatted unless `raw`), used when `messages` is absent.
    #[serde(default)]
    pub prompt: Option<String>,
    /// A conversation, chat-formatted; the model answers as the assistant.
    #[serde(default)]
    pub messages: Option<Vec<Message>>,
    /// Feed `prompt` to the model as it is, without the chat template.
    #[serde(default)]
    pub raw: bool,
    /// Most tokens to generate (generation also stops at an end-of-sequence token).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Sampling temperature; 0 (the default) means greedy (arg max).
    #[serde(default)]
    pub temperature: f64,
    /// Nucleus sampling threshold in (0, 1); absent or outside means the whole distribution.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Seed of the sampler.
    #[serde(default)]
    pub seed: u64,
    /// Path of the GGUF model file (default [`DEFAULT_MODEL_PATH`]).
    #[serde(default)]
    pub model: Option<String>,
}

fn default_max_tokens() -> u32 {
    DEFAULT_MAX_TOKENS
}

/// Why the generation stopped, and how much it did (written to stderr).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub prompt_tokens: usize,
    pub tokens: usize,
    /// `eos` or `length`.
    pub stop: String,
}

/// Everything that can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("bad request: {0}")]
    Request(String),
    #[error("cannot read model {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
    #[error(transparent)]
    Tokenizer(#[from] tokenizer::TokenizerError),
    #[error("cannot write output: {0}")]
    Write(std::io::Error),
}

impl Request {
    /// The text fed to the model: SmolLM2's chat format
    /// (`<|im_start|>ROLE\nCONTENT<|im_end|>\n` per message, the default system message first
    /// when the conversation has none, then `<|im_start|>assistant\n`), exactly what the
    /// GGUF's chat template produces with `add_generation_prompt`; or `prompt` as it is when
    /// `raw`.
    pub fn prompt_text(&self) -> Result<String, InferError> {
        let messages = match (&self.messages, &self.prompt) {
            (Some(m), _) if !m.is_empty() => m.clone(),
            (Some(_), _) => return Err(InferError::Request("messages is empty".into())),
            (None, Some(p)) if self.raw => return Ok(p.clone()),
            (None, Some(p)) => vec![Message {
                role: "user".into(),
                content: p.clone(),
            }],
            (None, None) => {
                return Err(InferError::Request("give `prompt` or `messages`".into()));
            }
        };
        let mut text = String::new();
        if messages[0].role != "system" {
            text.push_str(&format!(
                "<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n"
            ));
        }
        for m in &messages {
            text.push_str(&format!(
                "<|im_start|>{}\n{}<|im_end|>\n",
                m.role, m.content
            ));
        }
        text.push_str("<|im_start|>assistant\n");
        Ok(text)
    }

    fn sampling(&self) -> Sampling {
        if self.temperature.is_nan() || self.temperature < 1e-7 {
            return Sampling::ArgMax;
        }
        match self.top_p {
            Some(p) if p > 0.0 && p < 1.0 => Sampling::TopP {
                p,
                temperature: self.temperature,
            },
            _ => Sampling::All {
                temperature: self.temperature,
            },
        }
    }
}

/// A loaded model and its tokenizer.
pub struct Model {
    weights: ModelWeights,
    tokenizer: Tokenizer,
    /// Tokens that end generation.
    eos: Vec<u32>,
}

fn metadata<'a>(
    content: &'a gguf_file::Content,
    key: &str,
) -> Result<&'a gguf_file::Value, InferError> {
    content
        .metadata
        .get(key)
        .ok_or_else(|| InferError::Model(candle_core::Error::Msg(format!("no {key} in metadata"))))
}

impl Model {
    /// Reads a GGUF model (weights and tokenizer) from `reader`.
    pub fn load<R: Read + Seek>(reader: &mut R) -> Result<Model, InferError> {
        let content = gguf_file::Content::read(reader)?;
        let tokens = metadata(&content, "tokenizer.ggml.tokens")?
            .to_vec()?
            .iter()
            .map(|v| v.to_string().cloned())
            .collect::<Result<Vec<_>, _>>()?;
        let types = match content.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()?
                .iter()
                .map(|v| v.to_i32())
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let merges = metadata(&content, "tokenizer.ggml.merges")?
            .to_vec()?
            .iter()
            .map(|v| v.to_string().cloned())
            .collect::<Result<Vec<_>, _>>()?;
        let tokenizer = Tokenizer::new(tokens, &types, &merges)?;
        let mut eos = vec![metadata(&content, "tokenizer.ggml.eos_token_id")?.to_u32()?];
        // SmolLM2 ends a turn with <|im_end|> (its eos) but may also emit <|endoftext|>.
        if let Some(id) = tokenizer.token_id("<|endoftext|>")
            && !eos.contains(&id)
        {
            eos.push(id);
        }
        let weights = ModelWeights::from_gguf(content, reader, &Device::Cpu)?;
        Ok(Model {
            weights,
            tokenizer,
            eos,
        })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Generates the answer to `req`, writing and flushing each token's text to `out` as soon
    /// as it is sampled.
    pub fn generate(&mut self, req: &Request, out: &mut dyn Write) -> Result<Summary, InferError> {
        let prompt = self.tokenizer.encode(&req.prompt_text()?);
        if prompt.is_empty() {
            return Err(InferError::Request("the prompt is empty".into()));
        }
        let max_tokens = req.max_tokens as usize;
        if prompt.len() + max_tokens > MAX_SEQ_LEN {
            return Err(InferError::Request(format!(
                "prompt ({} tokens) plus max_tokens ({max_tokens}) is above the context of {MAX_SEQ_LEN}",
                prompt.len()
            )));
        }
        let mut sampler = LogitsProcessor::from_sampling(req.seed, req.sampling());
        let mut stream = Utf8Stream::default();
        let mut emit = |bytes: &[u8]| -> Result<(), InferError> {
            if !bytes.is_empty() {
                out.write_all(bytes).map_err(InferError::Write)?;
                out.flush().map_err(InferError::Write)?;
            }
            Ok(())
        };
        let mut generated = 0;
        let mut stop = "length";
        if max_tokens > 0 {
            let input = Tensor::new(prompt.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
            let mut logits = self.weights.forward(&input, 0)?.squeeze(0)?;
            loop {
                let next = sampler.sample(&logits)?;
                if self.eos.contains(&next) {
                    stop = "eos";
                    break;
                }
                generated += 1;
                emit(&stream.push(&self.tokenizer.token_bytes(next)))?;
                if generated == max_tokens {
                    break;
                }
                let input = Tensor::new(&[next], &Device::Cpu)?.unsqueeze(0)?;
                let pos = prompt.len() + generated - 1;
                logits = self.weights.forward(&input, pos)?.squeeze(0)?;
            }
        }
        emit(&stream.finish())?;
        Ok(Summary {
            prompt_tokens: prompt.len(),
            tokens: generated,
            stop: stop.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> Request {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn requests_have_defaults() {
        let r = req(r#"{"prompt": "hi"}"#);
        assert_eq!(r.max_tokens, DEFAULT_MAX_TOKENS);
        assert_eq!(r.temperature, 0.0);
        assert_eq!(r.sampling(), Sampling::ArgMax);
        assert!(serde_json::from_str::<Request>(r#"{"prompt": "hi", "nope": 1}"#).is_err());
        let r = req(r#"{"prompt": "hi", "temperature": 0.7, "top_p": 0.9, "seed": 5}"#);
        assert_eq!(
            r.sampling(),
            Sampling::TopP {
                p: 0.9,
                temperature: 0.7
            }
        );
    }

    #[test]
    fn chat_format_matches_the_template() {
        let r = req(r#"{"prompt": "What is 2+2?"}"#);
        assert_eq!(
            r.prompt_text().unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
        let r = req(r#"{"messages": [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "Hi"}]}"#);
        assert_eq!(
            r.prompt_text().unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let r = req(r#"{"prompt": "Once upon", "raw": true}"#);
        assert_eq!(r.prompt_text().unwrap(), "Once upon");
        assert!(req(r#"{}"#).prompt_text().is_err());
        assert!(req(r#"{"messages": []}"#).prompt_text().is_err());
    }
}
