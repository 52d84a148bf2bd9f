//! Running kernels on a GPU with wgpu: the only module that touches one.

use crate::kernel::{GpuLimits, Kernel, Role};
use crate::validate::{Checked, KernelError, check_inputs};
use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
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
    /// The kernels compiled lately: a grid sends a worker many tasks of the same kernel, and
    /// compiling one (WGSL to the driver's code) can cost more than running it.
    pipelines: Mutex<Lru<wgpu::ComputePipeline>>,
}

/// How many compiled kernels a [`Gpu`] keeps.
pub const PIPELINE_CACHE: usize = 16;

/// What a compiled kernel is looked up by: its WGSL and entry point, compared in full (the
/// hash only makes a mismatch quick to see), so two kernels never share a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PipelineKey {
    hash: u64,
    shader: String,
    entry_point: String,
}

impl PipelineKey {
    fn of(kernel: &Kernel) -> PipelineKey {
        let mut h = DefaultHasher::new();
        (&kernel.shader, &kernel.entry_point).hash(&mut h);
        PipelineKey {
            hash: h.finish(),
            shader: kernel.shader.clone(),
            entry_point: kernel.entry_point.clone(),
        }
    }
}

/// A small least-recently-used map: a handful of entries, so a scan beats a linked map.
#[derive(Debug)]
struct Lru<V> {
    capacity: usize,
    /// Least recently used first.
    entries: Vec<(PipelineKey, V)>,
}

impl<V: Clone> Lru<V> {
    fn new(capacity: usize) -> Self {
        Lru {
            capacity,
            entries: Vec::with_capacity(capacity),
        }
    }

    /// The value of `key`, which becomes the most recently used.
    fn get(&mut self, key: &PipelineKey) -> Option<V> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        let entry = self.entries.remove(i);
        let value = entry.1.clone();
        self.entries.push(entry);
        Some(value)
    }

    /// Adds `key`, dropping the least recently used entry when full.
    fn insert(&mut self, key: PipelineKey, value: V) {
        self.entries.retain(|(k, _)| k != &key);
        if self.entries.len() >= self.capacity {
            self.entries.remove(0);
        }
        self.entries.push((key, value));
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn clear(&mut self) {
        self.entries.clear();
    }
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
            pipelines: Mutex::new(Lru::new(PIPELINE_CACHE)),
        })
    }

    pub fn info(&self) -> &AdapterInfo {
        &self.info
    }

    /// Whether the device is gone (then open a new [`Gpu`]).
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// How many compiled kernels this GPU keeps now (at most [`PIPELINE_CACHE`]).
    pub fn cached_pipelines(&self) -> usize {
        self.cache().len()
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Lru<wgpu::ComputePipeline>> {
        // The cache is consistent between calls, so a panic elsewhere leaves it usable.
        self.pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the device lost, and drops what was compiled for it.
    fn lose(&self) {
        self.lost.store(true, Ordering::SeqCst);
        self.cache().clear();
    }

    /// `kernel`'s pipeline: compiled once, then kept (see [`PIPELINE_CACHE`]). A kernel the
    /// GPU refuses is not kept, so every run of it is refused with the same error.
    fn pipeline(&self, kernel: &Kernel) -> Result<wgpu::ComputePipeline, GpuError> {
        let key = PipelineKey::of(kernel);
        if let Some(pipeline) = self.cache().get(&key) {
            return Ok(pipeline);
        }
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
        if let Some(e) = pollster::block_on(validation.pop()) {
            return Err(GpuError::Refused(e.to_string()));
        }
        if let Some(e) = pollster::block_on(oom.pop()) {
            return Err(GpuError::OutOfMemory(e.to_string()));
        }
        // The pipeline keeps what it needs of the module.
        self.cache().insert(key, pipeline.clone());
        Ok(pipeline)
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
            self.cache().clear();
            return Err(GpuError::Lost("lost before this run".into()));
        }
        check_inputs(kernel, checked, inputs, limits)?;
        let pipeline = self.pipeline(kernel)?;
        let device = &self.device;
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);

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
                self.lose();
                return Err(GpuError::Timeout(limits.wall_time_ms));
            }
            Err(e) => {
                self.lose();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(shader: &str, entry_point: &str) -> PipelineKey {
        PipelineKey::of(&Kernel {
            shader: shader.into(),
            entry_point: entry_point.into(),
            buffers: vec![],
            dispatches: vec![],
            loop_budget: None,
            work: None,
        })
    }

    #[test]
    fn the_cache_keeps_the_most_recently_used() {
        let mut lru = Lru::new(3);
        for i in 0..3 {
            lru.insert(key(&format!("shader {i}"), "main"), i);
        }
        // Using 0 makes 1 the least recently used: it goes when 3 comes.
        assert_eq!(lru.get(&key("shader 0", "main")), Some(0));
        lru.insert(key("shader 3", "main"), 3);
        assert_eq!(lru.len(), 3);
        assert_eq!(lru.get(&key("shader 1", "main")), None);
        assert_eq!(lru.get(&key("shader 2", "main")), Some(2));
        // The entry point is part of the key; a second insert replaces.
        assert_eq!(lru.get(&key("shader 0", "other")), None);
        lru.insert(key("shader 0", "main"), 10);
        assert_eq!(lru.len(), 3);
        assert_eq!(lru.get(&key("shader 0", "main")), Some(10));
        lru.clear();
        assert_eq!(lru.get(&key("shader 0", "main")), None);
    }
}
