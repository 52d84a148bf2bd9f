//! The worker protocol: JSON text frames over one WebSocket per worker.
//!
//! 1. The worker connects to `/v1/worker` with `Authorization: Bearer TOKEN` (its owner's
//!    account).
//! 2. The coordinator sends [`ToWorker::Challenge`]; the worker answers [`ToWorker`]'s
//!    counterpart [`ToCoordinator::Hello`], signing the nonce with its ed25519 key.
//! 3. The coordinator answers [`ToWorker::Welcome`] (or [`ToWorker::Reject`] and closes).
//! 4. The coordinator pushes [`ToWorker::Assign`] while the worker has free slots; the worker
//!    streams [`ToCoordinator::Output`] and ends each attempt with a signed
//!    [`ToCoordinator::Result`] or a signed [`ToCoordinator::Failed`].
//! 5. The worker sends [`ToCoordinator::Heartbeat`] every `heartbeat_ms`; silence for three
//!    intervals loses the worker's attempts.

pub use runegrid_core::FailureKind;
use runegrid_core::{AttemptId, Digest, ExecStatus, JobId, Limits, Standing, TaskId};
use serde::{Deserialize, Deserializer, Serialize};

/// What a worker offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub cores: u32,
    pub memory_bytes: u64,
    pub slots: u32,
    /// e.g. `x86_64`; replicas compare across architectures thanks to NaN canonicalization.
    pub arch: String,
    pub os: String,
    /// e.g. `native/0.1.0`.
    pub runtime: String,
    /// Disk (a browser: IndexedDB) the worker keeps blobs in, in bytes; 0 (an older worker): it
    /// takes no task that mounts blobs.
    #[serde(default)]
    pub blob_space: u64,
    /// SHA-256 of the blobs it holds already (the scheduler prefers it for tasks mounting them).
    #[serde(default)]
    pub blobs: Vec<String>,
    /// The GPU it runs GPU tasks on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Box<runegrid_core::gpu::GpuAdapter>>,
}

/// A read-only file mounted into a task under `/blobs/NAME` (or at NAME when it is an absolute
/// path, see `runegrid_core::mounts`): the worker fetches it once
/// (`GET /v1/blobs/{sha256}` with its token), checks its hash and keeps it on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobMount {
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

/// Messages from the coordinator to a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    Challenge {
        protocol: u32,
        nonce: String,
    },
    Welcome {
        worker_id: i64,
        heartbeat_ms: u64,
    },
    Reject {
        message: String,
    },
    Assign(Assign),
    /// The bytes of a program the worker asked for.
    Program {
        sha256: String,
        #[serde(with = "crate::b64")]
        module: Vec<u8>,
    },
    /// Stop an attempt: its result is no longer needed.
    Cancel {
        attempt: AttemptId,
        reason: String,
    },
    /// The worker's standing changed, or is not `new` at connection time; a quarantined worker
    /// gets no work and is told why.
    Standing {
        standing: Standing,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// One attempt to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assign {
    pub attempt: AttemptId,
    pub job: JobId,
    pub task: TaskId,
    /// SHA-256 of the instrumented module.
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    #[serde(with = "crate::b64")]
    pub stdin: Vec<u8>,
    pub seed: u64,
    pub limits: Limits,
    /// Blobs to mount (none: the task sees no file system).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blobs: Vec<BlobMount>,
}

