//! Kernels checked with naga (no GPU needed) and run on this machine's GPU: Mesa's lavapipe
//! where there is no hardware one (CI installs it). Without any adapter the running tests are
//! skipped with a note, unless `RUNEGRID_REQUIRE_GPU` is set (CI sets it).

use runegrid_gpu::{
    Checked, Gpu, GpuError, GpuLimits, Kernel, KernelError, OpenOptions, Role, check, check_inputs,
};
use std::collections::BTreeMap;

mod common;
use common::*;
use std::sync::OnceLock;

fn gpu() -> Option<&'static Gpu> {
    static GPU: OnceLock<Option<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| {
        match Gpu::open(OpenOptions {
            allow_software: true,
        }) {
            Ok(gpu) => {
                eprintln!("adapter: {:?}", gpu.info());
                Some(gpu)
            }
            Err(e) if std::env::var_os("RUNEGRID_REQUIRE_GPU").is_none() => {
                eprintln!("note: skipping GPU runs: {e}");
                None
            }
            Err(e) => panic!("RUNEGRID_REQUIRE_GPU is set but no GPU opens: {e}"),
        }
    })
    .as_ref()
}

#[test]
fn a_vector_add_wraps_like_the_cpu() {
    let n = 1000u32;
    let kernel = add_kernel(u64::from(n));
    let limits = GpuLimits::default();
    let checked = check(&kernel, &limits).unwrap();
    assert_eq!(checked.workgroup_size, [64, 1, 1]);
    assert_eq!(checked.invocations(&kernel), 16 * 64);
    let a: Vec<u32> = (0..n).map(|i| i.wrapping_mul(0x9e37_79b9)).collect();
    let b: Vec<u32> = (0..n).map(|i| u32::MAX - i).collect();
    let Some(gpu) = gpu() else { return };
    let out = gpu
        .run(
            &kernel,
            &checked,
            &inputs(&[("a", words(&a)), ("b", words(&b))]),
            &limits,
        )
        .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "out");
    let want: Vec<u32> = a.iter().zip(&b).map(|(x, y)| x.wrapping_add(*y)).collect();
    assert_eq!(from_words(&out[0].1), want);
}

#[test]
fn an_integer_hash_over_several_dispatches_matches_the_cpu() {
    let n = 300u32;
    let (rounds, salt) = (5u32, 0xdead_beef_u32);
    let kernel = Kernel {
        loop_budget: None,
        work: None,
        shader: HASH.into(),
        entry_point: "main".into(),
        buffers: vec![
            buffer("params", 0, Role::Uniform, None),
            buffer("state", 1, Role::Inout, None),
        ],
        // Three dispatches over the same buffer: each applies `rounds` more rounds.
        dispatches: vec![[10, 1, 1]; 3],
    };
    let limits = GpuLimits::default();
    let checked = check(&kernel, &limits).unwrap();
    assert_eq!(checked.min_bytes, vec![8, 4]);
    let state: Vec<u32> = (0..n).collect();
    let given = inputs(&[("params", words(&[rounds, salt])), ("state", words(&state))]);
    check_inputs(&kernel, &checked, &given, &limits).unwrap();
    let Some(gpu) = gpu() else { return };
    let out = gpu.run(&kernel, &checked, &given, &limits).unwrap();
    assert_eq!(from_words(&out[0].1), hashed(&state, rounds, salt));
    // The same inputs give the same bytes again.
    assert_eq!(gpu.run(&kernel, &checked, &given, &limits).unwrap(), out);
}

#[test]
fn out_of_bounds_indexing_is_contained_and_repeatable() {
    let shader = r#"
@group(0) @binding(0) var<storage, read> a: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(16)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    out[id.x * 1000u] = a[id.x * 7919u + 100000u];
}
"#;
    let kernel = Kernel {
        loop_budget: None,
        work: None,
        shader: shader.into(),
        entry_point: "main".into(),
        buffers: vec![
            buffer("a", 0, Role::Input, None),
            buffer("out", 1, Role::Output, Some(64)),
        ],
        dispatches: vec![[4, 1, 1]],
    };
    let limits = GpuLimits::default();
    let checked = check(&kernel, &limits).unwrap();
    let Some(gpu) = gpu() else { return };
    let given = inputs(&[("a", words(&(1..=16).collect::<Vec<u32>>()))]);
    let first = gpu.run(&kernel, &checked, &given, &limits).unwrap();
    assert_eq!(first[0].1.len(), 64);
    assert_eq!(gpu.run(&kernel, &checked, &given, &limits).unwrap(), first);
    // The GPU keeps serving.
    let add = add_kernel(4);
    let out = gpu
        .run(
            &add,
            &check(&add, &limits).unwrap(),
            &inputs(&[("a", words(&[1, 2, 3, 4])), ("b", words(&[10, 20, 30, 40]))]),
            &limits,
        )
        .unwrap();
    assert_eq!(from_words(&out[0].1), vec![11, 22, 33, 44]);
}

