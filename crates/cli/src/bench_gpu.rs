//! `runegrid bench gpu`: three WGSL kernels — a `u32` vector add, an `f32` matmul and an `int8`
//! matmul — run locally with wgpu, through a local grid on a GPU worker, and as their CPU twins
//! (the `linalg` WASI guest, `examples/linalg`) through the same grid and in the local sandbox.
//!
//! - **Local GPU**: the kernel as the coordinator guards it, run with [`Gpu::run`] (what a worker
//!   calls: shader module, pipeline, buffers, dispatch, read back) once untimed, then `--runs`
//!   times; runs/s. The same kernel with the same buffers dispatching one workgroup gives the
//!   fixed cost of a run: everything but the compute (shader module, pipeline, buffers, read
//!   back), which a pipeline cache would cut to the buffers.
//! - **Grid GPU**: one coordinator, one worker started with `--gpu`; one job of `--tasks` tasks,
//!   a single replica each (`policy: none`), after a one-task job that warms the worker (it
//!   fetches the kernel and the inputs); from submission to the last result, tasks/s.
//! - **Grid CPU**: the `linalg` guest's job of as many tasks through the same grid and worker
//!   (all its slots), timed the same way; and one run in the local sandbox (one core).
//!
//! Inputs are two blobs, `a` and `b`, uploaded once and mounted by every task: the GPU tasks as
//! their buffers `a` and `b`, the WASI tasks as `/blobs/a` and `/blobs/b`. Every output is the
//! bytes of `c` (the kernel's output buffer, the guest's `/out/c`), and every one is checked:
//! the integer kernels give identical bytes everywhere; the `f32` matmul agrees within a relative
//! tolerance ([`F32_TOLERANCE`]; WGSL lets a GPU fuse the multiply and add).

use crate::procs::LocalGrid;
use anyhow::{Context, Result, bail};
use clap::Args;
use runegrid_core::{ExecStatus, Limits, PolicyKind};
use runegrid_gpu::{Buffer, Gpu, GpuLimits, Kernel, OpenOptions, Role};
use runegrid_proto::{GpuJob, ResultState, SubmitJob, TaskResult, TaskSpec};
use runegrid_sandbox::{Blob, Sandbox, TaskRun};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct GpuBenchArgs {
    /// N of the N×N matmuls (a multiple of 64) [default: 512; --quick: 128].
    #[arg(long)]
    pub size: Option<u32>,
    /// Elements of the vector add (a multiple of 256) [default: 2^20; --quick: 2^16].
    #[arg(long)]
    pub elements: Option<u32>,
    /// Tasks in each grid job [default: 16; --quick: 2].
    #[arg(long)]
    pub tasks: Option<u32>,
    /// Timed local GPU runs of each kernel, after an untimed one [default: 20; --quick: 2].
    #[arg(long)]
    pub runs: Option<u32>,
    /// Slots of the grid's worker, for the WASI tasks (it runs GPU tasks one at a time)
    /// [default: the number of cores].
    #[arg(long)]
    pub slots: Option<u32>,
    /// The kernels to run, comma-separated: vadd, matmul-f32, matmul-i8 [default: all].
    #[arg(long, value_delimiter = ',')]
    pub kernels: Vec<String>,
    /// A smoke run: small sizes, few runs and tasks (flags given still apply).
    #[arg(long)]
    pub quick: bool,
    /// Keep the grid's data and logs in this directory (default: a temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// The largest relative difference allowed between the GPU's and the CPU's `f32` matmul,
/// element by element (the inputs are in [0, 1), so no sum cancels).
pub const F32_TOLERANCE: f64 = 1e-4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Vadd,
    MatmulF32,
    MatmulI8,
}

impl Op {
    const ALL: [Op; 3] = [Op::Vadd, Op::MatmulF32, Op::MatmulI8];

    /// The guest's argument, and the name `--kernels` takes.
    fn arg(self) -> &'static str {
        match self {
            Op::Vadd => "vadd",
            Op::MatmulF32 => "matmul-f32",
            Op::MatmulI8 => "matmul-i8",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Op::Vadd => "vector add u32",
            Op::MatmulF32 => "matmul f32",
            Op::MatmulI8 => "matmul int8",
        }
    }

    /// Whether its output is the same bytes on every machine.
    fn exact(self) -> bool {
        self != Op::MatmulF32
    }
}

