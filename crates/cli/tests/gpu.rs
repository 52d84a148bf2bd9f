//! GPU tasks end to end: a WGSL kernel uploaded to a real coordinator, run on native workers'
//! GPUs (Mesa's lavapipe without a hardware one; CI installs it), verified by replicas, and
//! its output buffers downloaded. Skipped, saying so, without any Vulkan adapter unless
//! `RUNEGRID_REQUIRE_GPU` is set.

mod common;

use base64::Engine as _;
use common::*;
use runegrid_core::{ExecStatus, PolicyKind};
use runegrid_proto::{GpuJob, ProgramKind, ResultState, SubmitJob, TaskSpec};
use std::collections::BTreeMap;

const ADD: &str = r#"
@group(0) @binding(0) var<storage, read> a: array<u32>;
@group(0) @binding(1) var<storage, read> b: array<u32>;
@group(0) @binding(2) var<storage, read_write> sum: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&sum)) { sum[id.x] = a[id.x] + b[id.x]; }
}
"#;

fn add_kernel(n: u32) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "shader": ADD,
        "buffers": [
            {"name": "a", "binding": 0, "role": "input"},
            {"name": "b", "binding": 1, "role": "input"},
            {"name": "sum", "binding": 2, "role": "output", "size": 4 * n},
        ],
        "dispatches": [[n.div_ceil(64), 1, 1]],
    }))
    .unwrap()
}