#[test]
fn out_of_bounds_indices_are_clamped_to_the_last_element() {
    let kernel = out_of_bounds_kernel();
    let limits = GpuLimits::default();
    check(&kernel, &limits).unwrap();
    // No loop: the clamps come without a status buffer.
    let bounded = runegrid_gpu::guard(&kernel, 1000).unwrap();
    assert_eq!(bounded.buffers, kernel.buffers);
    assert!(
        bounded.shader.contains("arrayLength((&a)) - 1u"),
        "{}",
        bounded.shader
    );
    let checked = runegrid_gpu::check_guarded(&bounded, &limits).unwrap();
    let Some(gpu) = gpu() else { return };
    let out = gpu
        .run(&bounded, &checked, &out_of_bounds_inputs(), &limits)
        .unwrap();
    assert_eq!(from_words(&out[0].1), OUT_OF_BOUNDS_CLAMPED);
    // Unclamped, this adapter does something else (lavapipe reads zero past a buffer's end and
    // skips the write): what the clamps are for.
    let raw = gpu
        .run(
            &kernel,
            &check(&kernel, &limits).unwrap(),
            &out_of_bounds_inputs(),
            &limits,
        )
        .unwrap();
    eprintln!(
        "unclamped on {}: {:?}",
        gpu.info().name,
        from_words(&raw[0].1)
    );
}

#[test]
fn in_bounds_kernels_give_the_same_bytes_clamped() {
    let limits = GpuLimits::default();
    let n = 1000u32;
    let add = add_kernel(u64::from(n));
    let bounded = runegrid_gpu::guard(&add, 1000).unwrap();
    assert_ne!(bounded.shader, add.shader);
    assert_eq!(bounded.buffers, add.buffers);
    let given = inputs(&[
        ("a", words(&(0..n).map(|i| i * 3).collect::<Vec<_>>())),
        ("b", words(&(0..n).collect::<Vec<_>>())),
    ]);
    let Some(gpu) = gpu() else { return };
    let plain = gpu
        .run(&add, &check(&add, &limits).unwrap(), &given, &limits)
        .unwrap();
    let clamped = gpu
        .run(
            &bounded,
            &runegrid_gpu::check_guarded(&bounded, &limits).unwrap(),
            &given,
            &limits,
        )
        .unwrap();
    assert_eq!(clamped, plain);
}

#[test]
fn the_work_of_a_stored_kernel_is_that_of_its_rewrite_and_repeatable() {
    // The coordinator guards (and clamps) a kernel, then prices what it will run: the same
    // number for the same upload, above the plain kernel's (the clamps are work).
    let limits = GpuLimits::default();
    let kernel = out_of_bounds_kernel();
    let priced = || {
        let guarded = runegrid_gpu::guard(&kernel, 1000).unwrap();
        runegrid_gpu::check_guarded(&guarded, &limits)
            .unwrap()
            .work(&guarded)
    };
    let work = priced();
    assert_eq!(priced(), work);
    assert!(work > check(&kernel, &limits).unwrap().work(&kernel));
}

