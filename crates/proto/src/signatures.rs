//! Result signatures, checked in batches, by the coordinator and by relays. Every result a
//! worker sends is signed with its key, and checking one signature was a fifth of a loaded
//! coordinator's CPU (10,000 results a second). Connections hand their results' signatures to a checker thread (one per two cores,
//! each connection to the same one); it takes every signature waiting when it wakes and checks
//! them together (`ed25519_dalek::verify_batch`, about half the work each for large batches). When a batch fails, each of its signatures is
//! checked alone, so one bad signature costs only its own connection its result. A lone
//! signature is checked alone at once: an idle coordinator waits for nothing.
//!
//! A batch accepts exactly the signatures that each verify alone but for a signature whose
//! commitment carries a small-order component (the batch equation multiplies by the cofactor):
//! only the holder of the key can make one, over a message it signed anyway, so nobody else —
//! a relay included — can pass off a message as the worker's.

use crate::worker::{AssignDigest, AttemptResult, ResultFault, result_claim};
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use tokio::sync::oneshot;

/// Signatures checked together at most.
const MAX_BATCH: usize = 512;

/// One signature to check, and where its verdict goes.
struct Check {
    key: VerifyingKey,
    message: Vec<u8>,
    signature: Signature,
    verdict: oneshot::Sender<bool>,
}

/// The handle connections check result signatures through.
#[derive(Clone)]
pub struct Signatures {
    checkers: Arc<[mpsc::Sender<Check>]>,
    next: Arc<AtomicUsize>,
}

/// A connection's way to the checker it uses.
#[derive(Clone)]
pub struct Checker(mpsc::Sender<Check>);

impl Signatures {
    /// Starts the checker threads, one per two cores; they end when the last handle is dropped.
    pub fn spawn() -> Signatures {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let checkers: Vec<mpsc::Sender<Check>> = (0..(cores / 2).max(1)).map(spawn_one).collect();
        Signatures {
            checkers: checkers.into(),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The checker a new connection uses, in turns.
    pub fn checker(&self) -> Checker {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.checkers.len();
        Checker(self.checkers[i].clone())
    }
}

fn spawn_one(n: usize) -> mpsc::Sender<Check> {
    let (tx, rx) = mpsc::channel::<Check>();
    std::thread::Builder::new()
        .name(format!("runegrid-signatures-{n}"))
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(c) => batch.push(c),
                        Err(_) => break,
                    }
                }
                let verdicts = verify_all(&batch);
                for (c, ok) in batch.into_iter().zip(verdicts) {
                    let _ = c.verdict.send(ok);
                }
            }
        })
        .expect("spawn a signature checker thread");
    tx
}

impl Checker {
    /// [`check_result`](crate::worker::check_result), the signature checked in a batch.
    pub async fn check_result(
        &self,
        key: VerifyingKey,
        assign: &AssignDigest,
        r: &AttemptResult,
    ) -> Result<(), ResultFault> {
        let (message, signature) = result_claim(assign, r)?;
        if self.verify(key, message, signature).await {
            Ok(())
        } else {
            Err(ResultFault::Signature)
        }
    }

    /// Whether `signature` is `key`'s over `message`.
    pub async fn verify(&self, key: VerifyingKey, message: Vec<u8>, signature: Signature) -> bool {
        let (verdict, rx) = oneshot::channel();
        let check = Check {
            key,
            message,
            signature,
            verdict,
        };
        if let Err(mpsc::SendError(c)) = self.0.send(check) {
            // The checker thread is gone (it never ends while a handle lives): check here.
            return c.key.verify(&c.message, &c.signature).is_ok();
        }
        rx.await.unwrap_or(false)
    }
}

/// Each signature's verdict, in order: together first, one by one when that fails.
fn verify_all(batch: &[Check]) -> Vec<bool> {
    let alone = |c: &Check| c.key.verify(&c.message, &c.signature).is_ok();
    if batch.len() > 1 {
        let messages: Vec<&[u8]> = batch.iter().map(|c| c.message.as_slice()).collect();
        let signatures: Vec<Signature> = batch.iter().map(|c| c.signature).collect();
        let keys: Vec<VerifyingKey> = batch.iter().map(|c| c.key).collect();
        if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
            return vec![true; batch.len()];
        }
    }
    batch.iter().map(alone).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer as _, SigningKey};
    use proptest::prelude::*;

    fn key(i: u8) -> SigningKey {
        SigningKey::from_bytes(&[i.wrapping_add(1); 32])
    }

    /// A check of `i`'s signature over message `i`: honest, over another message, or by
    /// another key.
    fn check(i: u8, forged: u8) -> (Check, oneshot::Receiver<bool>) {
        let message = vec![i; 40];
        let signed: &[u8] = if forged == 1 {
            b"something else"
        } else {
            &message
        };
        let signer = if forged == 2 { key(i ^ 0x55) } else { key(i) };
        let (verdict, rx) = oneshot::channel();
        let c = Check {
            key: key(i).verifying_key(),
            signature: signer.sign(signed),
            message,
            verdict,
        };
        (c, rx)
    }

    proptest! {
        /// Whatever the mix of good and bad signatures, a batch's verdicts are those of
        /// checking each alone.
        #[test]
        fn a_batch_gives_each_signature_its_own_verdict(
            forged in proptest::collection::vec(prop_oneof![4 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)], 1..40),
        ) {
            let batch: Vec<Check> = forged
                .iter()
                .enumerate()
                .map(|(i, f)| check(i as u8, *f).0)
                .collect();
            let want: Vec<bool> = forged.iter().map(|f| *f == 0).collect();
            prop_assert_eq!(verify_all(&batch), want);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_get_their_verdicts_through_the_checker() {
        let s = Signatures::spawn();
        let mut tasks = Vec::new();
        for i in 0..200u8 {
            let s = s.checker();
            let forged = u8::from(i % 7 == 3);
            tasks.push(tokio::spawn(async move {
                let (c, _) = check(i, forged);
                (forged == 0, s.verify(c.key, c.message, c.signature).await)
            }));
        }
        for t in tasks {
            let (honest, verdict) = t.await.unwrap();
            assert_eq!(honest, verdict);
        }
    }
}
