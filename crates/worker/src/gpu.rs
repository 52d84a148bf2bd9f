//! The worker's GPU: found at start, advertised to the coordinator, and running GPU tasks'
//! kernels one at a time (a second waits for the first).
//!
//! A kernel's run becomes an execution like a WASI task's: status `exit:0`, or `out_of_fuel`
//! when some invocation spent its loop budget (see `runegrid_gpu::guard`); no stdout; fuel =
//! the kernel's work; its output buffers as output files named after them. A run that passes
//! the task's wall time is abandoned (reported as such) and the device opened anew for the
//! next.

use runegrid_core::gpu::{GpuAdapter, decode_buffers};
use runegrid_core::{ExecStatus, Execution, OutputFile};
use runegrid_gpu::{Checked, Gpu, GpuError, GpuLimits, Kernel, OpenOptions};
use runegrid_proto::worker::Assign;
use runegrid_sandbox::{Blob, DoneSink, RunOutput, SandboxError};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Whether the worker looks for a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GpuMode {
    /// Use one if there is one (a software adapter included: the coordinator sends its tasks
    /// only to jobs that allow it).
    #[default]
    Auto,
    /// Fail to start without one.
    Require,
    /// Take no GPU tasks.
    Off,
}

/// A kernel as uploaded and guarded by the coordinator, checked again here.
pub struct KernelProgram {
    pub kernel: Kernel,
    pub checked: Checked,
    /// Its fuel: the `work` the coordinator wrote into it (computed here for a kernel stored
    /// before it did).
    pub work: u64,
}

impl KernelProgram {
    pub fn parse(bytes: &[u8]) -> Result<KernelProgram, SandboxError> {
        let kernel = Kernel::from_json(bytes)
            .map_err(|e| SandboxError::Compile(format!("not a kernel: {e}")))?;
        let checked = runegrid_gpu::check_guarded(&kernel, &GpuLimits::default())
            .map_err(|e| SandboxError::Compile(e.to_string()))?;
        let work = kernel.work.unwrap_or_else(|| checked.work(&kernel));
        Ok(KernelProgram {
            kernel,
            checked,
            work,
        })
    }
}

/// The GPU this worker runs kernels on.
pub struct Device {
    info: GpuAdapter,
    gpu: Mutex<Option<Gpu>>,
}

impl Device {
    /// Opens the machine's GPU as `mode` says: `None` for no GPU.
    pub fn open(mode: GpuMode) -> Result<Option<Arc<Device>>, String> {
        if mode == GpuMode::Off {
            return Ok(None);
        }
        match Gpu::open(OpenOptions {
            allow_software: true,
        }) {
            Ok(gpu) => {
                let info = gpu.info().clone();
                tracing::info!(adapter = %info.name, backend = %info.backend, driver = %info.driver, software = info.software, "GPU found");
                Ok(Some(Arc::new(Device {
                    info,
                    gpu: Mutex::new(Some(gpu)),
                })))
            }
            Err(e) if mode == GpuMode::Require => Err(e.to_string()),
            Err(e) => {
                tracing::info!(reason = %e, "no GPU: this worker takes no GPU tasks");
                Ok(None)
            }
        }
    }

    pub fn info(&self) -> &GpuAdapter {
        &self.info
    }

    /// Runs an attempt's kernel on its own thread and reports through `on_done`.
    pub fn spawn(
        self: &Arc<Self>,
        program: Arc<KernelProgram>,
        a: &Assign,
        blobs: &[Blob],
        on_done: DoneSink,
    ) {
        let device = self.clone();
        let stdin = a.stdin.clone();
        let wall_time_ms = a.limits.wall_time_ms;
        let mounted: Vec<(String, Arc<[u8]>)> = blobs
            .iter()
            .map(|b| (b.name.clone(), b.bytes.clone()))
            .collect();
        std::thread::spawn(move || {
            let result = device.run(&program, &stdin, mounted, wall_time_ms);
            on_done(result);
        });
    }

    fn run(
        &self,
        program: &KernelProgram,
        stdin: &[u8],
        mounted: Vec<(String, Arc<[u8]>)>,
        wall_time_ms: u64,
    ) -> Result<RunOutput, SandboxError> {
        let invalid = |e: String| SandboxError::InvalidTask(e);
        let mut inputs: BTreeMap<String, Vec<u8>> =
            decode_buffers(stdin).map_err(|e| invalid(e.to_string()))?;
        for (name, bytes) in mounted {
            inputs.insert(name, bytes.to_vec());
        }
        let limits = GpuLimits {
            wall_time_ms,
            ..GpuLimits::default()
        };
        let mut slot = self.gpu.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_none_or(Gpu::is_lost) {
            *slot = Some(
                Gpu::open(OpenOptions {
                    allow_software: true,
                })
                .map_err(|e| SandboxError::Internal(format!("cannot reopen the GPU: {e}")))?,
            );
        }
        let gpu = slot.as_ref().expect("opened above");
        let outputs = match gpu.run(&program.kernel, &program.checked, &inputs, &limits) {
            Ok(outputs) => outputs,
            Err(GpuError::Timeout(ms)) => {
                return Err(SandboxError::Timeout { wall_time_ms: ms });
            }
            Err(GpuError::Kernel(e)) => return Err(invalid(e.to_string())),
            Err(e) => return Err(SandboxError::Internal(e.to_string())),
        };
        drop(slot);
        let (exhausted, outputs) = runegrid_gpu::split_status(outputs);
        let files: Vec<OutputFile> = outputs
            .iter()
            .map(|(name, bytes)| OutputFile {
                path: name.clone(),
                size: bytes.len() as u64,
                sha256: hex::encode(Sha256::digest(bytes)),
            })
            .collect();
        Ok(RunOutput {
            execution: Execution {
                status: if exhausted {
                    ExecStatus::OutOfFuel
                } else {
                    ExecStatus::Exited { code: 0 }
                },
                stdout: Vec::new(),
                // The work the coordinator wrote into the kernel, as the browser engine reports.
                fuel: program.work,
                files,
            },
            stderr: if exhausted {
                b"the kernel's loop budget ran out: an invocation ran more loop iterations than its loop_budget allows".to_vec()
            } else {
                Vec::new()
            },
            files: outputs.into_iter().map(|(_, bytes)| bytes).collect(),
            memory_bytes: 0,
        })
    }
}
