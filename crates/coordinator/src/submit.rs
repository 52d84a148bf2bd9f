//! Job creation: a submission's checks, its tasks' seeds, and the wait for it to be durable.
//! Used by `POST /v1/jobs` and by chat requests.

use crate::api::{ApiError, AppState, blocking, may_submit};
use crate::app::App;
use crate::grid::{HoldError, Submission, now_ms};
use crate::programs::ProgramBytes;
use runegrid_core::{JobId, PolicyKind, Quorum};
use runegrid_proto::worker::BlobMount;
use runegrid_proto::{JobEvent, SubmitJob};
use runegrid_store::{Account, NewJob, NewTask};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A follower's receiver of a job's events.
pub type EventReceiver = tokio::sync::broadcast::Receiver<JobEvent>;

/// Most tasks one job may have.
pub const MAX_TASKS: usize = 1_000_000;
/// Most blobs one job may mount.
pub const MAX_MOUNTS: usize = 16;

/// Checks a submission, accepts it and waits until it is durable: the job's id and task count.
pub async fn create_job(
    app: &AppState,
    a: &Account,
    req: SubmitJob,
) -> Result<(JobId, u64), ApiError> {
    let s = submission(app, a, req).await?;
    let n = s.tasks.len() as u64;
    let (id, seq) = app.add_job(s).map_err(refused)?;
    durable(app, id, seq).await?;
    tracing::debug!(job = id, tasks = n, account = %a.name, "job submitted");
    Ok((id, n))
}

/// [`create_job`], with a receiver of the job's events subscribed before anything was
/// dispatched.
pub async fn create_job_followed(
    app: &AppState,
    a: &Account,
    req: SubmitJob,
) -> Result<(JobId, u64, EventReceiver), ApiError> {
    let s = submission(app, a, req).await?;
    let n = s.tasks.len() as u64;
    let (id, seq, rx) = app.add_job_followed(s).map_err(refused)?;
    durable(app, id, seq).await?;
    tracing::debug!(job = id, tasks = n, account = %a.name, "job submitted, followed");
    Ok((id, n, rx))
}

/// A job the ledger refused: `402 insufficient_credits` with the amounts, nothing stored.
fn refused(e: HoldError) -> ApiError {
    match e {
        HoldError::Insufficient { .. } => ApiError::new(
            axum::http::StatusCode::PAYMENT_REQUIRED,
            "insufficient_credits",
            e.to_string(),
        ),
        HoldError::Price(_) => ApiError::bad("invalid_job", e.to_string()),
        HoldError::Ledger(_) => ApiError::internal(e.to_string()),
    }
}

/// Dispatch starts at once; the answer waits for the commit, so an accepted job is durable.
async fn durable(app: &AppState, id: JobId, seq: u64) -> Result<(), ApiError> {
    if app.writer.committed(seq).await.is_err() {
        app.discard_job(id);
        return Err(ApiError::internal(
            "the job could not be stored; nothing was accepted",
        ));
    }
    Ok(())
}

/// A checked submission, with its program, mounts and tasks' seeds: what the grid accepts.
async fn submission(app: &AppState, a: &Account, req: SubmitJob) -> Result<Submission, ApiError> {
    may_submit(a)?;
    let (mut policy, quorum) = check(&req)?;
    let mounts = check_mounts(app, &req.blobs)?;
    // `rune` and `infer` name built-in programs; the job records the hash like any program's.
    let program_sha = crate::builtins::resolve(&req.program).to_string();
    let program = program(app, &program_sha, &req.program).await?;
    let gpu = if runegrid_core::gpu::is_kernel(&program.module) {
        Some(check_gpu(app, &req, &program)?)
    } else {
        if req.gpu.is_some() || req.tasks.iter().any(|t| !t.buffers.is_empty()) {
            return Err(ApiError::bad(
                "invalid_job",
                "gpu options and task buffers are for GPU kernels; this program is a WebAssembly module",
            ));
        }
        None
    };
    if let Some(g) = gpu
        && g.verify != runegrid_core::gpu::GpuVerify::Exact
    {
        policy = replicated(req.policy, policy, g.verify)?;
    }
    let salt: u64 = rand::random();
    let tasks: Vec<NewTask> = req
        .tasks
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            Ok(NewTask {
                // A GPU task's input buffers travel as its stdin.
                stdin: match gpu {
                    Some(_) => runegrid_core::gpu::encode_buffers(&decode_buffers(&t.buffers)?),
                    None => t.stdin.into_bytes(),
                },
                args: t.args,
                env: t.env,
                seed: req.seed.unwrap_or_else(|| seed_for(salt, i as u64)),
            })
        })
        .collect::<Result<_, ApiError>>()?;
    let job = NewJob {
        owner: a.id,
        name: req.name.unwrap_or_default(),
        program: program_sha,
        policy,
        replicas: quorum.replicas,
        agree: quorum.agree,
        max_attempts: quorum.max_attempts,
        limits: req.limits,
        created_at: now_ms(),
        blobs: req.blobs,
        // Set by the grid when it accepts the job.
        price: 0,
        held: 0,
        max_price: req.max_price,
        state: runegrid_store::JobState::Active,
        cache: req.cache.unwrap_or(true),
        // Set by the grid: the tasks the cache answers.
        cached: 0,
        gpu,
    };
    Ok(Submission {
        job,
        tasks,
        owner_name: a.name.clone(),
        program,
        mounts,
    })
}

