//! What a GPU task is: a WGSL compute kernel, its buffers and its dispatches.

use serde::{Deserialize, Serialize};

/// A WGSL compute kernel with the buffers it binds and the dispatches to run, in order, over
/// the same buffers. Uploaded once (its JSON is the program); each task supplies the bytes of
/// its `input`, `uniform` and `inout` buffers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    /// WGSL source.
    pub shader: String,
    /// The `@compute` entry point (default `main`).
    #[serde(default = "default_entry_point")]
    pub entry_point: String,
    /// Every resource the entry point uses, each once.
    pub buffers: Vec<Buffer>,
    /// Workgroup counts `[x, y, z]` of each dispatch, run in order.
    pub dispatches: Vec<[u32; 3]>,
    /// Loop iterations each invocation may run, over all its loops (default
    /// [`crate::guard::DEFAULT_LOOP_BUDGET`], at most [`crate::guard::MAX_LOOP_BUDGET`]):
    /// past it every loop breaks and the run ends `out_of_fuel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loop_budget: Option<u32>,
    /// Set by the coordinator on the kernel it stores and sends to workers: its work
    /// ([`crate::Checked::work`], a GPU task's fuel), so that an engine without naga (the
    /// browser's) reports the same fuel. Ignored in an upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work: Option<u64>,
}

fn default_entry_point() -> String {
    "main".into()
}

/// One buffer binding of a [`Kernel`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Buffer {
    /// The input the task supplies it from, or the output it is returned as: letters, digits,
    /// `_`, `-` and `.`, at most 64 bytes.
    pub name: String,
    /// `@group` (default 0).
    #[serde(default)]
    pub group: u32,
    /// `@binding`.
    pub binding: u32,
    pub role: Role,
    /// Bytes of an `output` buffer (a multiple of 4); not given for the other roles, whose
    /// size is their input's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// How a buffer is bound and where its bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// `var<storage, read>`, filled from the task's input of the same name.
    Input,
    /// `var<uniform>`, filled from the task's input of the same name.
    Uniform,
    /// `var<storage, read_write>`, zero-filled, `size` bytes; returned.
    Output,
    /// `var<storage, read_write>`, filled from the task's input of the same name; returned.
    Inout,
}

impl Role {
    /// Whether the task supplies the buffer's bytes.
    pub fn is_supplied(self) -> bool {
        !matches!(self, Role::Output)
    }

    /// Whether the buffer's final bytes are part of the result.
    pub fn is_returned(self) -> bool {
        matches!(self, Role::Output | Role::Inout)
    }
}

/// Bounds on a kernel and on one run of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuLimits {
    /// Bytes of any one buffer.
    pub buffer_bytes: u64,
    /// Bytes of all buffers of a run together.
    pub total_bytes: u64,
    /// Dispatches per run.
    pub dispatches: u32,
    /// Workgroups of all dispatches of a run together.
    pub workgroups: u64,
    /// Wall time of a run, in milliseconds, after which it is abandoned.
    pub wall_time_ms: u64,
}

impl Default for GpuLimits {
    fn default() -> Self {
        GpuLimits {
            buffer_bytes: 128 << 20,
            total_bytes: 512 << 20,
            dispatches: 64,
            workgroups: 1 << 24,
            wall_time_ms: 30_000,
        }
    }
}

impl Kernel {
    /// Parses a kernel from its JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Kernel, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Its canonical JSON: what is stored and hashed.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The buffers whose final bytes are the result, in declaration order.
    pub fn outputs(&self) -> impl Iterator<Item = &Buffer> {
        self.buffers.iter().filter(|b| b.role.is_returned())
    }
}