/// Messages from a worker to the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToCoordinator {
    Hello {
        protocol: u32,
        /// Hex ed25519 public key.
        public_key: String,
        /// Hex signature of `runegrid-hello-v1\n{nonce}`.
        signature: String,
        name: String,
        capabilities: Capabilities,
    },
    /// Send me the module with this hash.
    NeedProgram {
        sha256: String,
    },
    /// A chunk of stdout, as written.
    Output {
        attempt: AttemptId,
        #[serde(with = "crate::b64")]
        data: Vec<u8>,
    },
    /// A finished attempt.
    Result(AttemptResult),
    /// An attempt that ended without a comparable result (timeout, internal error).
    Failed {
        attempt: AttemptId,
        /// Why, for people (the task's last error).
        reason: String,
        /// Why, for the coordinator: it decides whether the failure counts against the worker
        /// (`runegrid_core::failure::blames_worker`). Absent from workers older than the field,
        /// and read as absent when it names a kind this coordinator does not know.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "known_kind"
        )]
        kind: Option<FailureKind>,
        /// Hex signature of [`failure_message`] (version 3): a relay cannot report a worker's
        /// attempt as failed in its name. Absent reads as empty, which fails the check.
        #[serde(default)]
        signature: String,
    },
    Heartbeat,
    /// The blobs the worker holds now (all of them: sent after it fetched or dropped one).
    Blobs {
        held: Vec<String>,
    },
    /// The worker is going away (a browser page hidden or closed, a daemon stopping): the
    /// coordinator gives its attempts to others at once instead of waiting for a timeout.
    Leaving {
        reason: String,
    },
}

/// A kind this side knows, or none: a newer worker's new kind must not make its whole message
/// unreadable.
fn known_kind<'de, D: Deserializer<'de>>(d: D) -> Result<Option<FailureKind>, D::Error> {
    let Some(name) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    let name = serde::de::value::StrDeserializer::<serde::de::value::Error>::new(&name);
    Ok(FailureKind::deserialize(name).ok())
}

/// The signed outcome of an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptResult {
    pub attempt: AttemptId,
    pub status: ExecStatus,
    #[serde(with = "crate::b64")]
    pub stdout: Vec<u8>,
    pub fuel: u64,
    pub digest: Digest,
    /// Hex signature of [`result_message`].
    pub signature: String,
    /// Last bytes of stderr, for the user's diagnostics (not verified).
    #[serde(default)]
    pub stderr: String,
    pub elapsed_us: u64,
    /// The files the task left under `/out`, in path order; their records take part in the
    /// digest ([`runegrid_core::digest_with_files`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ResultFile>,
}

/// An output file of an attempt: its record and its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultFile {
    #[serde(flatten)]
    pub file: runegrid_core::OutputFile,
    #[serde(with = "crate::b64")]
    pub data: Vec<u8>,
}

/// The bytes a worker signs to answer a challenge.
pub fn hello_message(nonce: &str) -> Vec<u8> {
    format!("runegrid-hello-v1\n{nonce}").into_bytes()
}

/// The SHA-256 of an assignment's canonical encoding: what a worker says it computed when it
/// signs a result ([`result_message`]).
///
/// The encoding is defined here, not by serde (field order and number formats may change):
/// the ASCII line `runegrid-assign-v1\n`, then a sequence of items, each written as a netstring
/// `LEN:BYTES,` (LEN the byte length in decimal ASCII). Integers are items holding their
/// decimal ASCII text; a list is an item holding its length, then its elements. In order:
/// attempt, job, task, program (its hex text), args (list of strings), env (list of pairs: key
/// then value), stdin (its bytes), seed, the limits (fuel, memory_bytes, wall_time_ms,
/// stdout_bytes, scratch_bytes, output_bytes), blobs (list of name, sha256, size). The browser
/// worker (`web/worker.js`, `assignDigest`) computes the same bytes; the test vector in this
/// module's tests and in `crates/cli/tests/browser.rs` keeps them equal.
pub fn assign_digest(a: &Assign) -> AssignDigest {
    let mut e = Canonical(<sha2::Sha256 as sha2::Digest>::new());
    sha2::Digest::update(&mut e.0, b"runegrid-assign-v1\n");
    e.num(a.attempt);
    e.num(a.job);
    e.num(a.task);
    e.item(a.program.as_bytes());
    e.num(a.args.len());
    for arg in &a.args {
        e.item(arg.as_bytes());
    }
    e.num(a.env.len());
    for (k, v) in &a.env {
        e.item(k.as_bytes());
        e.item(v.as_bytes());
    }
    e.item(&a.stdin);
    e.num(a.seed);
    let l = &a.limits;
    for n in [
        l.fuel,
        l.memory_bytes,
        l.wall_time_ms,
        l.stdout_bytes,
        l.scratch_bytes,
        l.output_bytes,
    ] {
        e.num(n);
    }
    e.num(a.blobs.len());
    for b in &a.blobs {
        e.item(b.name.as_bytes());
        e.item(b.sha256.as_bytes());
        e.num(b.size);
    }
    AssignDigest(sha2::Digest::finalize(e.0).into())
}

