//! What each [`Change`] writes: its statements and their parameters, pipelined by `apply`.

use super::Param;
use crate::Millis;
use crate::codec::to_json;
use crate::records::*;
use runegrid_core::ledger::Transfer;

pub(super) const INSERT_TRANSFER: &str = "INSERT INTO transfers (key_kind, key_id, from_kind, from_id, to_kind, to_id, amount, reason, at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (key_kind, key_id) DO NOTHING";

/// A transfer's row (`INSERT_TRANSFER`): appended unless its key is in the journal.
pub(super) fn transfer_params(t: &Transfer, at: Millis) -> Vec<Param<'static>> {
    let (key_kind, key_id) = t.key.to_parts();
    let (from_kind, from_id) = t.from.to_parts();
    let (to_kind, to_id) = t.to.to_parts();
    params![
        key_kind,
        key_id,
        from_kind,
        from_id,
        to_kind,
        to_id,
        t.amount,
        t.reason.as_str(),
        at
    ]
}

/// The statement and parameters that apply one change.
pub(super) fn change_ops<'a>(c: &'a Change, ops: &mut Vec<(&'static str, Vec<Param<'a>>)>) {
    match c {
        Change::CreateJob { id, job, tasks } => {
            ops.push((
                "INSERT INTO jobs (id, owner, name, program, replicas, agree, max_attempts, limits, created_at, state, policy, blobs, price, held, max_price, cache, cached, gpu)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
                params![
                    *id,
                    job.owner,
                    &job.name,
                    &job.program,
                    i64::from(job.replicas),
                    i64::from(job.agree),
                    i64::from(job.max_attempts),
                    to_json(&job.limits),
                    job.created_at,
                    job.state.as_str(),
                    job.policy.as_str(),
                    to_json(&job.blobs),
                    job.price as i64,
                    job.held,
                    job.max_price.map(|p| p as i64),
                    job.cache,
                    i64::from(job.cached),
                    job.gpu.as_ref().map(to_json),
                ],
            ));
            for (i, (tid, t)) in tasks.iter().enumerate() {
                ops.push((
                    "INSERT INTO tasks (id, job, idx, args, env, stdin, seed, state) VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued')",
                    params![
                        *tid,
                        *id,
                        i as i64,
                        to_json(&t.args),
                        to_json(&t.env),
                        &t.stdin[..],
                        t.seed as i64
                    ],
                ));
            }
        }
        Change::StartAttempt {
            id,
            task,
            job,
            worker,
            owner,
            at,
        } => ops.push((
            "INSERT INTO attempts (id, task, job, worker, state, started_at, owner) VALUES ($1, $2, $3, $4, 'running', $5, $6)",
            params![*id, *task, *job, *worker, *at, *owner],
        )),
        Change::FinishAttempt {
            id,
            status,
            digest,
            fuel,
            signature,
            at,
        } => ops.push((
            "UPDATE attempts SET state = 'done', status = $2, digest = $3, fuel = $4, signature = $5, finished_at = $6 WHERE id = $1",
            params![
                *id,
                to_json(status),
                digest.to_hex(),
                *fuel as i64,
                &signature[..],
                *at
            ],
        )),
        Change::AgreeAttempt { id, agreed } => ops.push((
            "UPDATE attempts SET agreed = $2 WHERE id = $1",
            params![*id, agreed.to_hex()],
        )),
        Change::LoseAttempt { id, error, at } => ops.push((
            "UPDATE attempts SET state = 'lost', error = $2, finished_at = $3 WHERE id = $1 AND state = 'running'",
            params![*id, &error[..], *at],
        )),
        Change::CancelAttempt { id, at } => ops.push((
            "UPDATE attempts SET state = 'cancelled', finished_at = $2 WHERE id = $1 AND state = 'running'",
            params![*id, *at],
        )),
        Change::TaskState {
            id,
            state,
            attempts,
        } => ops.push((
            "UPDATE tasks SET state = $2, attempts = $3 WHERE id = $1",
            params![*id, state.as_str(), i64::from(*attempts)],
        )),
        Change::FinishTask {
            id,
            state,
            outcome,
            attempts,
        } => ops.push((
            "UPDATE tasks SET state = $2, status = $3, stdout = $4, fuel = $5, digest = $6, error = $7, attempts = $8, acceptance = $9, files = $10 WHERE id = $1",
            params![
                *id,
                state.as_str(),
                outcome.status.as_ref().map(to_json),
                &outcome.stdout[..],
                outcome.fuel as i64,
                outcome.digest.map(|d| d.to_hex()),
                outcome.error.as_deref(),
                i64::from(*attempts),
                outcome.acceptance.map(|a| a.as_str()),
                to_json(&outcome.files)
            ],
        )),
        Change::CorrectTask { id, state, outcome } => ops.push((
            "UPDATE tasks SET state = $2, status = $3, stdout = $4, fuel = $5, digest = $6, error = $7, acceptance = $8, files = $9 WHERE id = $1",
            params![
                *id,
                state.as_str(),
                outcome.status.as_ref().map(to_json),
                &outcome.stdout[..],
                outcome.fuel as i64,
                outcome.digest.map(|d| d.to_hex()),
                outcome.error.as_deref(),
                outcome.acceptance.map(|a| a.as_str()),
                to_json(&outcome.files)
            ],
        )),
        Change::FinishJob { id, state, at } => ops.push((
            "UPDATE jobs SET state = $2, finished_at = $3 WHERE id = $1",
            params![*id, state.as_str(), *at],
        )),
        Change::WorkerSeen {
            id,
            at,
            completed_delta,
        } => ops.push((
            "UPDATE workers SET last_seen = GREATEST(last_seen, $2), completed = completed + $3 WHERE id = $1",
            params![*id, *at, i64::from(*completed_delta)],
        )),
        Change::WorkerTrust { id, trust } => ops.push((
            "UPDATE workers SET trust = $2 WHERE id = $1",
            params![*id, to_json(trust)],
        )),
        Change::Transfer { transfer, at } => {
            ops.push((INSERT_TRANSFER, transfer_params(transfer, *at)))
        }
        Change::StartJob { id, price } => ops.push((
            "UPDATE jobs SET state = 'active', price = $2 WHERE id = $1 AND state = 'waiting_for_price'",
            params![*id, *price as i64],
        )),
        Change::DisplayName { account, name } => ops.push((
            "UPDATE accounts SET display_name = $2 WHERE id = $1",
            params![*account, name.as_deref()],
        )),
        Change::CachePut { key, result, at } => ops.push((
            "INSERT INTO result_cache (key, status, stdout, fuel, digest, stderr, used_at, files) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (key) DO UPDATE SET status = EXCLUDED.status, stdout = EXCLUDED.stdout, fuel = EXCLUDED.fuel,
                 digest = EXCLUDED.digest, stderr = EXCLUDED.stderr, used_at = EXCLUDED.used_at, files = EXCLUDED.files",
            params![
                &key.0[..],
                to_json(&result.status),
                &result.stdout[..],
                result.fuel as i64,
                result.digest.to_hex(),
                &result.stderr[..],
                *at,
                to_json(&result.files)
            ],
        )),
        Change::CacheUse { key, at } => ops.push((
            "UPDATE result_cache SET used_at = GREATEST(used_at, $2) WHERE key = $1",
            params![&key.0[..], *at],
        )),
        Change::CacheEvict { key } => ops.push((
            "DELETE FROM result_cache WHERE key = $1",
            params![&key.0[..]],
        )),
    }
}