const VADD: &str = r#"// c = a + b over u32s, wrapping; a 2D grid of workgroups when one row is not enough.
@group(0) @binding(0) var<storage, read> a: array<u32>;
@group(0) @binding(1) var<storage, read> b: array<u32>;
@group(0) @binding(2) var<storage, read_write> c: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) g: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>,
        @builtin(local_invocation_index) l: u32) {
    let i = (g.y * ng.x + g.x) * 256u + l;
    if (i < arrayLength(&c)) {
        c[i] = a[i] + b[i];
    }
}
"#;

/// `{N}` is the size; `{STEPS}` the unrolled products of one 16-wide tile.
const MATMUL_F32: &str = r#"// c = a × b, N×N f32 matrices, row-major. Each workgroup computes a 16×16 tile of c from
// 16×16 tiles of a and b staged in workgroup memory; each invocation sums its element over k
// in ascending order, as the CPU twin does.
const N: u32 = {N}u;
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
var<workgroup> ta: array<array<f32, 16>, 16>;
var<workgroup> tb: array<array<f32, 16>, 16>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) g: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let row = g.y * 16u + l.y;
    let col = g.x * 16u + l.x;
    var acc = 0.0;
    for (var t = 0u; t < N; t += 16u) {
        ta[l.y][l.x] = a[row * N + t + l.x];
        tb[l.y][l.x] = b[(t + l.y) * N + col];
        workgroupBarrier();
{STEPS}        workgroupBarrier();
    }
    c[row * N + col] = acc;
}
"#;

/// `{N}` is the size; `{STEPS}` the unrolled dot products of one 16-word (64 int8) tile.
const MATMUL_I8: &str = r#"// c = a × b, N×N int8 matrices packed 4 per u32 (little-endian), i32 results: a row-major,
// b transposed (row j of the buffer b is column j of the matrix). Each workgroup computes a
// 16×16 tile of c from tiles of 16 rows × 16 words (64 int8) of a and b staged in workgroup
// memory; dot4I8Packed multiplies four int8 pairs and sums them in i32.
const N: u32 = {N}u;
const W: u32 = N / 4u;
@group(0) @binding(0) var<storage, read> a: array<u32>;
@group(0) @binding(1) var<storage, read> b: array<u32>;
@group(0) @binding(2) var<storage, read_write> c: array<i32>;
var<workgroup> ta: array<array<u32, 16>, 16>;
var<workgroup> tb: array<array<u32, 16>, 16>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) g: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let row = g.y * 16u + l.y;
    let col = g.x * 16u + l.x;
    var acc = 0i;
    for (var t = 0u; t < W; t += 16u) {
        ta[l.y][l.x] = a[row * W + t + l.x];
        tb[l.y][l.x] = b[(g.x * 16u + l.y) * W + t + l.x];
        workgroupBarrier();
{STEPS}        workgroupBarrier();
    }
    c[row * N + col] = acc;
}
"#;

/// One kernel at one size, with its inputs.
struct Case {
    op: Op,
    /// Elements (vector add) or N (matmuls).
    n: u32,
    kernel: Kernel,
    a: Vec<u8>,
    b: Vec<u8>,
    /// Bytes of `c`.
    out_bytes: u64,
    /// Work of one run in the unit's base (bytes moved, or operations).
    work: f64,
}

/// splitmix64: the inputs, the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, n: usize, mut f: impl FnMut(u64) -> [u8; 4]) -> Vec<u8> {
        (0..n).flat_map(|_| f(self.next())).collect()
    }
}

fn buffer(name: &str, binding: u32, role: Role, size: Option<u64>) -> Buffer {
    Buffer {
        name: name.into(),
        group: 0,
        binding,
        role,
        size,
    }
}