/// The checks a submission's own fields must pass: its task count, limits and policy; the
/// policy kind and the quorum it resolves to.
fn check(req: &SubmitJob) -> Result<(PolicyKind, Quorum), ApiError> {
    if req.tasks.is_empty() {
        return Err(ApiError::bad(
            "invalid_job",
            "job has no tasks: give at least one input",
        ));
    }
    if req.tasks.len() > MAX_TASKS {
        return Err(ApiError::bad(
            "invalid_job",
            format!(
                "job has {} tasks; at most {MAX_TASKS} are allowed",
                req.tasks.len()
            ),
        ));
    }
    req.limits
        .validate()
        .map_err(|e| ApiError::bad("invalid_limits", e.to_string()))?;
    if let Some(seed) = req.seed
        && seed > runegrid_proto::MAX_SEED
    {
        return Err(ApiError::bad(
            "invalid_job",
            format!(
                "seed {seed} is too large: seeds are below 2^53 ({})",
                runegrid_proto::MAX_SEED + 1
            ),
        ));
    }
    if req.max_price == Some(0) {
        return Err(ApiError::bad(
            "invalid_job",
            "max_price is micro-credits per 10^9 fuel and must be at least 1",
        ));
    }
    let (policy, replicas, agree) = req
        .resolved_policy()
        .map_err(|e| ApiError::bad("invalid_policy", e))?;
    let quorum = match req.max_attempts {
        Some(m) => Quorum::with_cap(replicas, agree, m),
        None => Quorum::new(replicas, agree),
    }
    .map_err(|e| ApiError::bad("invalid_policy", e.to_string()))?;
    Ok((policy, quorum))
}

/// The program a submission names (`sha` resolved from `named`), from the cache or the store.
async fn program(app: &AppState, sha: &str, named: &str) -> Result<Arc<ProgramBytes>, ApiError> {
    let program = match app.cached_program(sha) {
        Some(p) => Some(p),
        None => {
            let sha = sha.to_string();
            blocking(app, move |app| app.program(&sha)).await?
        }
    };
    program.ok_or_else(|| {
        ApiError::bad(
            "unknown_program",
            format!(
                "unknown program {named}: upload the module first (POST /v1/programs), or name a built-in program (\"rune\", \"infer\")",
            ),
        )
    })
}

/// A submission's mounts: valid names, blobs the coordinator holds.
fn check_mounts(app: &App, named: &BTreeMap<String, String>) -> Result<Arc<[BlobMount]>, ApiError> {
    if named.len() > MAX_MOUNTS {
        return Err(ApiError::bad(
            "invalid_blobs",
            format!(
                "{} blobs; a job may mount at most {MAX_MOUNTS}",
                named.len()
            ),
        ));
    }
    runegrid_core::mounts::check_mounts(named.keys().map(String::as_str))
        .map_err(|why| ApiError::bad("invalid_blobs", why))?;
    for (name, sha) in named {
        if app.blobs.size(sha).is_none() {
            return Err(ApiError::bad(
                "unknown_blob",
                format!(
                    "blob {sha} (mounted as {name}) is not on this coordinator: upload it first (PUT /v1/blobs/SHA256)"
                ),
            ));
        }
    }
    Ok(app.blobs.mounts(named))
}