#[test]
fn a_runtime_sized_array_needs_one_element() {
    // The clamp `min(i, arrayLength - 1)` needs arrayLength >= 1: every buffer is at least its
    // type's size, in which a runtime-sized array counts one element.
    let shader = r#"
struct Tail { n: u32, data: array<vec2<u32>> }
@group(0) @binding(0) var<storage, read> t: Tail;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(1)
fn main() { out[t.n] = t.data[t.n].x; }
"#;
    let kernel = Kernel {
        loop_budget: None,
        work: None,
        shader: shader.into(),
        entry_point: "main".into(),
        buffers: vec![
            buffer("t", 0, Role::Input, None),
            buffer("out", 1, Role::Output, Some(4)),
        ],
        dispatches: vec![[1, 1, 1]],
    };
    let limits = GpuLimits::default();
    let checked = check(&kernel, &limits).unwrap();
    // `n` and one `vec2<u32>` at offset 8; `out`, one `u32`.
    assert_eq!(checked.min_bytes, vec![16, 4]);
    let header_only = inputs(&[("t", words(&[0, 0]))]);
    assert_eq!(
        check_inputs(&kernel, &checked, &header_only, &limits),
        Err(KernelError::TooSmall {
            name: "t".into(),
            size: 8,
            min: 16
        })
    );
    let output_of_nothing = Kernel {
        buffers: vec![
            buffer("t", 0, Role::Input, None),
            buffer("out", 1, Role::Output, Some(0)),
        ],
        ..kernel.clone()
    };
    assert!(matches!(
        check(&output_of_nothing, &limits),
        Err(KernelError::OutputSize { .. })
    ));
    let bounded = runegrid_gpu::guard(&kernel, 1000).unwrap();
    let Some(gpu) = gpu() else { return };
    let out = gpu
        .run(
            &bounded,
            &runegrid_gpu::check_guarded(&bounded, &limits).unwrap(),
            &inputs(&[("t", words(&[7, 0, 41, 42]))]),
            &limits,
        )
        .unwrap();
    // out[7] and t.data[7] are their only elements.
    assert_eq!(from_words(&out[0].1), vec![41]);
}

#[test]
fn compiled_kernels_are_kept_but_refusals_are_not() {
    if gpu().is_none() {
        return;
    }
    // A device of its own: the shared one's cache fills with the other tests' kernels.
    let gpu = Gpu::open(OpenOptions {
        allow_software: true,
    })
    .unwrap();
    let limits = GpuLimits::default();
    let add = add_kernel(4);
    let checked = check(&add, &limits).unwrap();
    let given = inputs(&[("a", words(&[1, 2, 3, 4])), ("b", words(&[10, 20, 30, 40]))]);
    let sum = |out: Vec<(String, Vec<u8>)>| from_words(&out[0].1);
    assert_eq!(
        sum(gpu.run(&add, &checked, &given, &limits).unwrap()),
        [11, 22, 33, 44]
    );
    assert_eq!(
        sum(gpu.run(&add, &checked, &given, &limits).unwrap()),
        [11, 22, 33, 44]
    );
    assert_eq!(gpu.cached_pipelines(), 1);

    // WGSL the GPU refuses: refused on every run, and never kept.
    let mut broken = add.clone();
    broken.shader = ADD.replace("a[i] + b[i]", "a[i] +* b[i]");
    let first = gpu.run(&broken, &checked, &given, &limits).unwrap_err();
    assert!(matches!(first, GpuError::Refused(_)), "{first}");
    assert_eq!(gpu.run(&broken, &checked, &given, &limits), Err(first));
    assert_eq!(gpu.cached_pipelines(), 1);

    // Bounded: past PIPELINE_CACHE kernels the oldest go, and come back when used again.
    for k in 0..runegrid_gpu::device::PIPELINE_CACHE + 4 {
        let mut other = add.clone();
        other.shader = ADD.replace("a[i] + b[i]", &format!("a[i] + b[i] + {k}u"));
        let out = gpu.run(&other, &checked, &given, &limits).unwrap();
        assert_eq!(sum(out)[0], 11 + k as u32);
    }
    assert_eq!(gpu.cached_pipelines(), runegrid_gpu::device::PIPELINE_CACHE);
    assert_eq!(
        sum(gpu.run(&add, &checked, &given, &limits).unwrap()),
        [11, 22, 33, 44]
    );

    // A run past its wall time loses the device, and what was compiled for it.
    let hash = Kernel {
        loop_budget: None,
        work: None,
        shader: HASH.into(),
        entry_point: "main".into(),
        buffers: vec![
            buffer("params", 0, Role::Uniform, None),
            buffer("state", 1, Role::Inout, None),
        ],
        // 64 dispatches one after the other, each 60,000 dependent rounds per invocation: well
        // over a millisecond on any GPU.
        dispatches: vec![[1, 1, 1]; 64],
    };
    let slow = inputs(&[
        ("params", words(&[60_000, 1])),
        ("state", words(&(0..32).collect::<Vec<u32>>())),
    ]);
    let quick = GpuLimits {
        wall_time_ms: 1,
        ..limits
    };
    assert_eq!(
        gpu.run(&hash, &check(&hash, &limits).unwrap(), &slow, &quick),
        Err(GpuError::Timeout(1))
    );
    assert!(gpu.is_lost());
    assert_eq!(gpu.cached_pipelines(), 0);
    assert!(matches!(
        gpu.run(&add, &checked, &given, &limits),
        Err(GpuError::Lost(_))
    ));
}

