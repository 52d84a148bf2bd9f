//! Checking a kernel at upload, and a task's inputs against it, with naga: no GPU needed.
//!
//! A kernel is accepted when its WGSL parses and validates, it has a `@compute` entry point of
//! the given name, the resources that entry point uses are exactly its declared buffers (same
//! group and binding; `input` is `var<storage, read>`, `uniform` is `var<uniform>`, `output`
//! and `inout` are `var<storage, read_write>`; no textures or samplers), and its sizes and
//! dispatches are within the [`GpuLimits`].
//!
//! # Work
//!
//! GPU work is not metered by fuel. Its deterministic size is [`Checked::work`]: the number of
//! invocations of all dispatches times the entry point's *static cost*, the number of
//! statements and expressions of the entry point and of every function it may call (each
//! counted once). Loops are not unrolled: the measure is a price basis, known before the
//! kernel runs and the same on every GPU.
//!
//! The coordinator measures the kernel it stores, after [`crate::guard()`] rewrote it (loop
//! guards, index clamps): the price of what runs, clamps included. The rewrite is a function
//! of the uploaded kernel alone, so the same upload always gets the same work, and the
//! coordinator writes it into the stored kernel ([`Kernel::work`]) so that workers (and the
//! browser, which has no naga) charge that number rather than their own.
//!
//! # Buffer sizes
//!
//! A buffer holds at least its shader type's size ([`Checked::min_bytes`]), in which a
//! runtime-sized array (`array<T>`, alone or as a struct's last member) counts one element:
//! `arrayLength` is never 0, which the index clamps of [`crate::bounds`] rely on
//! (`min(i, arrayLength - 1)` would wrap). WebGPU's minimum binding size is the same rule, so
//! the browser engine refuses smaller buffers too.

use crate::guard::{MAX_LOOP_BUDGET, RESERVED_PREFIX, STATUS_BUFFER};
use crate::kernel::{GpuLimits, Kernel, Role};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use naga::{AddressSpace, Block, Statement, StorageAccess};
use std::collections::{BTreeMap, BTreeSet};

/// The largest workgroup count of a dispatch along one dimension (WebGPU's default limit).
pub const MAX_WORKGROUPS_PER_DIMENSION: u32 = 65_535;

/// WebGPU's default limits that a kernel must stay within: every WebGPU adapter, and every
/// adapter wgpu opens, offers at least these, so every GPU worker can run every accepted
/// kernel and the scheduler needs no per-adapter matching. (Adapters with more are not asked
/// for it: a kernel that needs more would run on some GPUs only.)
pub mod webgpu {
    /// `maxComputeWorkgroupSizeX`, `Y` and `Z`.
    pub const WORKGROUP_SIZE: [u32; 3] = [256, 256, 64];
    /// `maxComputeInvocationsPerWorkgroup`.
    pub const INVOCATIONS_PER_WORKGROUP: u32 = 256;
    /// `maxStorageBuffersPerShaderStage`.
    pub const STORAGE_BUFFERS: usize = 8;
    /// `maxUniformBuffersPerShaderStage`.
    pub const UNIFORM_BUFFERS: usize = 12;
    /// `maxUniformBufferBindingSize`.
    pub const UNIFORM_BYTES: u64 = 64 << 10;
    /// `maxComputeWorkgroupStorageSize`.
    pub const WORKGROUP_STORAGE_BYTES: u64 = 16 << 10;
}