/// The canonical encoding of [`assign_digest`], hashed as it is written.
struct Canonical(sha2::Sha256);

impl Canonical {
    /// A netstring: `LEN:BYTES,`.
    fn item(&mut self, bytes: &[u8]) {
        use sha2::Digest as _;
        self.0.update(format!("{}:", bytes.len()).as_bytes());
        self.0.update(bytes);
        self.0.update(b",");
    }

    /// An integer: its decimal text, as an item.
    fn num(&mut self, n: impl std::fmt::Display) {
        self.item(n.to_string().as_bytes());
    }
}

/// The SHA-256 of an assignment's canonical encoding ([`assign_digest`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AssignDigest(pub [u8; 32]);

impl AssignDigest {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// The bytes a worker signs for a result: the attempt, the digest of the assignment it ran
/// ([`assign_digest`]) and the digest of what it produced. A relay that alters an assignment's
/// inputs on the way thus makes the worker sign a digest the coordinator does not expect.
pub fn result_message(attempt: AttemptId, assign: &AssignDigest, digest: &Digest) -> Vec<u8> {
    format!(
        "runegrid-result-v2\n{attempt}\n{}\n{}",
        assign.to_hex(),
        digest.to_hex()
    )
    .into_bytes()
}

/// The bytes a worker signs for a failure: the attempt, the digest of the assignment it was
/// given ([`assign_digest`]), the failure's kind (its snake_case name, empty when none) and
/// its reason. A relay that reports a worker's attempt as failed, or changes what a failure
/// says, thus has no signature the worker's key verifies.
pub fn failure_message(
    attempt: AttemptId,
    assign: &AssignDigest,
    kind: Option<FailureKind>,
    reason: &str,
) -> Vec<u8> {
    format!(
        "runegrid-failed-v1\n{attempt}\n{}\n{}\n{reason}",
        assign.to_hex(),
        kind.map(kind_name).unwrap_or_default()
    )
    .into_bytes()
}

/// A kind's name on the wire (`wall_time`, ...).
fn kind_name(kind: FailureKind) -> String {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(s)) => s,
        _ => unreachable!("failure kinds serialize as strings"),
    }
}

/// A worker's signed `failed` message for an attempt it was given (`assign` the digest of
/// that assignment).
pub fn signed_failure(
    key: &ed25519_dalek::SigningKey,
    attempt: AttemptId,
    assign: &AssignDigest,
    reason: String,
    kind: Option<FailureKind>,
) -> ToCoordinator {
    use ed25519_dalek::Signer as _;
    let signature = hex::encode(
        key.sign(&failure_message(attempt, assign, kind, &reason))
            .to_bytes(),
    );
    ToCoordinator::Failed {
        attempt,
        reason,
        kind,
        signature,
    }
}

/// A failure must be signed by the worker's key over [`failure_message`], with `assign` the
/// digest of the assignment the checker sent. The coordinator checks every failure so; a
/// relay checks every failure it forwards the same way.
pub fn check_failure(
    key: &ed25519_dalek::VerifyingKey,
    assign: &AssignDigest,
    attempt: AttemptId,
    reason: &str,
    kind: Option<FailureKind>,
    signature: &str,
) -> Result<(), ResultFault> {
    use ed25519_dalek::{Signature, Verifier as _};
    let sig = hex::decode(signature)
        .ok()
        .and_then(|b| Signature::from_slice(&b).ok())
        .ok_or(ResultFault::MalformedFailureSignature)?;
    key.verify(&failure_message(attempt, assign, kind, reason), &sig)
        .map_err(|_| ResultFault::FailureSignature)
}

