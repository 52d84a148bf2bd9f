//! A kernel's buffers read off its WGSL, so that a user names buffers by the shader's own
//! variables (`runegrid gpu add.wgsl --buffer a=a.bin --output sum:4096`).

use crate::kernel::{Buffer, Kernel, Role};
use crate::validate::KernelError;
use naga::valid::{Capabilities, ValidationFlags, Validator};
use naga::{AddressSpace, StorageAccess};
use std::collections::{BTreeMap, BTreeSet};

/// The kernel whose buffers are the resources `entry_point` uses, each named after its WGSL
/// variable, in binding order: `var<storage, read>` an input, `var<uniform>` a uniform,
/// `var<storage, read_write>` an output of `outputs[name]` bytes, or an inout when its bytes
/// are given (its name is in `inputs`) instead. The result still goes through
/// [`crate::check`].
pub fn kernel_from_wgsl(
    shader: &str,
    entry_point: &str,
    inputs: &BTreeSet<String>,
    outputs: &BTreeMap<String, u64>,
    dispatches: Vec<[u32; 3]>,
) -> Result<Kernel, KernelError> {
    let module = naga::front::wgsl::parse_str(shader)
        .map_err(|e| KernelError::Parse(e.emit_to_string(shader)))?;
    let info = Validator::new(ValidationFlags::all(), Capabilities::default())
        .validate(&module)
        .map_err(|e| KernelError::Invalid(e.emit_to_string(shader)))?;
    let index = module
        .entry_points
        .iter()
        .position(|e| e.name == entry_point)
        .ok_or_else(|| KernelError::NoEntryPoint(entry_point.to_string()))?;
    let uses = info.get_entry_point(index);
    let used: BTreeSet<String> = module
        .global_variables
        .iter()
        .filter(|(h, v)| v.binding.is_some() && !uses[*h].is_empty())
        .filter_map(|(_, v)| v.name.clone())
        .collect();
    for name in inputs.iter().chain(outputs.keys()) {
        if !used.contains(name) {
            return Err(KernelError::Named(format!(
                "the entry point uses no buffer named {name:?}"
            )));
        }
    }
    let mut buffers = Vec::new();
    for (handle, var) in module.global_variables.iter() {
        let Some(rb) = &var.binding else { continue };
        if uses[handle].is_empty() {
            continue;
        }
        let name = var.name.clone().unwrap_or_default();
        let given = inputs.contains(&name);
        let (role, size) = match var.space {
            AddressSpace::Uniform => (Role::Uniform, None),
            AddressSpace::Storage { access } if !access.contains(StorageAccess::STORE) => {
                (Role::Input, None)
            }
            AddressSpace::Storage { .. } => match (given, outputs.get(&name)) {
                (true, None) => (Role::Inout, None),
                (false, Some(&size)) => (Role::Output, Some(size)),
                (true, Some(_)) => {
                    return Err(KernelError::Named(format!(
                        "{name:?} is given both as an input and as an output"
                    )));
                }
                (false, None) => {
                    return Err(KernelError::Named(format!(
                        "{name:?} is a read-write buffer: give its bytes (an input, updated in place) or its size (an output)"
                    )));
                }
            },
            _ => {
                return Err(KernelError::Named(format!(
                    "{name:?} is not a buffer (textures and samplers are not supported)"
                )));
            }
        };
        if !given && role.is_supplied() {
            return Err(KernelError::MissingInput(name));
        }
        buffers.push(Buffer {
            name,
            group: rb.group,
            binding: rb.binding,
            role,
            size,
        });
    }
    buffers.sort_by_key(|b| (b.group, b.binding));
    Ok(Kernel {
        shader: shader.to_string(),
        entry_point: entry_point.to_string(),
        buffers,
        dispatches,
        loop_budget: None,
        work: None,
    })
}