/// Why a kernel or a task's inputs were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error("the kernel is not valid JSON: {0}")]
    Json(String),
    #[error("the WGSL does not parse:\n{0}")]
    Parse(String),
    #[error("the WGSL is not valid:\n{0}")]
    Invalid(String),
    #[error("the shader has no entry point named {0:?}")]
    NoEntryPoint(String),
    #[error("entry point {0:?} is not a @compute entry point")]
    NotCompute(String),
    #[error(
        "buffer name {0:?} is not valid (letters, digits, '_', '-', '.'; 1 to 64 bytes; not starting with __runegrid)"
    )]
    Name(String),
    #[error("buffer {0:?} is declared twice")]
    DuplicateName(String),
    #[error("@group({group}) @binding({binding}) is declared twice")]
    DuplicateBinding { group: u32, binding: u32 },
    #[error("the entry point uses @group({group}) @binding({binding}), which no buffer declares")]
    Undeclared { group: u32, binding: u32 },
    #[error("buffer {0:?} is not used by the entry point (or not a global of the shader)")]
    Unused(String),
    #[error("buffer {name:?} is declared as {role} but the shader binds {found}")]
    Mismatch {
        name: String,
        role: &'static str,
        found: String,
    },
    #[error("output buffer {name:?} needs a size: a multiple of 4 from 4 to {limit} bytes")]
    OutputSize { name: String, limit: u64 },
    #[error(
        "buffer {name:?} has a size, but only output buffers do (the others take their input's)"
    )]
    SizeGiven { name: String },
    #[error("buffer {name:?} is {size} bytes, below the {min} bytes its shader type needs")]
    TooSmall { name: String, size: u64, min: u64 },
    #[error("buffer {name:?} is {size} bytes, above the limit of {limit}")]
    TooLarge { name: String, size: u64, limit: u64 },
    #[error("the buffers come to {size} bytes, above the limit of {limit}")]
    TotalTooLarge { size: u64, limit: u64 },
    #[error("a kernel needs 1 to {limit} dispatches, not {count}")]
    Dispatches { count: usize, limit: u32 },
    #[error(
        "dispatch {index} is {counts:?} workgroups: each count must be 1 to {MAX_WORKGROUPS_PER_DIMENSION}"
    )]
    Workgroups { index: usize, counts: [u32; 3] },
    #[error("the dispatches come to {count} workgroups, above the limit of {limit}")]
    TooManyWorkgroups { count: u64, limit: u64 },
    #[error("input {name:?} is {size} bytes: buffers are a multiple of 4 bytes")]
    Unaligned { name: String, size: u64 },
    #[error("loop_budget {0} is out of range (1..={MAX_LOOP_BUDGET})")]
    LoopBudget(u32),
    #[error("{0}")]
    Named(String),
    #[error("input {0:?} is missing")]
    MissingInput(String),
    #[error("input {0:?} is not a buffer the kernel fills from its inputs")]
    UnknownInput(String),
    #[error(transparent)]
    Bounds(#[from] crate::bounds::BoundsError),
    #[error(
        "@workgroup_size{size:?} is above WebGPU's default limits (x, y <= 256, z <= 64, at most 256 invocations), which every GPU worker offers"
    )]
    WorkgroupSize { size: [u32; 3] },
    #[error(
        "the kernel uses {count} {kind} buffers{note}; at most {limit} (WebGPU's default limit, which every GPU worker offers)"
    )]
    TooManyBuffers {
        kind: &'static str,
        count: usize,
        limit: usize,
        note: &'static str,
    },
    #[error(
        "the kernel's var<workgroup> variables take {bytes} bytes; at most {limit} (WebGPU's default limit)"
    )]
    WorkgroupStorage { bytes: u64, limit: u64 },
    #[error("uniform {name:?} is {size} bytes; a uniform buffer is at most {limit} bytes")]
    UniformTooLarge { name: String, size: u64, limit: u64 },
}

/// What validating a kernel found out about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// `@workgroup_size` of the entry point.
    pub workgroup_size: [u32; 3],
    /// Statements and expressions of the entry point and every function it may call.
    pub static_cost: u64,
    /// The least bytes each buffer needs (its shader type's size, a runtime-sized array
    /// counting one element), in declaration order.
    pub min_bytes: Vec<u64>,
}

impl Checked {
    /// Invocations of all dispatches of `kernel`.
    pub fn invocations(&self, kernel: &Kernel) -> u64 {
        let per_group: u64 = self.workgroup_size.iter().map(|&n| u64::from(n)).product();
        kernel
            .dispatches
            .iter()
            .map(|d| d.iter().map(|&n| u64::from(n)).product::<u64>())
            .fold(0u64, |sum, groups| {
                sum.saturating_add(groups.saturating_mul(per_group))
            })
    }

    /// The deterministic size of a run of `kernel` (see "Work" in the module documentation).
    pub fn work(&self, kernel: &Kernel) -> u64 {
        self.invocations(kernel).saturating_mul(self.static_cost)
    }
}