#[test]
fn a_float_kernel_agrees_with_the_cpu_within_a_tolerance() {
    let shader = r#"
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i < arrayLength(&y)) { y[i] = x[i] * x[i] + 0.5 * x[i] + 1.0 / (1.0 + x[i] * x[i]); }
}
"#;
    let n = 256u64;
    let kernel = Kernel {
        loop_budget: None,
        work: None,
        shader: shader.into(),
        entry_point: "main".into(),
        buffers: vec![
            buffer("x", 0, Role::Input, None),
            buffer("y", 1, Role::Output, Some(4 * n)),
        ],
        dispatches: vec![[4, 1, 1]],
    };
    let limits = GpuLimits::default();
    let checked = check(&kernel, &limits).unwrap();
    let Some(gpu) = gpu() else { return };
    let xs: Vec<f32> = (0..n).map(|i| (i as f32 - 128.0) / 7.0).collect();
    let given = inputs(&[("x", xs.iter().flat_map(|v| v.to_le_bytes()).collect())]);
    let out = gpu.run(&kernel, &checked, &given, &limits).unwrap();
    let want: Vec<u8> = xs
        .iter()
        .flat_map(|&x| (x * x + 0.5 * x + 1.0 / (1.0 + x * x)).to_le_bytes())
        .collect();
    let t = runegrid_core::Tolerance::new(0.0, 1e-5, 8).unwrap();
    t.compare(&out[0].1, &want).unwrap();
}

#[test]
fn inputs_are_checked_before_the_gpu_sees_them() {
    let kernel = add_kernel(16);
    let limits = GpuLimits::default();
    let checked = check(&kernel, &limits).unwrap();
    let ok = words(&[0; 16]);
    let err = |given: BTreeMap<String, Vec<u8>>| {
        check_inputs(&kernel, &checked, &given, &limits).unwrap_err()
    };
    assert_eq!(
        err(inputs(&[("a", ok.clone())])),
        KernelError::MissingInput("b".into())
    );
    assert_eq!(
        err(inputs(&[
            ("a", ok.clone()),
            ("b", ok.clone()),
            ("c", ok.clone())
        ])),
        KernelError::UnknownInput("c".into())
    );
    assert_eq!(
        err(inputs(&[
            ("a", ok.clone()),
            ("b", ok.clone()),
            ("out", ok.clone())
        ])),
        KernelError::UnknownInput("out".into())
    );
    assert!(matches!(
        err(inputs(&[("a", vec![]), ("b", ok.clone())])),
        KernelError::TooSmall { .. }
    ));
    assert!(matches!(
        err(inputs(&[("a", vec![0; 6]), ("b", ok.clone())])),
        KernelError::Unaligned { .. }
    ));
    let small = GpuLimits {
        buffer_bytes: 32,
        ..limits
    };
    assert!(matches!(
        check_inputs(
            &kernel,
            &checked,
            &inputs(&[("a", words(&[0; 9])), ("b", ok.clone())]),
            &small
        ),
        Err(KernelError::TooLarge { .. })
    ));
    // A GPU run refuses them the same way.
    if let Some(gpu) = gpu() {
        assert_eq!(
            gpu.run(&kernel, &checked, &inputs(&[("a", ok)]), &limits),
            Err(GpuError::Kernel(KernelError::MissingInput("b".into())))
        );
    }
}

fn refused(kernel: &Kernel) -> KernelError {
    check(kernel, &GpuLimits::default()).unwrap_err()
}

