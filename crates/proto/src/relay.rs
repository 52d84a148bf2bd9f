//! The relay protocol: one WebSocket from a relay (`runegrid relay`) to the coordinator,
//! `GET /v1/relay` with the relay operator's token, carrying the connections of every worker
//! connected to the relay.
//!
//! Each worker connection is a *session*, numbered by the relay. The relay opens it with the
//! token the worker presented ([`Frame::Open`]); the coordinator authenticates that token as it
//! would a direct connection's and runs the same worker protocol (`crate::worker`) over the
//! session's [`Frame::Message`]s, from its challenge on; either side ends it with
//! [`Frame::Close`]. Every WebSocket message is a JSON array of frames, so that a busy relay
//! sends many workers' messages in one. Workers' heartbeats end at the relay: it keeps its
//! workers' liveness and tells the coordinator it is alive ([`Frame::Alive`]).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A relay's session number for one worker connection.
pub type SessionId = u64;

/// One frame on a relay's upstream connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frame {
    /// Relay → coordinator: a worker connected with `token` (its owner account's api token).
    Open { session: SessionId, token: String },
    /// Either way: one worker protocol message of the session (a `worker::ToWorker` from the
    /// coordinator, a `worker::ToCoordinator` from the worker), as its JSON.
    Message {
        session: SessionId,
        message: Box<RawValue>,
    },
    /// Either way: the session ended (the worker left the relay, or the coordinator ended its
    /// connection), and why.
    Close { session: SessionId, reason: String },
    /// Coordinator → relay, first on a connection: the heartbeat interval it asks of workers.
    /// The relay must send something at least that often, [`Frame::Alive`] when it has nothing
    /// else.
    Welcome { heartbeat_ms: u64 },
    /// Relay → coordinator: the relay is alive, and so is every worker it holds a session for
    /// (it answers their heartbeats and ends the session of one that goes silent).
    Alive,
}

impl Frame {
    /// A message frame for `session` holding `json` (a message's JSON text), or why it is not
    /// JSON.
    pub fn message(session: SessionId, json: String) -> Result<Frame, serde_json::Error> {
        Ok(Frame::Message {
            session,
            message: RawValue::from_string(json)?,
        })
    }

    /// About how many bytes the frame takes in a message (to keep batches bounded).
    pub fn weight(&self) -> usize {
        match self {
            Frame::Open { token, .. } => 32 + token.len(),
            Frame::Message { message, .. } => 32 + message.get().len(),
            Frame::Close { reason, .. } => 32 + reason.len(),
            Frame::Welcome { .. } | Frame::Alive => 32,
        }
    }
}

/// The most bytes of frames batched into one WebSocket message (a larger frame goes alone).
pub const BATCH_BYTES: usize = 1 << 20;

/// `first` and the frames `next` has ready after it, up to [`BATCH_BYTES`] (weighed by
/// [`Frame::weight`]): what one WebSocket message carries.
pub fn batch(batch: &mut Vec<Frame>, first: Frame, mut next: impl FnMut() -> Option<Frame>) {
    let mut bytes = first.weight();
    batch.push(first);
    while bytes < BATCH_BYTES
        && let Some(f) = next()
    {
        bytes += f.weight();
        batch.push(f);
    }
}

/// The text of one WebSocket message carrying `frames`.
pub fn encode(frames: &[Frame]) -> String {
    serde_json::to_string(frames).expect("frames serialize")
}

/// The frames of one WebSocket message.
pub fn decode(text: &str) -> Result<Vec<Frame>, serde_json::Error> {
    serde_json::from_str(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::ToCoordinator;

    #[test]
    fn frames_carry_messages_verbatim() {
        let hb = serde_json::to_string(&ToCoordinator::Heartbeat).unwrap();
        let frames = vec![
            Frame::Open {
                session: 1,
                token: "t".into(),
            },
            Frame::message(1, hb.clone()).unwrap(),
            Frame::Close {
                session: 1,
                reason: "gone".into(),
            },
            Frame::Welcome { heartbeat_ms: 300 },
            Frame::Alive,
        ];
        let text = encode(&frames);
        assert_eq!(
            text,
            r#"[{"open":{"session":1,"token":"t"}},{"message":{"session":1,"message":{"type":"heartbeat"}}},{"close":{"session":1,"reason":"gone"}},{"welcome":{"heartbeat_ms":300}},"alive"]"#
        );
        let back = decode(&text).unwrap();
        assert_eq!(back.len(), 5);
        let Frame::Message { session, message } = &back[1] else {
            panic!("{back:?}")
        };
        assert_eq!((*session, message.get()), (1, hb.as_str()));
        assert!(Frame::message(2, "not json".into()).is_err());
    }
}