/// Parses and checks a kernel's JSON.
pub fn parse(json: &[u8], limits: &GpuLimits) -> Result<(Kernel, Checked), KernelError> {
    let kernel = Kernel::from_json(json).map_err(|e| KernelError::Json(e.to_string()))?;
    let checked = check(&kernel, limits)?;
    Ok((kernel, checked))
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Checks a kernel as uploaded (see the module documentation); names starting with
/// [`RESERVED_PREFIX`] are refused.
pub fn check(kernel: &Kernel, limits: &GpuLimits) -> Result<Checked, KernelError> {
    check_with(kernel, limits, false)
}

/// Checks a kernel as [`crate::guard()`] made it: like [`check`], with its status buffer.
pub fn check_guarded(kernel: &Kernel, limits: &GpuLimits) -> Result<Checked, KernelError> {
    check_with(kernel, limits, true)
}

fn check_with(kernel: &Kernel, limits: &GpuLimits, guarded: bool) -> Result<Checked, KernelError> {
    let mut names = BTreeSet::new();
    let mut bindings = BTreeMap::new();
    for (i, b) in kernel.buffers.iter().enumerate() {
        let status = guarded && b.name == STATUS_BUFFER && b.role == Role::Output;
        if !valid_name(&b.name) || (b.name.starts_with(RESERVED_PREFIX) && !status) {
            return Err(KernelError::Name(b.name.clone()));
        }
        if !names.insert(b.name.as_str()) {
            return Err(KernelError::DuplicateName(b.name.clone()));
        }
        if bindings.insert((b.group, b.binding), i).is_some() {
            return Err(KernelError::DuplicateBinding {
                group: b.group,
                binding: b.binding,
            });
        }
        match (b.role, b.size) {
            (Role::Output, Some(size)) if size >= 4 && size % 4 == 0 => {
                if size > limits.buffer_bytes {
                    return Err(KernelError::TooLarge {
                        name: b.name.clone(),
                        size,
                        limit: limits.buffer_bytes,
                    });
                }
            }
            (Role::Output, _) => {
                return Err(KernelError::OutputSize {
                    name: b.name.clone(),
                    limit: limits.buffer_bytes,
                });
            }
            (_, Some(_)) => {
                return Err(KernelError::SizeGiven {
                    name: b.name.clone(),
                });
            }
            (_, None) => {}
        }
    }
    if let Some(budget) = kernel.loop_budget
        && !(1..=MAX_LOOP_BUDGET).contains(&budget)
    {
        return Err(KernelError::LoopBudget(budget));
    }
    let count = kernel.dispatches.len();
    if count == 0 || count > limits.dispatches as usize {
        return Err(KernelError::Dispatches {
            count,
            limit: limits.dispatches,
        });
    }
    let mut groups: u64 = 0;
    for (index, d) in kernel.dispatches.iter().enumerate() {
        if d.iter()
            .any(|&n| n == 0 || n > MAX_WORKGROUPS_PER_DIMENSION)
        {
            return Err(KernelError::Workgroups { index, counts: *d });
        }
        groups = groups.saturating_add(d.iter().map(|&n| u64::from(n)).product());
    }
    if groups > limits.workgroups {
        return Err(KernelError::TooManyWorkgroups {
            count: groups,
            limit: limits.workgroups,
        });
    }
    let outputs: u64 = kernel.buffers.iter().filter_map(|b| b.size).sum();
    if outputs > limits.total_bytes {
        return Err(KernelError::TotalTooLarge {
            size: outputs,
            limit: limits.total_bytes,
        });
    }

    let module = naga::front::wgsl::parse_str(&kernel.shader)
        .map_err(|e| KernelError::Parse(e.emit_to_string(&kernel.shader)))?;
    let info = Validator::new(ValidationFlags::all(), Capabilities::default())
        .validate(&module)
        .map_err(|e| KernelError::Invalid(e.emit_to_string(&kernel.shader)))?;
    let (index, entry) = module
        .entry_points
        .iter()
        .enumerate()
        .find(|(_, e)| e.name == kernel.entry_point)
        .ok_or_else(|| KernelError::NoEntryPoint(kernel.entry_point.clone()))?;
    if entry.stage != naga::ShaderStage::Compute {
        return Err(KernelError::NotCompute(kernel.entry_point.clone()));
    }
    let uses = info.get_entry_point(index);

    let mut min_bytes = vec![0u64; kernel.buffers.len()];
    let mut used = vec![false; kernel.buffers.len()];
    for (handle, var) in module.global_variables.iter() {
        if uses[handle].is_empty() {
            continue;
        }
        let Some(rb) = &var.binding else { continue };
        let Some(&i) = bindings.get(&(rb.group, rb.binding)) else {
            return Err(KernelError::Undeclared {
                group: rb.group,
                binding: rb.binding,
            });
        };
        let b = &kernel.buffers[i];
        let fits = match (b.role, var.space) {
            (Role::Uniform, AddressSpace::Uniform) => true,
            (Role::Input, AddressSpace::Storage { access }) => {
                !access.contains(StorageAccess::STORE)
            }
            (Role::Output | Role::Inout, AddressSpace::Storage { access }) => {
                access.contains(StorageAccess::STORE)
            }
            _ => false,
        };
        if !fits {
            return Err(KernelError::Mismatch {
                name: b.name.clone(),
                role: role_name(b.role),
                found: space_name(var.space),
            });
        }
        used[i] = true;
        min_bytes[i] = u64::from(
            module.types[var.ty]
                .inner
                .try_size(module.to_ctx())
                .unwrap_or(u32::MAX),
        );
        if let Some(size) = b.size
            && size < min_bytes[i]
        {
            return Err(KernelError::TooSmall {
                name: b.name.clone(),
                size,
                min: min_bytes[i],
            });
        }
    }
    if let Some(i) = used.iter().position(|u| !u) {
        return Err(KernelError::Unused(kernel.buffers[i].name.clone()));
    }
    within_webgpu_limits(kernel, &module, entry, guarded)?;

    Ok(Checked {
        workgroup_size: entry.workgroup_size,
        static_cost: static_cost(&module, &entry.function),
        min_bytes,
    })
}

/// The kernel against WebGPU's default limits ([`webgpu`]).
fn within_webgpu_limits(
    kernel: &Kernel,
    module: &naga::Module,
    entry: &naga::EntryPoint,
    guarded: bool,
) -> Result<(), KernelError> {
    let size = entry.workgroup_size;
    let invocations: u64 = size.iter().map(|&n| u64::from(n)).product();
    if size
        .iter()
        .zip(webgpu::WORKGROUP_SIZE)
        .any(|(&n, max)| n > max)
        || invocations > u64::from(webgpu::INVOCATIONS_PER_WORKGROUP)
    {
        return Err(KernelError::WorkgroupSize { size });
    }
    let uniforms = kernel
        .buffers
        .iter()
        .filter(|b| b.role == Role::Uniform)
        .count();
    let storage = kernel.buffers.len() - uniforms;
    let has_status = guarded && kernel.buffers.iter().any(|b| b.name == STATUS_BUFFER);
    if storage > webgpu::STORAGE_BUFFERS {
        return Err(KernelError::TooManyBuffers {
            kind: "storage",
            count: storage,
            limit: webgpu::STORAGE_BUFFERS,
            note: if has_status {
                " (one of them the status buffer runegrid adds to a kernel with loops)"
            } else {
                ""
            },
        });
    }
    if uniforms > webgpu::UNIFORM_BUFFERS {
        return Err(KernelError::TooManyBuffers {
            kind: "uniform",
            count: uniforms,
            limit: webgpu::UNIFORM_BUFFERS,
            note: "",
        });
    }
    let bytes: u64 = module
        .global_variables
        .iter()
        .filter(|(_, v)| v.space == AddressSpace::WorkGroup)
        .map(|(_, v)| {
            u64::from(
                module.types[v.ty]
                    .inner
                    .try_size(module.to_ctx())
                    .unwrap_or(u32::MAX),
            )
        })
        .sum();
    if bytes > webgpu::WORKGROUP_STORAGE_BYTES {
        return Err(KernelError::WorkgroupStorage {
            bytes,
            limit: webgpu::WORKGROUP_STORAGE_BYTES,
        });
    }
    Ok(())
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Input => "input (var<storage, read>)",
        Role::Uniform => "uniform (var<uniform>)",
        Role::Output => "output (var<storage, read_write>)",
        Role::Inout => "inout (var<storage, read_write>)",
    }
}

