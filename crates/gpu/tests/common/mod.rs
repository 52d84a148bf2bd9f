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

/// What the hash kernel leaves in `state` after its three dispatches of `rounds` rounds each.
pub fn hashed(state: &[u32], rounds: u32, salt: u32) -> Vec<u32> {
    state
        .iter()
        .map(|&x| {
            let mut h = x;
            for _ in 0..3 {
                for r in 0..rounds {
                    h = mix(h.wrapping_add(r), salt);
                }
            }
            h
        })
        .collect()
}

/// Reads and writes out of bounds every way (a negative `i32`, `i32::MIN`, a huge `u32`, an
/// index equal to `arrayLength`; buffer, workgroup, function and atomic arrays, a vector and a
/// matrix), one invocation, so that no two writes race for a clamped element.
pub const OUT_OF_BOUNDS: &str = r#"
struct Params { neg: i32, huge: u32, min: i32, spare: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
var<workgroup> tile: array<u32, 4>;
var<workgroup> counts: array<atomic<u32>, 2>;

fn pick(v: vec4<u32>, i: i32) -> u32 { return v[i]; }

@compute @workgroup_size(1)
fn main() {
    tile[0] = 100u; tile[1] = 101u; tile[2] = 102u; tile[3] = 103u;
    let v = vec4<u32>(200u, 201u, 202u, 203u);
    out[0] = a[params.neg];
    out[1] = a[params.huge];
    out[2] = a[arrayLength(&a)];
    out[3] = a[params.min];
    out[4] = tile[params.neg];
    out[5] = tile[params.huge];
    out[6] = pick(v, params.neg);
    out[7] = v[params.huge];
    var w = array<u32, 3>(0u, 0u, 0u);
    w[params.neg] = 5u;
    tile[params.huge] = 9u;
    out[8] = w[2] * 1000u + tile[3];
    var m = mat2x2<f32>(1.0, 2.0, 3.0, 4.0);
    out[9] = u32(m[params.huge][params.neg]);
    var u = vec2<u32>(0u, 0u);
    u[params.min] = 4u;
    out[10] = u.y;
    atomicAdd(&counts[params.huge], 6u);
    out[11] = atomicLoad(&counts[1]);
    out[arrayLength(&out)] = 77u;
    out[12] = out[15];
    out[params.neg] = 88u;
}
"#;

pub fn out_of_bounds_kernel() -> Kernel {
    Kernel {
        loop_budget: None,
        work: None,
        shader: OUT_OF_BOUNDS.into(),
        entry_point: "main".into(),
        buffers: vec![
            buffer("params", 0, Role::Uniform, None),
            buffer("a", 1, Role::Input, None),
            buffer("out", 2, Role::Output, Some(16 * 4)),
        ],
        dispatches: vec![[1, 1, 1]],
    }
}

/// `params` (-1, u32::MAX, i32::MIN) and `a` (1 to 16).
pub fn out_of_bounds_inputs() -> BTreeMap<String, Vec<u8>> {
    inputs(&[
        ("params", words(&[u32::MAX, u32::MAX, 0x8000_0000, 0])),
        ("a", words(&(1..=16).collect::<Vec<u32>>())),
    ])
}

/// What [`OUT_OF_BOUNDS`] computes with its indices clamped: every index past the end, and
/// every negative one, is the last element.
pub const OUT_OF_BOUNDS_CLAMPED: [u32; 16] = [
    16, 16, 16, 16, // a[-1], a[u32::MAX], a[arrayLength], a[i32::MIN]
    103, 103, // tile[-1], tile[u32::MAX]
    203, 203,  // v[-1] (in a helper), v[u32::MAX]
    5009, // w[-1] = 5, tile[u32::MAX] = 9
    4,    // m[u32::MAX][-1] = m[1][1]
    4,    // u[i32::MIN] = 4 sets u.y
    6,    // atomicAdd(&counts[u32::MAX], 6) adds to counts[1]
    77,   // out[arrayLength] = 77 wrote out[15]
    0, 0,  // untouched
    88, // out[-1] = 88, over the 77
];