impl Case {
    fn new(op: Op, n: u32) -> Result<Case> {
        let mut rng = Rng(0x5eed ^ u64::from(n) ^ ((op as u64) << 32));
        let nn = n as usize;
        let steps = |line: &dyn Fn(u32) -> String| (0..16).map(line).collect::<String>();
        let (shader, dispatch, a, b, out_bytes, work) = match op {
            Op::Vadd => {
                // Its output is at most a WASI task's output limit (64 MiB).
                if n == 0 || !n.is_multiple_of(256) || n > 1 << 24 {
                    bail!("--elements {n}: expected a multiple of 256 up to 2^24");
                }
                let groups = n / 256;
                let rows = groups.div_ceil(65_535);
                let dispatch = [groups.div_ceil(rows), rows, 1];
                let words = |r: &mut Rng| r.bytes(nn, |x| (x as u32).to_le_bytes());
                let (a, b) = (words(&mut rng), words(&mut rng));
                (
                    VADD.to_string(),
                    dispatch,
                    a,
                    b,
                    4 * u64::from(n),
                    12.0 * n as f64,
                )
            }
            Op::MatmulF32 | Op::MatmulI8 => {
                if n == 0 || !n.is_multiple_of(64) || n > 4096 {
                    bail!("--size {n}: expected a multiple of 64 up to 4096");
                }
                let dispatch = [n / 16, n / 16, 1];
                let ops = 2.0 * (n as f64).powi(3);
                if op == Op::MatmulF32 {
                    // Values k/2^24 in [0, 1), exact in f32.
                    let floats = |r: &mut Rng| {
                        r.bytes(nn * nn, |x| ((x >> 40) as f32 / 16_777_216.0).to_le_bytes())
                    };
                    let (a, b) = (floats(&mut rng), floats(&mut rng));
                    let shader = MATMUL_F32.replace("{N}", &n.to_string()).replace(
                        "{STEPS}",
                        &steps(&|k| format!("        acc = acc + ta[l.y][{k}] * tb[{k}][l.x];\n")),
                    );
                    (shader, dispatch, a, b, 4 * u64::from(n) * u64::from(n), ops)
                } else {
                    let int8 = |r: &mut Rng| r.bytes(nn * nn / 4, |x| (x as u32).to_le_bytes());
                    let (a, b) = (int8(&mut rng), int8(&mut rng));
                    let shader = MATMUL_I8.replace("{N}", &n.to_string()).replace(
                        "{STEPS}",
                        &steps(&|k| {
                            format!(
                                "        acc = acc + dot4I8Packed(ta[l.y][{k}], tb[l.x][{k}]);\n"
                            )
                        }),
                    );
                    (shader, dispatch, a, b, 4 * u64::from(n) * u64::from(n), ops)
                }
            }
        };
        let kernel = Kernel {
            shader,
            entry_point: "main".into(),
            buffers: vec![
                buffer("a", 0, Role::Input, None),
                buffer("b", 1, Role::Input, None),
                buffer("c", 2, Role::Output, Some(out_bytes)),
            ],
            dispatches: vec![dispatch],
            loop_budget: None,
            work: None,
        };
        runegrid_gpu::check(&kernel, &GpuLimits::default())
            .with_context(|| format!("{} n={n}: the kernel", op.arg()))?;
        Ok(Case {
            op,
            n,
            kernel,
            a,
            b,
            out_bytes,
            work,
        })
    }

    fn size(&self) -> String {
        match self.op {
            Op::Vadd if self.n.is_power_of_two() => format!("n=2^{}", self.n.trailing_zeros()),
            Op::Vadd => format!("n={}", self.n),
            _ => format!("{0}x{0}", self.n),
        }
    }

    /// The work rate at `per_s` runs per second, with its unit.
    fn rate(&self, per_s: f64) -> String {
        let unit = match self.op {
            Op::Vadd => "GB/s",
            Op::MatmulF32 => "GFLOP/s",
            Op::MatmulI8 => "GOP/s",
        };
        format!("{:.2} {unit}", self.work * per_s / 1e9)
    }