fn words(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn gpu_job(program: &str, tasks: Vec<TaskSpec>, gpu: GpuJob) -> SubmitJob {
    SubmitJob {
        policy: Some(PolicyKind::Quorum),
        gpu: Some(gpu),
        ..job(program, tasks, 2, 2)
    }
}

fn software() -> GpuJob {
    GpuJob {
        verify: None,
        allow_software: true,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kernel_runs_on_gpu_workers_verified_by_replicas() {
    if !have_gpu() {
        return;
    }
    let mut grid = Grid::start().await;
    grid.worker("gpu-a", 2, &[]);
    grid.worker("gpu-b", 2, &[]);
    grid.worker("cpu-only", 2, &["--no-gpu"]);
    grid.wait_workers(3).await;
    grid.wait_worker("a worker showing its GPU", |w| {
        w.capabilities
            .get("gpu")
            .is_some_and(|g| g["software"] == true)
    })
    .await;

    let n = 200u32;
    let c = grid.client();
    let info = c.upload_program(add_kernel(n)).await.unwrap();
    assert_eq!(info.kind, ProgramKind::Gpu);
    let tasks: Vec<TaskSpec> = (0..6u32)
        .map(|t| TaskSpec {
            buffers: BTreeMap::from([
                (
                    "a".to_string(),
                    b64(&words(&(0..n).map(|i| i * t).collect::<Vec<_>>())),
                ),
                (
                    "b".to_string(),
                    b64(&words(&vec![u32::MAX - t; n as usize])),
                ),
            ]),
            ..TaskSpec::default()
        })
        .collect();
    let sub = c
        .submit(&gpu_job(&info.program, tasks, software()))
        .await
        .unwrap();
    let results = grid.wait(sub.job).await;
    for (t, r) in results.tasks.iter().enumerate() {
        assert_eq!(r.state, ResultState::Verified, "task {t}: {r:?}");
        assert_eq!(r.status, Some(ExecStatus::Exited { code: 0 }));
        assert!(r.fuel.unwrap_or(0) > 0, "a GPU task's fuel is its work");
        let sum = c.task_file(sub.job, t as u32, "sum").await.unwrap();
        let t = t as u32;
        let want: Vec<u32> = (0..n).map(|i| (i * t).wrapping_add(u32::MAX - t)).collect();
        assert_eq!(sum, words(&want), "task {t}");
    }
    // The worker without a GPU ran none of it.
    let workers = c.workers().await.unwrap();
    let cpu = workers.iter().find(|w| w.name == "cpu-only").unwrap();
    assert_eq!(cpu.completed, 0, "{workers:?}");
    assert!(cpu.capabilities.get("gpu").is_none());
    // The dashboard's count of workers with a GPU.
    let stats: runegrid_proto::GridStats = reqwest::get(format!("{}/v1/stats", grid.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats.now.workers_gpu, 2);

    // The same from the command line: buffers named after the shader's variables.
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    };
    let shader = file("add.wgsl", ADD.as_bytes());
    let a = file("a.bin", &words(&(0..100).collect::<Vec<u32>>()));
    let b = file("b.bin", &words(&[1000; 100]));
    let out = dir.path().join("out");
    let run = grid.cli(&[
        "gpu",
        &shader,
        "--buffer",
        &format!("a={a}"),
        "--buffer",
        &format!("b={b}"),
        "--output",
        "sum:400",
        "--dispatch",
        "2",
        "--allow-software",
        "--replicas",
        "2",
        "--agree",
        "2",
        "--out",
        &out.display().to_string(),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("verified (quorum"), "{stdout}");
    assert_eq!(
        std::fs::read(out.join("sum.bin")).unwrap(),
        words(&(1000..1100).collect::<Vec<u32>>())
    );
    // A buffer the shader does not have is refused before anything is sent.
    let bad = grid.cli(&[
        "gpu",
        &shader,
        "--buffer",
        &format!("c={a}"),
        "--dispatch",
        "1",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("\"c\""));
    let listed = grid.cli(&["workers"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert_eq!(listed.matches("GPU: ").count(), 2, "{listed}");

    // A kernel that loops for ever stops at its loop budget, on every replica alike.
    let spin = serde_json::json!({
        "shader": "@group(0) @binding(0) var<storage, read_write> out: array<u32>;\n\
                   @compute @workgroup_size(4) fn main(@builtin(global_invocation_id) id: vec3<u32>) {\n\
                   var x = id.x; loop { x = x * 5u + 1u; } out[id.x] = x; }",
        "buffers": [{"name": "out", "binding": 0, "role": "output", "size": 16}],
        "dispatches": [[1, 1, 1]],
    });
    let spin = c
        .upload_program(serde_json::to_vec(&spin).unwrap())
        .await
        .unwrap();
    let results = grid
        .run(&gpu_job(
            &spin.program,
            vec![TaskSpec::default()],
            software(),
        ))
        .await;
    let r = &results.tasks[0];
    assert_eq!(r.status, Some(ExecStatus::OutOfFuel), "{r:?}");
    assert_eq!(r.state, ResultState::Failed, "{r:?}");
    assert!(
        r.error.as_deref().unwrap_or("").contains("loop budget"),
        "{r:?}"
    );

    // A job that does not allow software adapters waits, and says why.
    let one = vec![TaskSpec {
        buffers: BTreeMap::from([
            ("a".to_string(), b64(&words(&vec![1; n as usize]))),
            ("b".to_string(), b64(&words(&vec![2; n as usize]))),
        ]),
        ..TaskSpec::default()
    }];
    let hardware = c
        .submit(&gpu_job(&info.program, one, GpuJob::default()))
        .await
        .unwrap();
    let why = wait_until(
        "the job to say what it waits for",
        std::time::Duration::from_secs(30),
        || {
            let c = c.clone();
            async move {
                let s = c.status(hardware.job).await.ok()?;
                s.waiting_for.filter(|w| w.contains("hardware GPU"))
            }
        },
    )
    .await;
    assert!(why.contains("2 distinct workers"), "{why}");
    c.cancel(hardware.job).await.unwrap();

    // Homogeneous redundancy: replicas on one adapter class agree.
    let tasks = vec![TaskSpec {
        buffers: BTreeMap::from([
            ("a".to_string(), b64(&words(&vec![7; n as usize]))),
            ("b".to_string(), b64(&words(&vec![8; n as usize]))),
        ]),
        ..TaskSpec::default()
    }];
    let results = grid
        .run(&gpu_job(
            &info.program,
            tasks,
            GpuJob {
                verify: Some("homogeneous".into()),
                allow_software: true,
            },
        ))
        .await;
    assert_eq!(results.tasks[0].state, ResultState::Verified);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_kernels_and_bad_gpu_jobs_are_refused_with_clear_errors() {
    let grid = Grid::start().await;
    let c = grid.client();
    let err = |e: runegrid_client::ClientError| (e.code().unwrap_or("").to_string(), e.to_string());

    // Invalid WGSL: the parser's message with its line.
    let broken = String::from_utf8(add_kernel(64))
        .unwrap()
        .replace("a[id.x] + b[id.x]", "a[id.x] +* b[id.x]");
    let (code, msg) = err(c.upload_program(broken.into_bytes()).await.unwrap_err());
    assert_eq!(code, "invalid_kernel", "{msg}");
    assert!(msg.contains("does not parse"), "{msg}");
    // A binding the buffers do not declare.
    let mut k: serde_json::Value = serde_json::from_slice(&add_kernel(64)).unwrap();
    k["buffers"].as_array_mut().unwrap().pop();
    let (code, msg) = err(c
        .upload_program(serde_json::to_vec(&k).unwrap())
        .await
        .unwrap_err());
    assert_eq!(code, "invalid_kernel");
    assert!(msg.contains("@binding(2)"), "{msg}");
    // An oversized output buffer.
    let mut k: serde_json::Value = serde_json::from_slice(&add_kernel(64)).unwrap();
    k["buffers"][2]["size"] = serde_json::json!(1u64 << 40);
    let (code, msg) = err(c
        .upload_program(serde_json::to_vec(&k).unwrap())
        .await
        .unwrap_err());
    assert_eq!(code, "invalid_kernel");
    assert!(msg.contains("above the limit"), "{msg}");

    let kernel = c.upload_program(add_kernel(64)).await.unwrap().program;
    let good = || TaskSpec {
        buffers: BTreeMap::from([
            ("a".to_string(), b64(&[0; 256])),
            ("b".to_string(), b64(&[0; 256])),
        ]),
        ..TaskSpec::default()
    };
    let refused = |job: SubmitJob| {
        let c = c.clone();
        async move { err(c.submit(&job).await.unwrap_err()) }
    };
    // A missing buffer, one the kernel does not take, bad base64, args on a GPU task.
    let mut missing = good();
    missing.buffers.remove("b");
    let (code, msg) = refused(gpu_job(&kernel, vec![good(), missing], software())).await;
    assert_eq!(code, "invalid_job");
    assert!(
        msg.contains("task 1") && msg.contains("\"b\" is missing"),
        "{msg}"
    );
    let mut extra = good();
    extra.buffers.insert("c".into(), b64(&[0; 4]));
    let (_, msg) = refused(gpu_job(&kernel, vec![extra], software())).await;
    assert!(msg.contains("\"c\""), "{msg}");
    let mut garbled = good();
    garbled.buffers.insert("a".into(), "not base64!".into());
    let (_, msg) = refused(gpu_job(&kernel, vec![garbled], software())).await;
    assert!(msg.contains("base64"), "{msg}");
    let mut with_args = good();
    with_args.args = vec!["x".into()];
    let (_, msg) = refused(gpu_job(&kernel, vec![with_args], software())).await;
    assert!(msg.contains("not args"), "{msg}");
    // An unknown verification mode.
    let (code, msg) = refused(gpu_job(
        &kernel,
        vec![good()],
        GpuJob {
            verify: Some("approximately".into()),
            allow_software: true,
        },
    ))
    .await;
    assert_eq!(code, "invalid_gpu", "{msg}");
    // Tolerance verification compares replicas: not with the adaptive policy.
    let (code, msg) = refused(SubmitJob {
        policy: Some(PolicyKind::Adaptive),
        ..gpu_job(
            &kernel,
            vec![good()],
            GpuJob {
                verify: Some("tolerance:rel=1e-4".into()),
                allow_software: true,
            },
        )
    })
    .await;
    assert_eq!(code, "invalid_policy", "{msg}");
    assert!(msg.contains("use quorum"), "{msg}");
    // A malformed tolerance.
    let (code, msg) = refused(gpu_job(
        &kernel,
        vec![good()],
        GpuJob {
            verify: Some("tolerance:rel=-1".into()),
            allow_software: true,
        },
    ))
    .await;
    assert_eq!(code, "invalid_gpu", "{msg}");
    // Work above the fuel limit.
    let mut small = gpu_job(&kernel, vec![good()], software());
    small.limits.fuel = 10;
    let (_, msg) = refused(small).await;
    assert!(msg.contains("fuel limit"), "{msg}");
    // GPU options on a WebAssembly program.
    let wasm = grid.upload(runegrid_examples::MONTECARLO).await;
    let (_, msg) = refused(gpu_job(&wasm, vec![TaskSpec::default()], software())).await;
    assert!(msg.contains("WebAssembly"), "{msg}");
}

/// A float kernel whose replicas differ in the last bits (one worker's outputs drift 3 ULPs, as
/// another GPU's rounding would): `exact` finds no quorum, a tolerance of 4 ULPs accepts both
/// replicas (each paid and trusted as agreeing, the books checked when the grid stops), and one
/// of 2 ULPs does not.
#[tokio::test(flavor = "multi_thread")]
async fn float_replicas_agree_within_a_tolerance() {
    if !have_gpu() {
        return;
    }
    let mut grid = Grid::start().await;
    grid.worker("honest", 1, &[]);
    grid.worker("drifter", 1, &["--misbehave", "drift:3"]);
    grid.wait_workers(2).await;
    let c = grid.client();
    let kernel = serde_json::json!({
        "shader": "@group(0) @binding(0) var<storage, read> x: array<f32>;\n\
                   @group(0) @binding(1) var<storage, read_write> y: array<f32>;\n\
                   @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {\n\
                   if (id.x < arrayLength(&y)) { y[id.x] = x[id.x] * 1.5 + 0.25; } }",
        "buffers": [
            {"name": "x", "binding": 0, "role": "input"},
            {"name": "y", "binding": 1, "role": "output", "size": 1024},
        ],
        "dispatches": [[4, 1, 1]],
    });
    let program = c
        .upload_program(serde_json::to_vec(&kernel).unwrap())
        .await
        .unwrap()
        .program;
    let xs: Vec<f32> = (0..256).map(|i| i as f32 * 0.75 - 40.0).collect();
    let bytes: Vec<u8> = xs.iter().flat_map(|x| x.to_le_bytes()).collect();
    let run = |verify: &'static str| {
        let job = SubmitJob {
            max_attempts: Some(2),
            ..gpu_job(
                &program,
                vec![TaskSpec {
                    buffers: BTreeMap::from([("x".to_string(), b64(&bytes))]),
                    ..TaskSpec::default()
                }],
                GpuJob {
                    verify: Some(verify.into()),
                    allow_software: true,
                },
            )
        };
        let grid = &grid;
        async move { grid.run(&job).await }
    };

    let r = run("exact").await;
    assert_eq!(r.tasks[0].state, ResultState::Failed, "{:?}", r.tasks[0]);
    assert!(
        r.tasks[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("disagreed"),
        "{:?}",
        r.tasks[0]
    );

    let agreed = |ws: &[runegrid_proto::WorkerInfo], name: &str| {
        ws.iter().find(|w| w.name == name).unwrap().agreed
    };
    let before = c.workers().await.unwrap();
    let r = run("tolerance:ulps=4").await;
    let res = &r.tasks[0];
    assert_eq!(res.state, ResultState::Verified, "{res:?}");
    let ys = c.task_file(r.job, 0, "y").await.unwrap();
    for (x, y) in xs.iter().zip(ys.chunks_exact(4)) {
        let y = f32::from_le_bytes(y.try_into().unwrap());
        let want = x * 1.5 + 0.25;
        let ulps = runegrid_core::tolerance::ulp_distance(y, want).unwrap();
        assert!(ulps <= 3, "{y} is {ulps} ULPs from {want}");
    }
    let after = c.workers().await.unwrap();
    for name in ["honest", "drifter"] {
        assert_eq!(
            agreed(&after, name),
            agreed(&before, name) + 1,
            "{name}: {after:?}"
        );
    }

    let r = run("tolerance:ulps=2").await;
    assert_eq!(r.tasks[0].state, ResultState::Failed, "{:?}", r.tasks[0]);
    assert!(
        r.tasks[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("within tolerance"),
        "{:?}",
        r.tasks[0]
    );
}