#[test]
fn bad_kernels_get_clear_errors() {
    let good = add_kernel(64);
    let with = |f: &dyn Fn(&mut Kernel)| {
        let mut k = good.clone();
        f(&mut k);
        refused(&k)
    };
    let parse = with(&|k| k.shader = ADD.replace("a[i] + b[i]", "a[i] +* b[i]"));
    assert!(
        matches!(&parse, KernelError::Parse(m) if m.contains("wgsl:10:")),
        "{parse}"
    );
    let invalid = with(&|k| k.shader = ADD.replace("a[i] + b[i]", "a[i] + 1.5"));
    assert!(matches!(invalid, KernelError::Invalid(_)), "{invalid}");
    assert_eq!(
        with(&|k| k.entry_point = "go".into()),
        KernelError::NoEntryPoint("go".into())
    );
    assert_eq!(
        with(&|k| k.buffers.truncate(2)),
        KernelError::Undeclared {
            group: 0,
            binding: 2
        }
    );
    assert_eq!(
        with(&|k| k.buffers.push(buffer("extra", 7, Role::Input, None))),
        KernelError::Unused("extra".into())
    );
    assert!(matches!(
        with(&|k| k.buffers[0].role = Role::Inout),
        KernelError::Mismatch { .. }
    ));
    assert!(matches!(
        with(&|k| k.buffers[2].role = Role::Input),
        KernelError::SizeGiven { .. }
    ));
    for size in [None, Some(0), Some(6)] {
        assert!(matches!(
            with(&|k| k.buffers[2].size = size),
            KernelError::OutputSize { .. }
        ));
    }
    assert!(matches!(
        with(&|k| k.buffers[2].size = Some(1 << 40)),
        KernelError::TooLarge { .. }
    ));
    assert!(matches!(
        with(&|k| k.buffers[1].name = "b/../x".into()),
        KernelError::Name(_)
    ));
    assert!(matches!(
        with(&|k| k.buffers[1].name = "a".into()),
        KernelError::DuplicateName(_)
    ));
    assert!(matches!(
        with(&|k| k.buffers[1].binding = 0),
        KernelError::DuplicateBinding { .. }
    ));
    assert!(matches!(
        with(&|k| k.dispatches.clear()),
        KernelError::Dispatches { .. }
    ));
    assert!(matches!(
        with(&|k| k.dispatches = vec![[1, 0, 1]]),
        KernelError::Workgroups { .. }
    ));
    assert!(matches!(
        with(&|k| k.dispatches = vec![[65_535, 65_535, 2]]),
        KernelError::TooManyWorkgroups { .. }
    ));
    let vertex = r#"@vertex fn main() -> @builtin(position) vec4<f32> { return vec4<f32>(0.0); }"#;
    assert_eq!(
        refused(&Kernel {
            loop_budget: None,
            work: None,
            shader: vertex.into(),
            entry_point: "main".into(),
            buffers: vec![],
            dispatches: vec![[1, 1, 1]],
        }),
        KernelError::NotCompute("main".into())
    );
    let json = runegrid_gpu::parse(b"{\"shader\": 3}", &GpuLimits::default()).unwrap_err();
    assert!(matches!(json, KernelError::Json(_)), "{json}");
}