/// Why a result fails [`check_result`] (or a failure [`check_failure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultFault {
    /// An output file's bytes do not match its record.
    File,
    /// The digest is not the digest of the result's content.
    Digest,
    /// The signature is not 64 bytes in hex.
    MalformedSignature,
    /// The signature does not verify with the worker's key.
    Signature,
    /// A failure's signature is missing or not 64 bytes in hex.
    MalformedFailureSignature,
    /// A failure's signature does not verify with the worker's key.
    FailureSignature,
}

impl ResultFault {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultFault::File => "an output file does not match its record",
            ResultFault::Digest => "result digest does not match its content",
            ResultFault::MalformedSignature => "result signature is malformed",
            ResultFault::Signature => {
                "result signature is invalid (or signs another assignment than the one sent)"
            }
            ResultFault::MalformedFailureSignature => "failure signature is missing or malformed",
            ResultFault::FailureSignature => {
                "failure signature is invalid (or signs another failure or assignment)"
            }
        }
    }
}

impl std::fmt::Display for ResultFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A result must carry the digest of its own content (its files' bytes matching their
/// records), signed by the worker's key together with `assign`, the digest of the assignment
/// the checker sent ([`assign_digest`]). The coordinator checks every result so; a relay
/// checks every result it forwards the same way, against the assignment it forwarded.
pub fn check_result(
    key: &ed25519_dalek::VerifyingKey,
    assign: &AssignDigest,
    r: &AttemptResult,
) -> Result<(), ResultFault> {
    use ed25519_dalek::Verifier as _;
    let (message, sig) = result_claim(assign, r)?;
    key.verify(&message, &sig)
        .map_err(|_| ResultFault::Signature)
}

/// Everything [`check_result`] checks but the signature itself: the message the worker must
/// have signed, and the signature it sent, for a checker that verifies many at once.
pub fn result_claim(
    assign: &AssignDigest,
    r: &AttemptResult,
) -> Result<(Vec<u8>, ed25519_dalek::Signature), ResultFault> {
    use ed25519_dalek::Signature;
    use sha2::Digest as _;
    for f in &r.files {
        if f.data.len() as u64 != f.file.size
            || hex::encode(sha2::Sha256::digest(&f.data)) != f.file.sha256
        {
            return Err(ResultFault::File);
        }
    }
    let records: Vec<_> = r.files.iter().map(|f| f.file.clone()).collect();
    if runegrid_core::digest_with_files(&r.status, r.fuel, &r.stdout, &records) != r.digest {
        return Err(ResultFault::Digest);
    }
    let sig = hex::decode(&r.signature)
        .ok()
        .and_then(|b| Signature::from_slice(&b).ok())
        .ok_or(ResultFault::MalformedSignature)?;
    Ok((result_message(r.attempt, assign, &r.digest), sig))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged() {
        let m = ToCoordinator::Heartbeat;
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"heartbeat"}"#
        );
        let m = ToWorker::Cancel {
            attempt: 3,
            reason: "done".into(),
        };
        let s = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<ToWorker>(&s).unwrap(), m);
        let a = ToWorker::Assign(Assign {
            attempt: 1,
            job: 2,
            task: 3,
            program: "p".into(),
            args: vec!["x".into()],
            env: vec![("K".into(), "V".into())],
            stdin: vec![0, 1],
            seed: u64::MAX,
            limits: Limits::default(),
            blobs: vec![],
        });
        let s = serde_json::to_string(&a).unwrap();
        assert!(s.starts_with(r#"{"type":"assign","attempt":1"#), "{s}");
        assert_eq!(serde_json::from_str::<ToWorker>(&s).unwrap(), a);
    }

    #[test]
    fn failed_carries_an_optional_kind() {
        let m = ToCoordinator::Failed {
            attempt: 4,
            reason: "wall time limit of 300 ms exceeded".into(),
            kind: Some(FailureKind::WallTime),
            signature: "ab".into(),
        };
        let s = serde_json::to_string(&m).unwrap();
        assert_eq!(
            s,
            r#"{"type":"failed","attempt":4,"reason":"wall time limit of 300 ms exceeded","kind":"wall_time","signature":"ab"}"#
        );
        assert_eq!(serde_json::from_str::<ToCoordinator>(&s).unwrap(), m);
        // Without a kind or a signature (an older worker, a forger): still the message, with
        // neither (the empty signature then fails its check).
        let unkinded = ToCoordinator::Failed {
            attempt: 4,
            reason: "cancelled".into(),
            kind: None,
            signature: String::new(),
        };
        // A newer worker's kind, or an explicit null: still the message, without a kind.
        for s in [
            r#"{"type":"failed","attempt":4,"reason":"cancelled"}"#,
            r#"{"type":"failed","attempt":4,"reason":"cancelled","kind":"solar_flare"}"#,
            r#"{"type":"failed","attempt":4,"reason":"cancelled","kind":null}"#,
        ] {
            assert_eq!(serde_json::from_str::<ToCoordinator>(s).unwrap(), unkinded);
        }
    }

    #[test]
    fn a_failure_signs_its_assignment_kind_and_reason() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let a = vector();
        let sent = assign_digest(&a);
        // The bytes signed, as the browser worker writes them too.
        assert_eq!(
            String::from_utf8(failure_message(
                7,
                &sent,
                Some(FailureKind::WallTime),
                "late"
            ))
            .unwrap(),
            format!("runegrid-failed-v1\n7\n{VECTOR_HEX}\nwall_time\nlate")
        );
        assert!(failure_message(7, &sent, None, "x").ends_with(b"\n\nx"));
        let m = signed_failure(&key, 7, &sent, "late".into(), Some(FailureKind::WallTime));
        let ToCoordinator::Failed {
            attempt,
            reason,
            kind,
            signature,
        } = m
        else {
            panic!("{m:?}")
        };
        let pk = key.verifying_key();
        let check = |attempt, reason: &str, kind, signature: &str, assign: &AssignDigest| {
            check_failure(&pk, assign, attempt, reason, kind, signature)
        };
        assert_eq!(check(attempt, &reason, kind, &signature, &sent), Ok(()));
        // Another attempt, reason, kind or assignment: not what the worker signed.
        let bad = Err(ResultFault::FailureSignature);
        assert_eq!(check(8, &reason, kind, &signature, &sent), bad);
        assert_eq!(check(attempt, "cancelled", kind, &signature, &sent), bad);
        assert_eq!(check(attempt, &reason, None, &signature, &sent), bad);
        let mut altered = a.clone();
        altered.seed = 0;
        assert_eq!(
            check(attempt, &reason, kind, &signature, &assign_digest(&altered)),
            bad
        );
        // Unsigned (a relay's forgery): caught too.
        assert_eq!(
            check(attempt, &reason, kind, "", &sent),
            Err(ResultFault::MalformedFailureSignature)
        );
        let other = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
        let ToCoordinator::Failed { signature, .. } =
            signed_failure(&other, 7, &sent, "late".into(), kind)
        else {
            unreachable!()
        };
        assert_eq!(check(attempt, &reason, kind, &signature, &sent), bad);
    }

    /// [`assign_digest`] of the shared test vector ([`vector`]).
    const VECTOR_HEX: &str = "650ae98e804da96b96aa99393bf8c6f1054f84d25f18d778a4406cb91cda4ef7";

    /// The assignment of the shared test vector (the browser worker's `assignDigest` gives the
    /// same hex for the same JSON).
    fn vector() -> Assign {
        Assign {
            attempt: 7,
            job: 3,
            task: 11,
            program: "ab".repeat(32),
            args: vec!["prog".into(), "é,:".into()],
            env: vec![("K".into(), "V".into())],
            stdin: vec![0, 1, 2],
            // The largest a JSON number keeps exactly in every browser (a larger one is exact
            // only where JSON.parse gives a number's source text).
            seed: (1 << 53) - 1,
            limits: Limits::default(),
            blobs: vec![BlobMount {
                name: "m".into(),
                sha256: "cd".repeat(32),
                size: 5,
            }],
        }
    }

    #[test]
    fn assign_digest_is_canonical() {
        let a = vector();
        assert_eq!(assign_digest(&a).to_hex(), VECTOR_HEX);
        // Every field takes part.
        let mut changed = vec![];
        let mut b = a.clone();
        b.seed -= 1;
        changed.push(b);
        let mut b = a.clone();
        b.args[1].push('x');
        changed.push(b);
        let mut b = a.clone();
        b.env[0].1 = "W".into();
        changed.push(b);
        let mut b = a.clone();
        b.stdin.push(3);
        changed.push(b);
        let mut b = a.clone();
        b.limits.output_bytes += 1;
        changed.push(b);
        let mut b = a.clone();
        b.blobs[0].size = 6;
        changed.push(b);
        let mut b = a.clone();
        b.attempt = 8;
        changed.push(b);
        // Items are framed: moving a byte from one argument to the next changes the digest.
        let mut b = a.clone();
        b.args = vec!["prog\u{e9}".into(), ",:".into()];
        changed.push(b);
        for b in changed {
            assert_ne!(assign_digest(&b), assign_digest(&a), "{b:?}");
        }
    }

    /// The browser worker's digest (`web/worker.js`, run by `web/test/assign_digest.mjs`) of
    /// the vector as the coordinator sends it, and its signature of a failure of it. Skipped
    /// without node on PATH.
    #[test]
    fn browser_assign_digest_matches() {
        use std::io::Write as _;
        use std::process::{Command, Stdio};
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../web/test/assign_digest.mjs"
        );
        let child = Command::new("node")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            eprintln!("skipped: no node on PATH");
            return;
        };
        let json = serde_json::to_string(&ToWorker::Assign(vector())).unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(json.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let [digest, public_key, signature] = lines[..] else {
            panic!("expected three lines: {text}")
        };
        assert_eq!(digest, VECTOR_HEX);
        // The browser's signed failure checks out as the coordinator checks it.
        let key: [u8; 32] = hex::decode(public_key).unwrap().try_into().unwrap();
        let key = ed25519_dalek::VerifyingKey::from_bytes(&key).unwrap();
        let sent = assign_digest(&vector());
        let kind = Some(FailureKind::WallTime);
        assert_eq!(
            check_failure(&key, &sent, 7, "late", kind, signature),
            Ok(())
        );
        assert_eq!(
            check_failure(&key, &sent, 7, "later", kind, signature),
            Err(ResultFault::FailureSignature)
        );
    }

    #[test]
    fn a_result_signs_its_assignment() {
        use ed25519_dalek::Signer as _;
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let a = vector();
        let status = ExecStatus::Exited { code: 0 };
        let digest = runegrid_core::digest(&status, 5, b"hi");
        let sent = assign_digest(&a);
        let mut r = AttemptResult {
            attempt: a.attempt,
            status,
            stdout: b"hi".to_vec(),
            fuel: 5,
            digest,
            signature: hex::encode(key.sign(&result_message(7, &sent, &digest)).to_bytes()),
            stderr: String::new(),
            elapsed_us: 1,
            files: vec![],
        };
        assert_eq!(check_result(&key.verifying_key(), &sent, &r), Ok(()));
        // The worker ran an altered assignment: its signature does not cover what was sent.
        let mut altered = a.clone();
        altered.seed = 0;
        r.signature = hex::encode(
            key.sign(&result_message(7, &assign_digest(&altered), &digest))
                .to_bytes(),
        );
        assert_eq!(
            check_result(&key.verifying_key(), &sent, &r),
            Err(ResultFault::Signature)
        );
    }
}
