//! Running kernels on a GPU with wgpu: the only module that touches one.

use crate::kernel::{GpuLimits, Kernel, Role};
use crate::validate::{Checked, KernelError, check_inputs};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// What a worker tells the coordinator about its GPU.
pub use runegrid_core::gpu::GpuAdapter as AdapterInfo;

fn adapter_info(adapter: &wgpu::Adapter) -> AdapterInfo {
    let info = adapter.get_info();
    let limits = adapter.limits();
    let device_type = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => "discrete",
        wgpu::DeviceType::IntegratedGpu => "integrated",
        wgpu::DeviceType::VirtualGpu => "virtual",
        wgpu::DeviceType::Cpu => "cpu",
        wgpu::DeviceType::Other => "other",
    };
    let mut features = Vec::new();
    if adapter.features().contains(wgpu::Features::SHADER_F16) {
        features.push("shader-f16".to_owned());
    }
    AdapterInfo {
        name: info.name,
        vendor: info.vendor,
        device: info.device,
        device_type: device_type.into(),
        backend: info.backend.to_str().into(),
        driver: info.driver,
        driver_info: info.driver_info,
        software: info.device_type == wgpu::DeviceType::Cpu,
        features,
        max_buffer_bytes: limits.max_buffer_size,
        max_storage_binding_bytes: limits.max_storage_buffer_binding_size,
        max_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
        max_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
    }
}

/// Why a GPU could not be opened or a run did not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU adapter found{0}")]
    NoAdapter(String),
    #[error("cannot open the GPU: {0}")]
    Open(String),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The GPU's own validation refused the kernel or its buffers (e.g. a buffer above the
    /// adapter's limits).
    #[error("the GPU refused the kernel: {0}")]
    Refused(String),
    #[error("the GPU ran out of memory: {0}")]
    OutOfMemory(String),
    #[error("the run did not finish within {0} ms")]
    Timeout(u64),
    /// The device was lost (a driver reset, or a run abandoned after its timeout): open a new
    /// one.
    #[error("the GPU device was lost: {0}")]
    Lost(String),
}

/// Which adapters [`Gpu::open`] may pick.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// Accept a software adapter when there is no hardware one.
    pub allow_software: bool,
}

/// One GPU device, opened once and used for many runs (one at a time).
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: AdapterInfo,
    lost: Arc<AtomicBool>,
}

/// The backends to look at: `WGPU_BACKEND` when set, else Vulkan, Metal and DX12.
fn backends() -> wgpu::Backends {
    wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY)
}

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: backends(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    })
}

/// Every adapter this machine offers, hardware first.
pub fn adapters() -> Vec<AdapterInfo> {
    let instance = instance();
    let mut all: Vec<AdapterInfo> = pollster::block_on(instance.enumerate_adapters(backends()))
        .iter()
        .map(adapter_info)
        .collect();
    all.sort_by_key(|a| a.software);
    all
}