/// Kernels beyond WebGPU's default limits (which every adapter offers) are refused at upload,
/// so any GPU worker can run any accepted kernel.
#[test]
fn kernels_stay_within_webgpu_default_limits() {
    let good = add_kernel(64);
    let with_shader = |shader: String, buffers: Vec<runegrid_gpu::Buffer>| {
        refused(&Kernel {
            shader,
            buffers,
            ..good.clone()
        })
    };
    for size in ["512", "16, 32", "1, 1, 128"] {
        let e = with_shader(
            ADD.replace("@workgroup_size(64)", &format!("@workgroup_size({size})")),
            good.buffers.clone(),
        );
        assert!(
            matches!(e, KernelError::WorkgroupSize { .. }),
            "{size}: {e}"
        );
        assert!(e.to_string().contains("256"), "{e}");
    }
    // Nine storage buffers.
    let decls: String = (0..9)
        .map(|i| format!("@group(0) @binding({i}) var<storage, read_write> b{i}: array<u32>;\n"))
        .collect();
    let body: String = (0..9).map(|i| format!("b{i}[0] = 1u; ")).collect();
    let shader = format!("{decls}@compute @workgroup_size(1) fn main() {{ {body}}}");
    let buffers = (0..9)
        .map(|i| buffer(&format!("b{i}"), i, Role::Output, Some(4)))
        .collect();
    let e = with_shader(shader, buffers);
    assert!(
        matches!(
            e,
            KernelError::TooManyBuffers {
                count: 9,
                limit: 8,
                ..
            }
        ),
        "{e}"
    );
    // 32 KiB of workgroup memory.
    let shader = "var<workgroup> tile: array<f32, 8192>;\n\
                  @group(0) @binding(0) var<storage, read_write> out: array<f32>;\n\
                  @compute @workgroup_size(64) fn main(@builtin(local_invocation_index) i: u32) {\n\
                  tile[i] = 1.0; workgroupBarrier(); out[i] = tile[63u - i]; }";
    let e = with_shader(
        shader.into(),
        vec![buffer("out", 0, Role::Output, Some(256))],
    );
    assert_eq!(
        e,
        KernelError::WorkgroupStorage {
            bytes: 32768,
            limit: 16384
        }
    );
    // Half-precision floats need a feature the workers do not enable.
    let half = "enable f16;\n@group(0) @binding(0) var<storage, read_write> out: array<f16>;\n\
                @compute @workgroup_size(1) fn main() { out[0] = 1.5h; }";
    let e = with_shader(half.into(), vec![buffer("out", 0, Role::Output, Some(4))]);
    assert!(
        matches!(e, KernelError::Parse(_) | KernelError::Invalid(_)),
        "{e}"
    );
    // A uniform above 64 KiB, at submission.
    let uniform = "struct P { n: u32 }\n@group(0) @binding(0) var<uniform> p: P;\n\
                   @group(0) @binding(1) var<storage, read_write> out: array<u32>;\n\
                   @compute @workgroup_size(1) fn main() { out[0] = p.n; }";
    let k = Kernel {
        shader: uniform.into(),
        buffers: vec![
            buffer("p", 0, Role::Uniform, None),
            buffer("out", 1, Role::Output, Some(4)),
        ],
        ..good.clone()
    };
    let checked = check(&k, &GpuLimits::default()).unwrap();
    let big = inputs(&[("p", vec![0; 65540])]);
    assert!(matches!(
        check_inputs(&k, &checked, &big, &GpuLimits::default()),
        Err(KernelError::UniformTooLarge { .. })
    ));
    check_inputs(
        &k,
        &checked,
        &inputs(&[("p", vec![0; 16])]),
        &GpuLimits::default(),
    )
    .unwrap();
}

#[test]
fn work_is_invocations_times_the_static_cost() {
    let limits = GpuLimits::default();
    let one = add_kernel(64);
    let checked: Checked = check(&one, &limits).unwrap();
    assert!(checked.static_cost > 5, "{}", checked.static_cost);
    let mut three = one.clone();
    three.dispatches = vec![[1, 1, 1], [2, 1, 1], [3, 2, 1]];
    assert_eq!(checked.invocations(&three), (1 + 2 + 6) * 64);
    assert_eq!(checked.work(&three), 9 * checked.work(&one));
    // A helper the entry point calls counts; one it does not call does not.
    let called = check(
        &Kernel {
            loop_budget: None,
            work: None,
            shader: HASH.into(),
            entry_point: "main".into(),
            buffers: vec![
                buffer("params", 0, Role::Uniform, None),
                buffer("state", 1, Role::Inout, None),
            ],
            dispatches: vec![[1, 1, 1]],
        },
        &limits,
    )
    .unwrap();
    let unused = check(
        &Kernel {
            loop_budget: None,
            work: None,
            shader: format!("{HASH}\nfn spare(x: u32) -> u32 {{ return x * 3u + 1u; }}"),
            entry_point: "main".into(),
            buffers: vec![
                buffer("params", 0, Role::Uniform, None),
                buffer("state", 1, Role::Inout, None),
            ],
            dispatches: vec![[1, 1, 1]],
        },
        &limits,
    )
    .unwrap();
    assert_eq!(called.static_cost, unused.static_cost);
    let inline = check(
        &Kernel {
            loop_budget: None,
            work: None,
            shader: HASH.replace("h = mix(h + r);", "h = h + r;"),
            entry_point: "main".into(),
            buffers: vec![
                buffer("params", 0, Role::Uniform, None),
                buffer("state", 1, Role::Inout, None),
            ],
            dispatches: vec![[1, 1, 1]],
        },
        &limits,
    )
    .unwrap();
    assert!(inline.static_cost < called.static_cost);
}