    /// Limits that fit the WASI twin (and the GPU task's work): the grid does not charge.
    fn limits(&self) -> Limits {
        let inputs = (self.a.len() + self.b.len()) as u64;
        Limits {
            fuel: Limits::MAX_FUEL,
            memory_bytes: (3 * inputs + 3 * self.out_bytes + (64 << 20)).min(Limits::MAX_MEMORY),
            wall_time_ms: 3_600_000,
            stdout_bytes: 1 << 20,
            scratch_bytes: (2 * self.out_bytes + (1 << 20)).min(Limits::MAX_SCRATCH),
            output_bytes: self.out_bytes.min(Limits::MAX_OUTPUT),
        }
    }

    fn args(&self) -> Vec<String> {
        vec![self.op.arg().into(), self.n.to_string()]
    }
}

/// What was measured of one case.
#[derive(Default)]
struct Figures {
    local_gpu: f64,
    fixed_ms: f64,
    local_cpu: f64,
    grid_gpu: f64,
    grid_cpu: f64,
    check: String,
}

fn words_f32(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|w| f32::from_le_bytes(w.try_into().expect("4 bytes")))
}

/// The largest relative difference between two `f32` arrays, element by element.
fn max_rel_error(x: &[u8], y: &[u8]) -> f64 {
    words_f32(x)
        .zip(words_f32(y))
        .map(|(p, q)| {
            let (p, q) = (f64::from(p), f64::from(q));
            if p == q {
                0.0
            } else {
                (p - q).abs() / p.abs().max(q.abs())
            }
        })
        .fold(0.0, f64::max)
}

/// Compares the GPU's and the CPU's output: identical bytes for the integer kernels, within
/// [`F32_TOLERANCE`] for the `f32` matmul. Returns what it found.
fn compare(op: Op, what: &str, gpu: &[u8], cpu: &[u8]) -> Result<String> {
    if gpu.len() != cpu.len() {
        bail!(
            "{}: {what}: {} bytes against {}",
            op.label(),
            gpu.len(),
            cpu.len()
        );
    }
    if gpu == cpu {
        return Ok("identical bytes".into());
    }
    if op.exact() {
        let at = gpu.iter().zip(cpu).position(|(x, y)| x != y).unwrap_or(0);
        bail!(
            "{}: {what}: the bytes differ (first at byte {at})",
            op.label()
        );
    }
    let err = max_rel_error(gpu, cpu);
    if err.is_nan() || err > F32_TOLERANCE {
        bail!(
            "{}: {what}: max rel error {err:.2e} is above {F32_TOLERANCE:e}",
            op.label()
        );
    }
    Ok(format!("max rel error {err:.1e}"))
}

/// Runs `kernel` (the case's, or a variant) on `case`'s inputs `runs` times on `gpu` after an
/// untimed run, guarded as the coordinator guards it; the time of the timed runs and the output. Every run must give the first one's bytes.
fn local_gpu(gpu: &Gpu, kernel: &Kernel, case: &Case, runs: u32) -> Result<(Duration, Vec<u8>)> {
    let guarded = runegrid_gpu::guard(kernel, runegrid_gpu::DEFAULT_LOOP_BUDGET)?;
    let checked = runegrid_gpu::check_guarded(&guarded, &GpuLimits::default())?;
    let inputs = BTreeMap::from([
        ("a".to_string(), &case.a[..]),
        ("b".to_string(), &case.b[..]),
    ]);
    let limits = GpuLimits {
        wall_time_ms: 600_000,
        ..GpuLimits::default()
    };
    let once = || -> Result<Vec<u8>> {
        let outputs = gpu
            .run(&guarded, &checked, &inputs, &limits)
            .with_context(|| format!("{} on the local GPU", case.op.label()))?;
        let (exhausted, outputs) = runegrid_gpu::split_status(outputs);
        if exhausted {
            bail!("{}: the loop budget ran out", case.op.label());
        }
        outputs
            .into_iter()
            .find(|(name, _)| name == "c")
            .map(|(_, bytes)| bytes)
            .context("no output c")
    };
    let first = once()?;
    let start = Instant::now();
    for _ in 0..runs {
        if once()? != first {
            bail!(
                "{}: two runs on the local GPU gave different bytes",
                case.op.label()
            );
        }
    }
    Ok((start.elapsed(), first))
}