impl Gpu {
    /// Opens the first hardware adapter, or a software one when `options` allow it.
    pub fn open(options: OpenOptions) -> Result<Gpu, GpuError> {
        let instance = instance();
        let mut found = pollster::block_on(instance.enumerate_adapters(backends()));
        found.sort_by_key(|a| a.get_info().device_type == wgpu::DeviceType::Cpu);
        let total = found.len();
        let adapter = found
            .into_iter()
            .find(|a| options.allow_software || a.get_info().device_type != wgpu::DeviceType::Cpu)
            .ok_or_else(|| {
                GpuError::NoAdapter(if total > 0 {
                    format!(" but {total} software one(s), which were not allowed")
                } else {
                    String::new()
                })
            })?;
        let info = adapter_info(&adapter);
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("runegrid"),
            required_features: wgpu::Features::empty(),
            required_limits: adapter.limits(),
            ..Default::default()
        }))
        .map_err(|e| GpuError::Open(e.to_string()))?;
        let lost = Arc::new(AtomicBool::new(false));
        let flag = lost.clone();
        device.set_device_lost_callback(move |_, _| flag.store(true, Ordering::SeqCst));
        Ok(Gpu {
            device,
            queue,
            info,
            lost,
        })
    }

    pub fn info(&self) -> &AdapterInfo {
        &self.info
    }

    /// Whether the device is gone (then open a new [`Gpu`]).
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Runs `kernel` (checked as `checked`) on `inputs`: its dispatches in order over the same
    /// buffers, then the final bytes of its `output` and `inout` buffers, in declaration order.
    pub fn run<B: AsRef<[u8]>>(
        &self,
        kernel: &Kernel,
        checked: &Checked,
        inputs: &BTreeMap<String, B>,
        limits: &GpuLimits,
    ) -> Result<Vec<(String, Vec<u8>)>, GpuError> {
        use wgpu::util::DeviceExt;
        if self.is_lost() {
            return Err(GpuError::Lost("lost before this run".into()));
        }
        check_inputs(kernel, checked, inputs, limits)?;
        let device = &self.device;
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);

        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("kernel"),
            source: wgpu::ShaderSource::Wgsl(kernel.shader.as_str().into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("kernel"),
            layout: None,
            module: &module,
            entry_point: Some(&kernel.entry_point),
            compilation_options: Default::default(),
            cache: None,
        });
        let buffers: Vec<wgpu::Buffer> = kernel
            .buffers
            .iter()
            .map(|b| {
                let usage = match b.role {
                    Role::Uniform => wgpu::BufferUsages::UNIFORM,
                    _ => wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                };
                match (b.size, inputs.get(&b.name)) {
                    (Some(size), _) => device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some(&b.name),
                        size,
                        usage,
                        mapped_at_creation: false,
                    }),
                    (None, bytes) => device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some(&b.name),
                        contents: bytes.map(AsRef::as_ref).unwrap_or_default(),
                        usage,
                    }),
                }
            })
            .collect();
        let groups: std::collections::BTreeSet<u32> =
            kernel.buffers.iter().map(|b| b.group).collect();
        let bind_groups: Vec<(u32, wgpu::BindGroup)> = groups
            .into_iter()
            .map(|group| {
                let entries: Vec<wgpu::BindGroupEntry<'_>> = kernel
                    .buffers
                    .iter()
                    .zip(&buffers)
                    .filter(|(b, _)| b.group == group)
                    .map(|(b, buffer)| wgpu::BindGroupEntry {
                        binding: b.binding,
                        resource: buffer.as_entire_binding(),
                    })
                    .collect();
                let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &pipeline.get_bind_group_layout(group),
                    entries: &entries,
                });
                (group, bind_group)
            })
            .collect();

        let mut encoder = device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            for (group, bind_group) in &bind_groups {
                pass.set_bind_group(*group, bind_group, &[]);
            }
            for [x, y, z] in &kernel.dispatches {
                pass.dispatch_workgroups(*x, *y, *z);
            }
        }
        let mut staging = Vec::new();
        for (b, buffer) in kernel.buffers.iter().zip(&buffers) {
            if !b.role.is_returned() {
                continue;
            }
            let read = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("read back"),
                size: buffer.size(),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            encoder.copy_buffer_to_buffer(buffer, 0, &read, 0, buffer.size());
            staging.push((b.name.clone(), read));
        }
        let submission = self.queue.submit([encoder.finish()]);
        if let Some(e) = pollster::block_on(validation.pop()) {
            return Err(GpuError::Refused(e.to_string()));
        }
        if let Some(e) = pollster::block_on(oom.pop()) {
            return Err(GpuError::OutOfMemory(e.to_string()));
        }

        let (tx, rx) = mpsc::channel();
        for (i, (_, read)) in staging.iter().enumerate() {
            let tx = tx.clone();
            read.slice(..)
                .map_async(wgpu::MapMode::Read, move |r| drop(tx.send((i, r))));
        }
        drop(tx);
        let timeout = Duration::from_millis(limits.wall_time_ms);
        match device.poll(wgpu::PollType::Wait {
            submission_index: Some(submission),
            timeout: Some(timeout),
        }) {
            Ok(_) => {}
            Err(wgpu::PollError::Timeout) => {
                // The GPU may still be running it: this device is not used again.
                self.lost.store(true, Ordering::SeqCst);
                return Err(GpuError::Timeout(limits.wall_time_ms));
            }
            Err(e) => {
                self.lost.store(true, Ordering::SeqCst);
                return Err(GpuError::Lost(e.to_string()));
            }
        }
        for _ in 0..staging.len() {
            match rx.recv_timeout(timeout) {
                Ok((_, Ok(()))) => {}
                Ok((_, Err(e))) => return Err(GpuError::Lost(e.to_string())),
                Err(_) => return Err(GpuError::Timeout(limits.wall_time_ms)),
            }
        }
        staging
            .into_iter()
            .map(|(name, read)| {
                let bytes = read
                    .slice(..)
                    .get_mapped_range()
                    .map_err(|e| GpuError::Lost(e.to_string()))?
                    .to_vec();
                read.unmap();
                Ok((name, bytes))
            })
            .collect()
    }
}
