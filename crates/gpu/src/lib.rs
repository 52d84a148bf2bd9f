//! GPU tasks: WGSL compute kernels, checked with naga at upload and run with wgpu on a
//! worker's GPU (Vulkan, Metal, DX12; the browser engine runs the same kernels with WebGPU).
//!
//! - [`kernel`]: what a GPU task is — a [`Kernel`] (WGSL, entry point, buffers with their
//!   roles, dispatches) and the [`GpuLimits`] on it.
//! - [`validate`]: upload-time checks ([`check`]), a task's inputs against its kernel
//!   ([`check_inputs`]), and the deterministic size of a run ([`Checked::work`]). Pure, no
//!   GPU.
//! - [`bindings`]: a kernel's buffers read off its WGSL ([`kernel_from_wgsl`]).
//! - [`guard`](mod@guard): the upload-time rewrite: every loop bounded, so that a kernel that loops for
//!   ever stops deterministically, and every index clamped with [`bounds`].
//! - [`bounds`]: the rewrite that clamps every array, vector and matrix index into bounds, so
//!   that an out-of-bounds access reads and writes the same element on every GPU (WGSL lets
//!   each implementation choose).
//! - [`device`]: adapter discovery ([`adapters`], [`AdapterInfo`]) and runs ([`Gpu::run`]; a
//!   [`Gpu`] keeps the kernels it compiled lately).
//!
//! A run's result is the final bytes of its `output` and `inout` buffers. Integer kernels give
//! the same bytes on every GPU; float kernels may not (WGSL allows fused multiply-add,
//! reassociation, flushing subnormals and loose transcendentals), which is what
//! `runegrid_core::tolerance` is for.

pub mod bindings;
pub mod bounds;
#[cfg(feature = "device")]
pub mod device;
pub mod guard;
pub mod kernel;
pub mod validate;

pub use bindings::kernel_from_wgsl;
pub use bounds::{BoundsError, clamp_indices};
#[cfg(feature = "device")]
pub use device::{AdapterInfo, Gpu, GpuError, OpenOptions, adapters};
pub use guard::{DEFAULT_LOOP_BUDGET, MAX_LOOP_BUDGET, STATUS_BUFFER, guard, split_status};
pub use kernel::{Buffer, GpuLimits, Kernel, Role};
pub use validate::{
    Checked, KernelError, check, check_guarded, check_input_sizes, check_inputs, parse,
};