#[test]
fn kernels_round_trip_through_json() {
    let k = add_kernel(8);
    let json = k.to_json();
    assert_eq!(Kernel::from_json(&json).unwrap(), k);
    let text = r#"{"shader": "x", "buffers": [{"name": "o", "binding": 0, "role": "output", "size": 4}], "dispatches": [[1,1,1]]}"#;
    let k = Kernel::from_json(text.as_bytes()).unwrap();
    assert_eq!(k.entry_point, "main");
    assert_eq!(k.buffers[0].group, 0);
    assert!(
        Kernel::from_json(br#"{"shader": "x", "buffers": [], "dispatches": [], "extra": 1}"#)
            .is_err()
    );
}

fn run_guarded(kernel: &Kernel, given: &BTreeMap<String, Vec<u8>>) -> Option<(bool, Vec<u32>)> {
    let limits = GpuLimits::default();
    check(kernel, &limits).unwrap();
    let guarded = runegrid_gpu::guard(kernel, 1000).unwrap();
    let checked = runegrid_gpu::check_guarded(&guarded, &limits).unwrap();
    let gpu = gpu()?;
    let out = gpu.run(&guarded, &checked, given, &limits).unwrap();
    let (exhausted, out) = runegrid_gpu::split_status(out);
    assert_eq!(out.len(), 1);
    Some((exhausted, from_words(&out[0].1)))
}

#[test]
fn a_kernel_that_loops_for_ever_stops_with_its_budget_spent() {
    // `loop {}` never ends: every invocation stops after its 1000 iterations.
    let shader = r#"
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(8)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    var x = id.x;
    loop { x = x * 3u + 1u; }
    out[id.x] = x;
}
"#;
    let kernel = Kernel {
        loop_budget: None,
        work: None,
        shader: shader.into(),
        entry_point: "main".into(),
        buffers: vec![buffer("out", 0, Role::Output, Some(32))],
        dispatches: vec![[1, 1, 1]],
    };
    let Some((exhausted, out)) = run_guarded(&kernel, &BTreeMap::new()) else {
        return;
    };
    assert!(exhausted);
    let want: Vec<u32> = (0..8u32)
        .map(|i| (0..1000).fold(i, |x, _| x.wrapping_mul(3).wrapping_add(1)))
        .collect();
    assert_eq!(out, want);

    // The budget is shared by every loop an invocation runs, nested or in helpers: 10 outer
    // iterations of an endless inner loop in a helper spend it once.
    let nested = r#"
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
fn spin(x: u32) -> u32 { var y = x; while (true) { y = y + 1u; } return y; }
@compute @workgroup_size(4)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    var total = 0u;
    for (var i = 0u; i < 10u; i++) { total = total + spin(i); }
    out[id.x] = total;
}
"#;
    let kernel = Kernel {
        loop_budget: None,
        work: None,
        shader: nested.into(),
        buffers: vec![buffer("out", 0, Role::Output, Some(16))],
        ..kernel
    };
    let Some((exhausted, out)) = run_guarded(&kernel, &BTreeMap::new()) else {
        return;
    };
    assert!(exhausted);
    // Iteration 0 of the outer loop (1 unit), then spin(0) runs 998 iterations and breaks at
    // the 999th check; every later loop head finds the budget spent.
    assert!(out.iter().all(|&v| v == out[0]), "{out:?}");
}

#[test]
fn guarded_kernels_that_finish_give_the_same_bytes() {
    let kernel = Kernel {
        loop_budget: None,
        work: None,
        shader: HASH.into(),
        entry_point: "main".into(),
        buffers: vec![
            buffer("params", 0, Role::Uniform, None),
            buffer("state", 1, Role::Inout, None),
        ],
        dispatches: vec![[2, 1, 1]],
    };
    let given = inputs(&[
        ("params", words(&[7, 99])),
        ("state", words(&(0..64).collect::<Vec<u32>>())),
    ]);
    let limits = GpuLimits::default();
    let guarded = runegrid_gpu::guard(&kernel, 1000).unwrap();
    assert_ne!(guarded.shader, kernel.shader);
    assert_eq!(guarded.buffers.len(), 3);
    let Some(gpu) = gpu() else { return };
    let plain = gpu
        .run(&kernel, &check(&kernel, &limits).unwrap(), &given, &limits)
        .unwrap();
    let (exhausted, out) = runegrid_gpu::split_status(
        gpu.run(
            &guarded,
            &runegrid_gpu::check_guarded(&guarded, &limits).unwrap(),
            &given,
            &limits,
        )
        .unwrap(),
    );
    assert!(!exhausted);
    assert_eq!(out, plain);

    // No loop and no index to clamp: the kernel is returned as it is.
    let scalar = Kernel {
        loop_budget: None,
        work: None,
        shader: r#"
@group(0) @binding(0) var<storage, read_write> out: vec4<u32>;
@compute @workgroup_size(1)
fn main() { out = vec4<u32>(out.x + 1u, out[1], 3u, 4u); }
"#
        .into(),
        entry_point: "main".into(),
        buffers: vec![buffer("out", 0, Role::Inout, None)],
        dispatches: vec![[1, 1, 1]],
    };
    check(&scalar, &limits).unwrap();
    assert_eq!(runegrid_gpu::guard(&scalar, 1000).unwrap(), scalar);
    // No loop but indices: clamped, without a status buffer.
    let add = add_kernel(8);
    let bounded = runegrid_gpu::guard(&add, 1000).unwrap();
    assert_ne!(bounded.shader, add.shader);
    assert_eq!(bounded.buffers, add.buffers);
    // Users cannot declare the status buffer themselves.
    let mut sneaky = add_kernel(8);
    sneaky.buffers[2].name = runegrid_gpu::STATUS_BUFFER.into();
    assert!(matches!(refused(&sneaky), KernelError::Name(_)));
}