/// A GPU job's checks: each task supplies exactly its kernel's input buffers (from its own
/// `buffers` or from blobs mounted under the buffer's name), within the kernel's limits, no
/// args, stdin or env; the kernel's work fits the fuel limit. Returns the job's options.
fn check_gpu(
    app: &App,
    req: &SubmitJob,
    program: &ProgramBytes,
) -> Result<runegrid_core::gpu::GpuOptions, ApiError> {
    use runegrid_core::gpu::{GpuOptions, GpuVerify};
    let bad = |e: String| ApiError::bad("invalid_job", e);
    let kernel = runegrid_gpu::Kernel::from_json(&program.module)
        .map_err(|e| ApiError::internal(format!("stored kernel unreadable: {e}")))?;
    let limits = runegrid_gpu::GpuLimits::default();
    let checked = runegrid_gpu::check_guarded(&kernel, &limits)
        .map_err(|e| ApiError::internal(format!("stored kernel invalid: {e}")))?;
    let options = req.gpu.clone().unwrap_or_default();
    let verify = match options.verify.as_deref() {
        None => GpuVerify::Exact,
        Some(v) => v
            .parse()
            .map_err(|e: String| ApiError::bad("invalid_gpu", e))?,
    };
    let work = kernel.work.unwrap_or_else(|| checked.work(&kernel));
    if work > req.limits.fuel {
        return Err(bad(format!(
            "the kernel's work per task is {work} (invocations × its static cost), above the fuel limit {}: raise limits.fuel",
            req.limits.fuel
        )));
    }
    let mut mounted = BTreeMap::new();
    for (name, sha) in &req.blobs {
        let size = app.blobs.size(sha).unwrap_or(0);
        mounted.insert(name.clone(), size);
    }
    for (i, t) in req.tasks.iter().enumerate() {
        if !t.args.is_empty() || !t.stdin.is_empty() || !t.env.is_empty() {
            return Err(bad(format!(
                "task {i}: a GPU task takes buffers, not args, stdin or env"
            )));
        }
        let mut sizes = mounted.clone();
        for (name, b64) in &t.buffers {
            let bytes = decode_one(name, b64)?;
            if sizes.insert(name.clone(), bytes.len() as u64).is_some() {
                return Err(bad(format!(
                    "task {i}: buffer {name:?} is given both as a blob and in the task"
                )));
            }
        }
        runegrid_gpu::check_input_sizes(&kernel, &checked, &sizes, &limits)
            .map_err(|e| bad(format!("task {i}: {e}")))?;
    }
    Ok(GpuOptions {
        verify,
        allow_software: options.allow_software,
    })
}

/// The policy of a job whose replicas agree only on one adapter class or within a tolerance:
/// always a quorum. The adaptive policy (the default) accepts a trusted worker's lone result
/// and audits it later on another worker, whose bytes need not match, so it becomes a quorum
/// (of 2 by default) when the submission names no policy, and is refused when it does. Policy
/// `none` (one attempt, nothing compared) stays.
fn replicated(
    asked: Option<PolicyKind>,
    resolved: PolicyKind,
    verify: runegrid_core::gpu::GpuVerify,
) -> Result<PolicyKind, ApiError> {
    match (asked, resolved) {
        (_, PolicyKind::Quorum) => Ok(PolicyKind::Quorum),
        // One attempt, nothing compared.
        (_, PolicyKind::None) => Ok(PolicyKind::None),
        (None, PolicyKind::Adaptive) => Ok(PolicyKind::Quorum),
        (_, other) => Err(ApiError::bad(
            "invalid_policy",
            format!(
                "verify {verify} compares replicas with each other: policy {} cannot be used; leave the policy out or use quorum",
                other.as_str()
            ),
        )),
    }
}

fn decode_one(name: &str, b64: &str) -> Result<Vec<u8>, ApiError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| ApiError::bad("invalid_job", format!("buffer {name:?} is not base64: {e}")))
}

fn decode_buffers(
    buffers: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, Vec<u8>>, ApiError> {
    buffers
        .iter()
        .map(|(k, v)| Ok((k.clone(), decode_one(k, v)?)))
        .collect()
}

/// A task's seed: the same for every replica, below 2^53 so every JSON reader keeps it exact.
fn seed_for(salt: u64, index: u64) -> u64 {
    let h = Sha256::digest(format!("runegrid-seed-v1\n{salt}\n{index}").as_bytes());
    u64::from_le_bytes(h[..8].try_into().expect("8 bytes")) & ((1 << 53) - 1)
}