/// One run of the `linalg` twin in the sandbox: its time and `/out/c`.
fn local_cpu(
    sandbox: &Sandbox,
    program: &runegrid_sandbox::Program,
    case: &Case,
) -> Result<(Duration, Vec<u8>)> {
    let blobs = [
        Blob::new("a", case.a.clone()),
        Blob::new("b", case.b.clone()),
    ];
    let args = case.args();
    let task = TaskRun {
        args: &args,
        env: &[],
        stdin: &[],
        seed: 1,
        limits: case.limits(),
        blobs: &blobs,
    };
    let start = Instant::now();
    let out = sandbox
        .run(program, &task, &mut |_| {})
        .map_err(|e| anyhow::anyhow!("{} in the sandbox: {e}", case.op.label()))?;
    let took = start.elapsed();
    if out.execution.status != (ExecStatus::Exited { code: 0 }) {
        bail!(
            "{} in the sandbox ended {:?}: {}",
            case.op.label(),
            out.execution.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let i = out
        .execution
        .files
        .iter()
        .position(|f| f.path == "c")
        .context("the linalg guest wrote no /out/c")?;
    Ok((took, out.files[i].clone()))
}

/// Submits a job of `tasks` tasks and waits for all of them; the time from submission to the
/// last result, the results and the job's id. Every task must be verified with one `c`, the
/// same in all of them.
async fn grid_job(
    client: &runegrid_client::Client,
    program: &str,
    case: &Case,
    blobs: &BTreeMap<String, String>,
    tasks: u32,
    gpu: Option<GpuJob>,
) -> Result<(Duration, Vec<TaskResult>, i64)> {
    let spec = TaskSpec {
        args: if gpu.is_some() { vec![] } else { case.args() },
        ..TaskSpec::default()
    };
    let what = format!(
        "{} ({})",
        case.op.label(),
        if gpu.is_some() { "GPU" } else { "CPU WASI" }
    );
    let job = SubmitJob {
        program: program.into(),
        name: Some(format!("bench gpu {}", case.op.arg())),
        tasks: vec![spec; tasks as usize],
        policy: Some(PolicyKind::None),
        replicas: None,
        agree: None,
        max_attempts: None,
        limits: case.limits(),
        blobs: blobs.clone(),
        max_price: None,
        seed: None,
        cache: Some(false),
        gpu,
    };
    let start = Instant::now();
    let sub = client.submit(&job).await?;
    let results = loop {
        let r = client
            .results(sub.job, Some(Duration::from_secs(600)))
            .await?;
        if r.tasks.iter().all(|t| {
            matches!(
                t.state,
                ResultState::Verified | ResultState::Failed | ResultState::Cancelled
            )
        }) {
            break r;
        }
    };
    let took = start.elapsed();
    let mut digest = None;
    for t in &results.tasks {
        if t.state != ResultState::Verified {
            bail!(
                "{what}: task {} ended {} ({})",
                t.index,
                t.state.as_str(),
                t.error.as_deref().unwrap_or("no error given")
            );
        }
        let c = t
            .files
            .iter()
            .find(|f| f.path == "c")
            .with_context(|| format!("{what}: task {} has no output c", t.index))?;
        match digest {
            None => digest = Some(c.sha256.clone()),
            Some(ref d) if *d != c.sha256 => {
                bail!("{what}: tasks 0 and {} gave different outputs", t.index)
            }
            Some(_) => {}
        }
    }
    Ok((took, results.tasks, sub.job))
}

fn cores() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

pub async fn run(a: GpuBenchArgs) -> Result<i32> {
    let q = a.quick;
    let size = a.size.unwrap_or(if q { 128 } else { 512 });
    let elements = a.elements.unwrap_or(if q { 1 << 16 } else { 1 << 20 });
    let tasks = a.tasks.unwrap_or(if q { 2 } else { 16 }).max(1);
    let runs = a.runs.unwrap_or(if q { 2 } else { 20 }).max(1);
    let slots = a.slots.unwrap_or_else(cores).max(1);
    let ops: Vec<Op> = if a.kernels.is_empty() {
        Op::ALL.to_vec()
    } else {
        a.kernels
            .iter()
            .map(|k| {
                Op::ALL
                    .into_iter()
                    .find(|o| o.arg() == k.trim())
                    .with_context(|| {
                        format!("--kernels: unknown kernel {k:?} (vadd, matmul-f32, matmul-i8)")
                    })
            })
            .collect::<Result<_>>()?
    };
    let cases: Vec<Case> = ops
        .iter()
        .map(|&op| Case::new(op, if op == Op::Vadd { elements } else { size }))
        .collect::<Result<_>>()?;

    println!(
        "runegrid bench gpu on {} ({} cores)",
        std::env::consts::ARCH,
        cores()
    );
    let gpu = Gpu::open(OpenOptions {
        allow_software: true,
    })
    .context(
        "opening a GPU (a Vulkan adapter; Mesa's lavapipe: apt-get install mesa-vulkan-drivers)",
    )?;
    let info = gpu.info().clone();
    println!(
        "adapter: {} ({}, {}, driver {}{}), {}",
        info.name,
        info.backend,
        info.device_type,
        info.driver,
        if info.driver_info.is_empty() {
            String::new()
        } else {
            format!(" {}", info.driver_info)
        },
        if info.software {
            "a software adapter"
        } else {
            "hardware"
        }
    );
    if info.software {
        println!(
            "note: a software adapter (lavapipe/SwiftShader) runs kernels on this machine's CPU cores: every \"GPU\" figure below is a CPU figure"
        );
    }
    println!(
        "int8 matmul: WGSL's dot4I8Packed (naga emits SPIR-V's OpSDot, or shifts where the driver lacks it)"
    );

    // Local: the GPU, then the sandbox.
    let mut figures: Vec<Figures> = Vec::new();
    let mut outputs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let sandbox = Sandbox::new().map_err(|e| anyhow::anyhow!("sandbox: {e}"))?;
    let module = runegrid_instrument::instrument(
        runegrid_examples::LINALG,
        &runegrid_instrument::Options::default(),
    )
    .map_err(|e| anyhow::anyhow!("instrumenting linalg: {e}"))?
    .bytes;
    let program = sandbox
        .compile(&module)
        .map_err(|e| anyhow::anyhow!("compiling linalg: {e}"))?;
    for case in &cases {
        eprintln!("local: {} {}", case.op.label(), case.size());
        let (took, gpu_out) = local_gpu(&gpu, &case.kernel, case, runs)?;
        let one_group = Kernel {
            dispatches: vec![[1, 1, 1]],
            ..case.kernel.clone()
        };
        let (fixed, _) = local_gpu(&gpu, &one_group, case, runs)?;
        let (cpu_took, cpu_out) = local_cpu(&sandbox, &program, case)?;
        let check = compare(case.op, "local GPU vs sandbox", &gpu_out, &cpu_out)?;
        figures.push(Figures {
            local_gpu: f64::from(runs) / took.as_secs_f64(),
            fixed_ms: fixed.as_secs_f64() * 1e3 / f64::from(runs),
            local_cpu: 1.0 / cpu_took.as_secs_f64(),
            check,
            ..Figures::default()
        });
        outputs.push((gpu_out, cpu_out));
    }
    drop(gpu);

    // The grid: one coordinator, one worker with the GPU.
    let mut grid = LocalGrid::start_with(a.dir.clone(), &["--free", "--cache-bytes", "0"]).await?;
    grid.spawn_worker("gpu-1", slots, &["--gpu"])?;
    grid.wait_for_workers(1).await?;
    let client = grid.client();
    let worker = client
        .workers()
        .await?
        .into_iter()
        .find(|w| w.connected)
        .context("no worker")?;
    let worker_gpu = worker
        .capabilities
        .get("gpu")
        .and_then(|g| g["name"].as_str().map(str::to_owned))
        .context("the worker advertises no GPU")?;
    let linalg = client
        .upload_program(runegrid_examples::LINALG.to_vec())
        .await?
        .program;
    let gpu_job = |op: Op| GpuJob {
        verify: Some(if op.exact() { "exact" } else { "homogeneous" }.into()),
        allow_software: info.software,
    };
    for ((case, f), (gpu_out, cpu_out)) in cases.iter().zip(&mut figures).zip(&outputs) {
        eprintln!("grid: {} {}", case.op.label(), case.size());
        let blobs = BTreeMap::from([
            (
                "a".to_string(),
                client.upload_blob(case.a.clone()).await?.sha256,
            ),
            (
                "b".to_string(),
                client.upload_blob(case.b.clone()).await?.sha256,
            ),
        ]);
        let kernel = client.upload_program(case.kernel.to_json()).await?.program;
        // Warm-ups: the worker fetches the program and the blobs.
        grid_job(&client, &kernel, case, &blobs, 1, Some(gpu_job(case.op))).await?;
        let (took, _, job) = grid_job(
            &client,
            &kernel,
            case,
            &blobs,
            tasks,
            Some(gpu_job(case.op)),
        )
        .await?;
        f.grid_gpu = f64::from(tasks) / took.as_secs_f64();
        let grid_gpu_out = client.task_file(job, 0, "c").await?;
        compare(case.op, "grid GPU vs local GPU", &grid_gpu_out, gpu_out)?;
        grid_job(&client, &linalg, case, &blobs, 1, None).await?;
        let (took, _, job) = grid_job(&client, &linalg, case, &blobs, tasks, None).await?;
        f.grid_cpu = f64::from(tasks) / took.as_secs_f64();
        let grid_cpu_out = client.task_file(job, 0, "c").await?;
        if grid_cpu_out != *cpu_out {
            bail!(
                "{}: the grid's WASI output differs from the sandbox's",
                case.op.label()
            );
        }
        compare(
            case.op,
            "grid GPU vs grid CPU",
            &grid_gpu_out,
            &grid_cpu_out,
        )?;
    }

    println!(
        "grid: 1 coordinator, 1 worker (--gpu: {worker_gpu}; {slots} slots for WASI, GPU tasks one at a time) on loopback; \
         one job of {tasks} tasks per row, 1 replica each (policy none; verify exact for the int kernels, homogeneous for f32), \
         inputs: 2 blobs uploaded once and mounted by every task; local GPU: {runs} runs after a warm-up"
    );
    println!();
    println!(
        "{:<15} {:>9} | {:>8} {:>14} | {:>8} {:>14} {:>6} | {:>8} {:>14} {:>7} | {:>8}",
        "kernel",
        "size",
        "local/s",
        "local GPU",
        "grid/s",
        "grid GPU",
        "÷local",
        "CPU/s",
        "grid CPU WASI",
        "GPU÷CPU",
        "fixed"
    );
    for (case, f) in cases.iter().zip(&figures) {
        println!(
            "{:<15} {:>9} | {:>8.1} {:>14} | {:>8.1} {:>14} {:>5.2}x | {:>8.2} {:>14} {:>6.2}x | {:>5.1} ms",
            case.op.label(),
            case.size(),
            f.local_gpu,
            case.rate(f.local_gpu),
            f.grid_gpu,
            case.rate(f.grid_gpu),
            f.grid_gpu / f.local_gpu,
            f.grid_cpu,
            case.rate(f.grid_cpu),
            f.grid_gpu / f.grid_cpu,
            f.fixed_ms
        );
    }
    println!();
    println!(
        "local/s: runs/s of the kernel with wgpu in this process (each run: shader module, pipeline, buffers, dispatch, read back);"
    );
    println!(
        "grid/s, CPU/s: tasks/s of one job through the grid (submission to the last result); \
         fixed: a local GPU run of the same kernel and buffers dispatching one workgroup (all but the compute; \
         a driver's own shader cache, such as Mesa's on disk, counts in)"
    );
    println!(
        "checked: every task's output, the local runs' and the sandbox's (GPU: local = grid; CPU: sandbox = grid):"
    );
    for (case, f) in cases.iter().zip(&figures) {
        println!(
            "{}: GPU = CPU: {}; sandbox, 1 core: {:.2} runs/s = {}; grid minus local per GPU task: {:+.1} ms",
            case.op.label(),
            f.check,
            f.local_cpu,
            case.rate(f.local_cpu),
            (1.0 / f.grid_gpu - 1.0 / f.local_gpu) * 1e3
        );
    }
    Ok(0)
}