fn space_name(space: AddressSpace) -> String {
    match space {
        AddressSpace::Uniform => "var<uniform>".into(),
        AddressSpace::Storage { access } if access.contains(StorageAccess::STORE) => {
            "var<storage, read_write>".into()
        }
        AddressSpace::Storage { .. } => "var<storage, read>".into(),
        AddressSpace::Handle => "a texture or sampler (not supported)".into(),
        other => format!("{other:?}"),
    }
}

/// Statements and expressions of `entry` and of every function it may call, each once.
fn static_cost(module: &naga::Module, entry: &naga::Function) -> u64 {
    fn walk(block: &Block, count: &mut u64, calls: &mut Vec<naga::Handle<naga::Function>>) {
        for statement in block.iter() {
            *count += 1;
            match statement {
                Statement::Block(b) => walk(b, count, calls),
                Statement::If { accept, reject, .. } => {
                    walk(accept, count, calls);
                    walk(reject, count, calls);
                }
                Statement::Switch { cases, .. } => {
                    for case in cases {
                        walk(&case.body, count, calls);
                    }
                }
                Statement::Loop {
                    body, continuing, ..
                } => {
                    walk(body, count, calls);
                    walk(continuing, count, calls);
                }
                Statement::Call { function, .. } => calls.push(*function),
                _ => {}
            }
        }
    }
    let mut count = 0u64;
    let mut todo = Vec::new();
    count += entry.expressions.len() as u64;
    walk(&entry.body, &mut count, &mut todo);
    let mut seen = BTreeSet::new();
    while let Some(f) = todo.pop() {
        if !seen.insert(f) {
            continue;
        }
        let function = &module.functions[f];
        count += function.expressions.len() as u64;
        walk(&function.body, &mut count, &mut todo);
    }
    count.max(1)
}

