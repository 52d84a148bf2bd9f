//! Helpers shared by the GPU tests: buffer declarations, byte conversions, and the kernels
//! both engines run (a vector add, an integer hash with a uniform and an inout buffer).

#![allow(dead_code)]

use runegrid_gpu::{Buffer, Kernel, Role};
use std::collections::BTreeMap;

pub fn buffer(name: &str, binding: u32, role: Role, size: Option<u64>) -> Buffer {
    Buffer {
        name: name.into(),
        group: 0,
        binding,
        role,
        size,
    }
}

pub fn words(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|w| w.to_le_bytes()).collect()
}

pub fn from_words(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

pub fn inputs(pairs: &[(&str, Vec<u8>)]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

pub const ADD: &str = r#"
@group(0) @binding(0) var<storage, read> a: array<u32>;
@group(0) @binding(1) var<storage, read> b: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i < arrayLength(&out)) {
        out[i] = a[i] + b[i];
    }
}
"#;

pub fn add_kernel(n: u64) -> Kernel {
    Kernel {
        loop_budget: None,
        work: None,
        shader: ADD.into(),
        entry_point: "main".into(),
        buffers: vec![
            buffer("a", 0, Role::Input, None),
            buffer("b", 1, Role::Input, None),
            buffer("out", 2, Role::Output, Some(4 * n)),
        ],
        dispatches: vec![[n.div_ceil(64) as u32, 1, 1]],
    }
}

pub const HASH: &str = r#"
struct Params { rounds: u32, salt: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> state: array<u32>;

fn mix(x: u32) -> u32 {
    var h = x ^ params.salt;
    h = (h ^ (h >> 16u)) * 0x7feb352du;
    h = (h ^ (h >> 15u)) * 0x846ca68bu;
    return h ^ (h >> 16u);
}

@compute @workgroup_size(32)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i >= arrayLength(&state)) { return; }
    var h = state[i];
    for (var r = 0u; r < params.rounds; r++) {
        h = mix(h + r);
    }
    state[i] = h;
}
"#;

pub fn mix(x: u32, salt: u32) -> u32 {
    let mut h = x ^ salt;
    h = (h ^ (h >> 16)).wrapping_mul(0x7feb_352d);
    h = (h ^ (h >> 15)).wrapping_mul(0x846c_a68b);
    h ^ (h >> 16)
}
