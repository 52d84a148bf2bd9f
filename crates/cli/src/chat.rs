//! `runegrid chat`: talk to a language model running on the grid, tokens shown as they are
//! generated, then marked verified.

use crate::commands::{CheckArgs, Conn};
use anyhow::{Context, Result, bail};
use clap::Args;
use runegrid_proto::chat::{
    AnswerState, ChatGridOptions, ChatMessage, ChatRequest, GridInfo, Usage,
};
use std::io::{BufRead, IsTerminal, Write};

#[derive(Args)]
pub struct ChatArgs {
    /// The message (words are joined). Without one: a conversation, a message per line, on a
    /// terminal; otherwise everything on stdin is the message.
    pub prompt: Vec<String>,
    /// The model (`GET /v1/models` lists them).
    #[arg(long, default_value = runegrid_infer::SMOLLM2_135M.id)]
    pub model: String,
    /// A system message first.
    #[arg(long)]
    pub system: Option<String>,
    /// Most tokens in an answer.
    #[arg(long, default_value_t = runegrid_infer::DEFAULT_MAX_TOKENS)]
    pub max_tokens: u32,
    /// Sampling temperature (0: always the likeliest token).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// The sampler's seed (default: the coordinator picks one).
    #[arg(long)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub check: CheckArgs,
    /// Print only the verified answer, when it is verified (no streaming).
    #[arg(long)]
    pub no_stream: bool,
    /// Print the whole answer as JSON (the chat completion, with its `runegrid` field).
    #[arg(long, conflicts_with = "no_stream")]
    pub json: bool,
}

/// What one turn produced.
struct Turn {
    text: String,
    info: Option<GridInfo>,
    usage: Option<Usage>,
}

pub async fn chat(conn: &Conn, a: ChatArgs) -> Result<i32> {
    let client = conn.client()?;
    let mut history: Vec<ChatMessage> = Vec::new();
    if let Some(s) = &a.system {
        history.push(ChatMessage::new("system", s));
    }
    let stdin = std::io::stdin();
    if !a.prompt.is_empty() || !stdin.is_terminal() {
        let prompt = if a.prompt.is_empty() {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut stdin.lock(), &mut s).context("reading stdin")?;
            s
        } else {
            a.prompt.join(" ")
        };
        if prompt.trim().is_empty() {
            bail!("empty message: give one as arguments or on stdin");
        }
        history.push(ChatMessage::new("user", prompt.trim_end()));
        turn(&client, &a, &history).await?;
        return Ok(0);
    }
    eprintln!(
        "chatting with {} on {} (an empty line or end of input ends)",
        a.model,
        client.base()
    );
    let mut lines = stdin.lock().lines();
    loop {
        eprint!("> ");
        std::io::stderr().flush().ok();
        let Some(line) = lines.next() else { break };
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            break;
        }
        history.push(ChatMessage::new("user", &line));
        let t = turn(&client, &a, &history).await?;
        history.push(ChatMessage::new("assistant", &t.text));
    }
    Ok(0)
}

fn request(a: &ChatArgs, messages: &[ChatMessage]) -> ChatRequest {
    let grid = a.check.any().then_some(ChatGridOptions {
        policy: a.check.policy,
        replicas: a.check.replicas,
        agree: a.check.agree,
        max_attempts: a.check.max_attempts,
    });
    ChatRequest {
        model: a.model.clone(),
        messages: messages.to_vec(),
        max_tokens: Some(a.max_tokens),
        temperature: a.temperature,
        top_p: a.top_p,
        seed: a.seed,
        runegrid: grid,
        ..ChatRequest::default()
    }
}

/// One answer: streamed to stdout (standing notes on stderr), or printed whole.
async fn turn(
    client: &runegrid_client::Client,
    a: &ChatArgs,
    messages: &[ChatMessage],
) -> Result<Turn> {
    let req = request(a, messages);
    if a.no_stream || a.json {
        let c = client.chat(&req).await?;
        let text = c
            .choices
            .first()
            .map(|ch| ch.message.text().unwrap_or_default())
            .unwrap_or_default();
        if a.json {
            println!("{}", serde_json::to_string_pretty(&c)?);
        } else {
            println!("{text}");
            note(&c.runegrid, Some(&c.usage));
        }
        return Ok(Turn {
            text,
            info: Some(c.runegrid),
            usage: Some(c.usage),
        });
    }
    let mut stream = client.chat_stream(&req).await?;
    let mut out = std::io::stdout();
    let mut t = Turn {
        text: String::new(),
        info: None,
        usage: None,
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if let Some(content) = chunk
            .choices
            .first()
            .and_then(|c| c.delta.content.as_deref())
        {
            t.text.push_str(content);
            out.write_all(content.as_bytes())?;
            out.flush()?;
        }
        if let Some(u) = chunk.usage {
            t.usage = Some(u);
        }
        if let Some(info) = chunk.runegrid {
            if info.state == AnswerState::Corrected {
                let whole = info.content.clone().unwrap_or_default();
                eprintln!(
                    "\n[the verified answer differs from the one streamed; the verified answer:]"
                );
                out.write_all(whole.as_bytes())?;
                out.flush()?;
                t.text = whole;
            }
            t.info = Some(info);
        }
    }
    writeln!(out)?;
    match &t.info {
        Some(info) if info.state == AnswerState::Verified => note(info, t.usage.as_ref()),
        _ => bail!("the answer stream ended before the answer was verified"),
    }
    Ok(t)
}

/// The answer's standing, on stderr.
fn note(info: &GridInfo, usage: Option<&Usage>) {
    let tokens = usage
        .map(|u| format!(", {} tokens", u.completion_tokens))
        .unwrap_or_default();
    eprintln!(
        "[{} ({}), job {}, {} attempt(s){tokens}]",
        info.state,
        info.acceptance.map_or("-", |a| a.as_str()),
        info.job,
        info.attempts
    );
}
