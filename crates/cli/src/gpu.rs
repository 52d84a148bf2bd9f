//! `runegrid gpu`: one WGSL compute kernel run on the grid's GPUs, its output buffers written
//! to files.

use crate::commands::{CheckArgs, Conn};
use anyhow::{Context, Result, bail};
use base64::Engine as _;
use clap::Args;
use runegrid_proto::{GpuJob, ResultState, SubmitJob, TaskSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

#[derive(Args)]
pub struct GpuArgs {
    /// The WGSL file; its buffers are named after its variables.
    pub shader: PathBuf,
    /// Fill the shader's buffer NAME from FILE: a `var<storage, read>`, a `var<uniform>`, or a
    /// `var<storage, read_write>` updated in place and returned. Repeat for each.
    #[arg(long = "buffer", value_name = "NAME=FILE")]
    pub buffers: Vec<String>,
    /// Return the shader's `var<storage, read_write>` buffer NAME, BYTES long (a multiple of
    /// 4), zero-filled before the first dispatch. Repeat for each.
    #[arg(long = "output", value_name = "NAME:BYTES")]
    pub outputs: Vec<String>,
    /// Workgroup counts of a dispatch: X, X,Y or X,Y,Z. Repeat for several dispatches, run in
    /// order over the same buffers.
    #[arg(long = "dispatch", value_name = "X[,Y,Z]", required = true)]
    pub dispatches: Vec<String>,
    /// The `@compute` entry point.
    #[arg(long, default_value = "main")]
    pub entry_point: String,
    /// How replicas are compared: exact (equal bytes, the default), homogeneous (equal bytes,
    /// replicas only on one adapter class and driver: for float kernels).
    #[arg(long)]
    pub verify: Option<String>,
    /// Let software adapters (lavapipe, SwiftShader) run it.
    #[arg(long)]
    pub allow_software: bool,
    /// Loop iterations each invocation may run, over all its loops (default 60000); past it the
    /// run ends out of fuel.
    #[arg(long)]
    pub loop_budget: Option<u32>,
    #[command(flatten)]
    pub check: CheckArgs,
    /// Where the output buffers are written: DIR/NAME.bin.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
    /// Print the task's result as JSON instead.
    #[arg(long)]
    pub json: bool,
}

fn dispatch(s: &str) -> Result<[u32; 3]> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    if parts.is_empty() || parts.len() > 3 {
        bail!("--dispatch {s:?}: expected X, X,Y or X,Y,Z");
    }
    let mut d = [1u32; 3];
    for (i, p) in parts.iter().enumerate() {
        d[i] = p
            .parse()
            .with_context(|| format!("--dispatch {s:?}: {p:?} is not a workgroup count"))?;
    }
    Ok(d)
}

pub async fn gpu(conn: &Conn, a: GpuArgs) -> Result<i32> {
    let shader = std::fs::read_to_string(&a.shader)
        .with_context(|| format!("reading {}", a.shader.display()))?;
    let mut inputs = BTreeMap::new();
    for b in &a.buffers {
        let (name, file) = b
            .split_once('=')
            .with_context(|| format!("--buffer {b:?}: expected NAME=FILE"))?;
        let bytes = std::fs::read(file).with_context(|| format!("reading {file}"))?;
        inputs.insert(name.to_string(), bytes);
    }
    let mut outputs = BTreeMap::new();
    for o in &a.outputs {
        let (name, size) = o
            .split_once(':')
            .with_context(|| format!("--output {o:?}: expected NAME:BYTES"))?;
        let size = crate::commands::parse_bytes(size).map_err(anyhow::Error::msg)?;
        outputs.insert(name.to_string(), size);
    }
    let dispatches = a
        .dispatches
        .iter()
        .map(|d| dispatch(d))
        .collect::<Result<Vec<_>>>()?;
    let names: BTreeSet<String> = inputs.keys().cloned().collect();
    let mut kernel =
        runegrid_gpu::kernel_from_wgsl(&shader, &a.entry_point, &names, &outputs, dispatches)
            .map_err(|e| anyhow::anyhow!("{}: {e}", a.shader.display()))?;
    kernel.loop_budget = a.loop_budget;
    runegrid_gpu::check(&kernel, &runegrid_gpu::GpuLimits::default())
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.shader.display()))?;

    let client = conn.client()?;
    let program = client.upload_program(kernel.to_json()).await?.program;
    let b64 = base64::engine::general_purpose::STANDARD;
    let job = SubmitJob {
        program,
        name: Some(
            a.shader
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
        tasks: vec![TaskSpec {
            buffers: inputs
                .iter()
                .map(|(k, v)| (k.clone(), b64.encode(v)))
                .collect(),
            ..TaskSpec::default()
        }],
        policy: a.check.policy,
        replicas: a.check.replicas,
        agree: a.check.agree,
        max_attempts: a.check.max_attempts,
        limits: Default::default(),
        blobs: Default::default(),
        max_price: None,
        seed: None,
        cache: None,
        gpu: Some(GpuJob {
            verify: a.verify.clone(),
            allow_software: a.allow_software,
        }),
    };
    job.resolved_policy().map_err(anyhow::Error::msg)?;
    let results = crate::call::submit_and_wait(&client, &job).await?;
    let task = results
        .tasks
        .first()
        .context("the coordinator returned no task")?;
    if a.json {
        println!("{}", serde_json::to_string(task)?);
    }
    if task.state != ResultState::Verified {
        let why = task
            .error
            .clone()
            .or_else(|| task.status.map(|s| s.code()))
            .unwrap_or_else(|| format!("{:?}", task.state));
        eprintln!("error: the kernel did not run to a verified result: {why}");
        return Ok(3);
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    for f in &task.files {
        let bytes = client.task_file(results.job, task.index, &f.path).await?;
        let path = a.out.join(format!("{}.bin", f.path));
        std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        if !a.json {
            println!("{}: {} bytes -> {}", f.path, f.size, path.display());
        }
    }
    if !a.json {
        let how = task.acceptance.map(|a| a.as_str()).unwrap_or("-");
        println!(
            "verified ({how}, {} attempts); work {}",
            task.attempts,
            task.fuel.unwrap_or(0)
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::dispatch;

    #[test]
    fn dispatches_parse() {
        assert_eq!(dispatch("4").unwrap(), [4, 1, 1]);
        assert_eq!(dispatch("4, 2").unwrap(), [4, 2, 1]);
        assert_eq!(dispatch("4,2,3").unwrap(), [4, 2, 3]);
        assert!(dispatch("4,2,3,1").is_err());
        assert!(dispatch("x").is_err());
        assert!(dispatch("").is_err());
    }
}
