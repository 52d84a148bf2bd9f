//! How long `Gpu::run` takes per run of the same kernel: a vector add of 1M `u32` (and of 64,
//! where compiling the kernel is most of a run), 50 runs each, on this machine's GPU (a
//! software one when there is no other).
//!
//! `cargo run --release -p runegrid-gpu --example run_timing`

use runegrid_gpu::{Buffer, Gpu, GpuLimits, Kernel, OpenOptions, Role, check};
use std::collections::BTreeMap;
use std::time::Instant;

const ADD: &str = r#"
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

fn buffer(name: &str, binding: u32, role: Role, size: Option<u64>) -> Buffer {
    Buffer {
        name: name.into(),
        group: 0,
        binding,
        role,
        size,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let gpu = Gpu::open(OpenOptions {
        allow_software: true,
    })?;
    println!("adapter: {}", gpu.info().name);
    let limits = GpuLimits::default();
    for n in [1u32 << 20, 64] {
        let kernel = Kernel {
            loop_budget: None,
            work: None,
            shader: ADD.into(),
            entry_point: "main".into(),
            buffers: vec![
                buffer("a", 0, Role::Input, None),
                buffer("b", 1, Role::Input, None),
                buffer("out", 2, Role::Output, Some(4 * u64::from(n))),
            ],
            dispatches: vec![[n.div_ceil(64), 1, 1]],
        };
        let checked = check(&kernel, &limits)?;
        let words = |f: &dyn Fn(u32) -> u32| -> Vec<u8> {
            (0..n).flat_map(|i| f(i).to_le_bytes()).collect()
        };
        let inputs: BTreeMap<String, Vec<u8>> = [
            ("a".to_string(), words(&|i| i)),
            ("b".to_string(), words(&|i| 3 * i)),
        ]
        .into();
        let runs = 50;
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let start = Instant::now();
            let out = gpu.run(&kernel, &checked, &inputs, &limits)?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
            assert_eq!(out[0].1.len(), 4 * n as usize);
        }
        let first = times[0];
        let rest = &times[1..];
        let mean = rest.iter().sum::<f64>() / rest.len() as f64;
        let mut sorted = rest.to_vec();
        sorted.sort_by(f64::total_cmp);
        println!(
            "n = {n}: {runs} runs, first {first:.2} ms, then mean {mean:.2} ms, median {:.2} ms",
            sorted[sorted.len() / 2]
        );
    }
    Ok(())
}