#[test]
fn loops_with_barriers_are_left_to_the_watchdog() {
    // A workgroup reduction: the loop reaches workgroupBarrier, so it keeps no guard (that
    // would make it non-uniform), while the plain loop after it gets one.
    let shader = r#"
var<workgroup> tile: array<u32, 64>;
@group(0) @binding(0) var<storage, read> a: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let i = lid.x;
    tile[i] = a[wid.x * 64u + i];
    workgroupBarrier();
    for (var s = 32u; s > 0u; s = s >> 1u) {
        if (i < s) { tile[i] = tile[i] + tile[i + s]; }
        workgroupBarrier();
    }
    var spare = 0u;
    for (var k = 0u; k < i; k++) { spare = spare + 1u; }
    if (i == 0u) { out[wid.x] = tile[0] + spare; }
}
"#;
    let kernel = Kernel {
        loop_budget: None,
        work: None,
        shader: shader.into(),
        entry_point: "main".into(),
        buffers: vec![
            buffer("a", 0, Role::Input, None),
            buffer("out", 1, Role::Output, Some(8)),
        ],
        dispatches: vec![[2, 1, 1]],
    };
    let guarded = runegrid_gpu::guard(&kernel, 1000).unwrap();
    assert_eq!(
        guarded.shader.matches("atomicMax").count(),
        1,
        "{}",
        guarded.shader
    );
    let a: Vec<u32> = (0..128).collect();
    let Some((exhausted, out)) = run_guarded(&kernel, &inputs(&[("a", words(&a))])) else {
        return;
    };
    assert!(!exhausted);
    assert_eq!(out, vec![(0..64).sum::<u32>(), (64..128).sum::<u32>()]);
}

#[test]
fn buffers_are_read_off_the_shader() {
    use std::collections::BTreeSet;
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let sizes = |v: &[(&str, u64)]| {
        v.iter()
            .map(|(k, n)| (k.to_string(), *n))
            .collect::<BTreeMap<_, _>>()
    };
    let from = |inputs: &[&str], outputs: &[(&str, u64)]| {
        runegrid_gpu::kernel_from_wgsl(
            HASH,
            "main",
            &names(inputs),
            &sizes(outputs),
            vec![[1, 1, 1]],
        )
    };
    // `params` is a uniform, `state` read-write: given, it is updated in place.
    let k = from(&["params", "state"], &[]).unwrap();
    let roles: Vec<(&str, Role, u32)> = k
        .buffers
        .iter()
        .map(|b| (b.name.as_str(), b.role, b.binding))
        .collect();
    assert_eq!(
        roles,
        vec![("params", Role::Uniform, 0), ("state", Role::Inout, 1)]
    );
    check(&k, &GpuLimits::default()).unwrap();
    // Sized instead, it is an output.
    let k = from(&["params"], &[("state", 64)]).unwrap();
    assert_eq!(
        (k.buffers[1].role, k.buffers[1].size),
        (Role::Output, Some(64))
    );
    // Neither, both, a missing input, an unknown name: refused, saying which.
    for (inputs, outputs, what) in [
        (&["params"][..], &[][..], "\"state\""),
        (&["params", "state"][..], &[("state", 64)][..], "both"),
        (&["state"][..], &[][..], "\"params\""),
        (&["params", "state", "x"][..], &[][..], "\"x\""),
    ] {
        let e = from(inputs, outputs).unwrap_err().to_string();
        assert!(e.contains(what), "{e}");
    }
}