/// Checks a task's inputs against its kernel: one for every `input`, `uniform` and `inout`
/// buffer and no other, each at least its shader type's size and within the limits.
pub fn check_inputs<B: AsRef<[u8]>>(
    kernel: &Kernel,
    checked: &Checked,
    inputs: &BTreeMap<String, B>,
    limits: &GpuLimits,
) -> Result<(), KernelError> {
    let sizes = inputs
        .iter()
        .map(|(k, v)| (k.clone(), v.as_ref().len() as u64))
        .collect();
    check_input_sizes(kernel, checked, &sizes, limits)
}

/// [`check_inputs`] from the inputs' sizes alone (a coordinator checks a submission without
/// reading the blobs it mounts as buffers).
pub fn check_input_sizes(
    kernel: &Kernel,
    checked: &Checked,
    inputs: &BTreeMap<String, u64>,
    limits: &GpuLimits,
) -> Result<(), KernelError> {
    for name in inputs.keys() {
        if !kernel
            .buffers
            .iter()
            .any(|b| b.role.is_supplied() && &b.name == name)
        {
            return Err(KernelError::UnknownInput(name.clone()));
        }
    }
    let mut total: u64 = 0;
    for (b, &min) in kernel.buffers.iter().zip(&checked.min_bytes) {
        let size = match b.size {
            Some(size) => size,
            None => {
                let size = *inputs
                    .get(&b.name)
                    .ok_or_else(|| KernelError::MissingInput(b.name.clone()))?;
                if !size.is_multiple_of(4) {
                    return Err(KernelError::Unaligned {
                        name: b.name.clone(),
                        size,
                    });
                }
                size
            }
        };
        if size < min {
            return Err(KernelError::TooSmall {
                name: b.name.clone(),
                size,
                min,
            });
        }
        if b.role == Role::Uniform && size > webgpu::UNIFORM_BYTES {
            return Err(KernelError::UniformTooLarge {
                name: b.name.clone(),
                size,
                limit: webgpu::UNIFORM_BYTES,
            });
        }
        if size > limits.buffer_bytes {
            return Err(KernelError::TooLarge {
                name: b.name.clone(),
                size,
                limit: limits.buffer_bytes,
            });
        }
        total = total.saturating_add(size);
    }
    if total > limits.total_bytes {
        return Err(KernelError::TotalTooLarge {
            size: total,
            limit: limits.total_bytes,
        });
    }
    Ok(())
}
