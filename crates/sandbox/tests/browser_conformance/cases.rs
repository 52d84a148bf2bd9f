//! The conformance cases: every module of `modules.rs` with its tasks, the blob cases and the
//! Rune runner's.

use super::modules::*;
use super::*;

pub(crate) fn suite() -> Suite {
    let mut s = Suite::default();

    // The example programs.
    s.module("montecarlo", runegrid_examples::MONTECARLO);
    s.push(s.case("montecarlo", "20000_7").args(&["20000", "7"]));
    s.push(s.case("montecarlo", "500").args(&["500"]));
    s.push(
        s.case("montecarlo", "out_of_fuel")
            .args(&["20000", "7"])
            .limits(|l| l.fuel = 100_000),
    );
    s.module("matmul", runegrid_examples::MATMUL);
    s.push(s.case("matmul", "16_3").args(&["16", "3"]));
    s.push(s.case("matmul", "usage").args(&["x"]));
    s.push(
        s.case("matmul", "memory_limit")
            .args(&["300"])
            .limits(|l| l.memory_bytes = 2 << 20),
    );
    s.module("collatz", runegrid_examples::COLLATZ);
    s.push(s.case("collatz", "10000").args(&["10000"]));
    s.module("sleep", runegrid_examples::SLEEP);
    s.push(s.case("sleep", "3600_2").args(&["3600", "2"]));
    s.module("noop", runegrid_examples::NOOP);
    s.push(s.case("noop", ""));
    s.push(
        s.case("noop", "initial_memory_above_limit")
            .limits(|l| l.memory_bytes = 64 << 10),
    );
    s.module("render", runegrid_examples::RENDER);
    s.push(
        s.case("render", "tile")
            .args(&["64", "48", "8", "8", "32", "24", "100"]),
    );
    s.push(
        s.case("render", "whole")
            .args(&["32", "24", "0", "0", "32", "24"]),
    );
    s.push(s.case("render", "usage").args(&["1", "2"]));
    s.module("echo", runegrid_examples::ECHO);
    s.push(
        s.case("echo", "everything")
            .args(&["a1", "βeta ✓", "", "--flag=x y"])
            .env(&[
                ("ZED", "last"),
                ("A", "1=2"),
                ("EMPTY", ""),
                ("ÜNI", "çödé"),
            ])
            .stdin(b"line one\nline two\n\x00\xff\xfe binary \x80 tail"),
    );
    s.push(s.case("echo", "nothing"));
    s.push(
        s.case("echo", "stdout_limit")
            .args(&["0123456789"; 8])
            .limits(|l| l.stdout_bytes = 50),
    );

    // The hostile program in every mode.
    s.module("hostile", runegrid_examples::HOSTILE);
    s.push(
        s.case("hostile", "loop")
            .args(&["loop"])
            .limits(|l| l.fuel = 5_000_000),
    );
    s.push(
        s.case("hostile", "membomb")
            .args(&["membomb"])
            .limits(|l| l.memory_bytes = 8 << 20),
    );
    s.push(
        s.case("hostile", "spew")
            .args(&["spew"])
            .limits(|l| l.stdout_bytes = 100_000),
    );
    s.push(s.case("hostile", "recurse").args(&["recurse"]));
    s.push(s.case("hostile", "panic").args(&["panic"]));
    s.push(s.case("hostile", "exit_7").args(&["exit", "7"]));
    s.push(s.case("hostile", "exit_-3").args(&["exit", "-3"]));
    s.push(s.case("hostile", "sleep").args(&["sleep"]));
    s.push(s.case("hostile", "clock").args(&["clock"]));
    for seed in [0, 1, 42, (1 << 53) - 1] {
        s.push(
            s.case("hostile", &format!("random_{seed}"))
                .args(&["random"])
                .seed(seed),
        );
    }
    s.push(s.case("hostile", "divzero").args(&["divzero"]));
    s.push(s.case("hostile", "usage"));

    // Hand-written modules poking the edges of the WASI host.
    s.module("args_env", wat(ARGS_ENV).as_bytes());
    s.push(s.case("args_env", "some").args(&["a1", "βeta", ""]).env(&[
        ("K", "v"),
        ("X", "1=2"),
        ("E", ""),
    ]));
    s.push(s.case("args_env", "none"));
    s.wat_case("fd_write", FD_WRITE);
    s.module("fd_read", wat(FD_READ).as_bytes());
    s.push(
        s.case("fd_read", "")
            .stdin(b"hello, conformance world! 0123456789\x00\xff\x10abcdef"),
    );
    s.module("clock_random", wat(CLOCK_RANDOM).as_bytes());
    for seed in [0, 7, (1 << 53) - 1] {
        s.push(s.case("clock_random", &seed.to_string()).seed(seed));
    }
    s.wat_case("fd_misc", FD_MISC);
    s.module("poll", wat(POLL).as_bytes());
    s.push(s.case("poll", "").stdin(b"0123456789"));
    s.push(s.case("poll", "no_stdin"));
    s.wat_case("sockets", SOCKETS);
    // With blobs mounted, fd 3 (the directory) is open: not a socket either.
    s.push(s.case("sockets", "mounted").blobs(&[("a.txt", b"x")]));
    for (name, code) in [("proc_exit_3", 3), ("proc_exit_-1", -1), ("proc_exit_0", 0)] {
        s.wat_case(
            name,
            &format!(
                r#"(data (i32.const 2000) "bye")
                (func $deep (call $print (i32.const 2000) (i32.const 3)) (call $proc_exit (i32.const {code})))
                (func (export "_start") (call $deep) unreachable)"#
            ),
        );
    }

    // Traps.
    for (name, body) in TRAPS {
        s.module(&format!("trap_{name}"), trap_module(body).as_bytes());
        s.push(s.case(&format!("trap_{name}"), ""));
    }

    for (name, body) in TRUNC {
        s.module(&format!("trunc_{name}"), trap_module(body).as_bytes());
        s.push(s.case(&format!("trunc_{name}"), "").declined(TRUNC_WHY));
    }

    // Recursion that exhausts the engines' native stacks before the call-depth limit: a
    // 1,000,000 limit, and the default 4096 with frames too big for V8's ~1 MB stack.
    s.module_with(
        "deep",
        wat(RECURSE).as_bytes(),
        &Options {
            max_call_depth: 1_000_000,
            ..Options::default()
        },
    );
    s.push(s.case("deep", "").declined(STACK_WHY));
    s.module_with(
        "deep_big_frames",
        wat(r#"(func $r (param i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64 i64) (result i64)
              (i64.add (local.get 0) (call $r (local.get 1) (local.get 2) (local.get 3) (local.get 4) (local.get 5) (local.get 6) (local.get 7) (local.get 8) (local.get 9) (local.get 10) (local.get 11) (local.get 12) (local.get 13) (local.get 14) (local.get 15) (local.get 0))))
            (func (export "_start") (drop (call $r (i64.const 1) (i64.const 1) (i64.const 1) (i64.const 1) (i64.const 1) (i64.const 1) (i64.const 1) (i64.const 1) (i64.const 1) (i64.const 1) (i64.const 1) (i64.const 1) (i64.const 1) (i64.const 1) (i64.const 1) (i64.const 1))))"#).as_bytes(),
        &Options::default(),
    );
    s.push(s.case("deep_big_frames", "").declined(STACK_WHY));

    // Limits.
    s.module("memory_bomb", wat(MEMORY_BOMB).as_bytes());
    s.push(
        s.case("memory_bomb", "")
            .limits(|l| l.memory_bytes = 4 << 20),
    );
    s.module("memory_steps", wat(MEMORY_STEPS).as_bytes());
    // 3 pages and a bit: the limit is rounded down.
    s.push(
        s.case("memory_steps", "")
            .limits(|l| l.memory_bytes = 3 * 65536 + 100),
    );
    s.push(
        s.case("memory_steps", "4GiB")
            .limits(|l| l.memory_bytes = Limits::MAX_MEMORY),
    );
    s.module(
        "memory_declared_max",
        module(
            r#"(func (export "_start") (local $r i32)
            (local.set $r (memory.grow (i32.const 5)))
            (i32.store8 (i32.const 64) (local.get $r))
            (call $print (i32.const 64) (i32.const 1)))"#,
        )
        .replace(
            r#"(memory (export "memory") 1)"#,
            r#"(memory (export "memory") 1 2)"#,
        )
        .as_bytes(),
    );
    s.push(s.case("memory_declared_max", ""));
    s.module(
        "initial_memory_100_pages",
        br#"(module (memory (export "memory") 100) (func (export "_start")))"#,
    );
    s.push(
        s.case("initial_memory_100_pages", "refused")
            .limits(|l| l.memory_bytes = 1 << 20),
    );
    s.push(
        s.case("initial_memory_100_pages", "exact")
            .limits(|l| l.memory_bytes = 100 << 16),
    );
    s.module("recurse", wat(RECURSE).as_bytes());
    s.push(s.case("recurse", ""));
    s.module_with(
        "nested_depth_10",
        wat(NESTED).as_bytes(),
        &Options {
            max_call_depth: 10,
            ..Options::default()
        },
    );
    // argv = ["main", arg]: args size is 5 + len(arg) + 1, so n = len(arg).
    s.push(s.case("nested_depth_10", "9").args(&["123456789"]));
    s.push(s.case("nested_depth_10", "10").args(&["1234567890"]));
    s.module("print_loop", wat(PRINT_LOOP).as_bytes());
    s.push(
        s.case("print_loop", "cap_10500")
            .limits(|l| l.stdout_bytes = 10_500),
    );
    s.module(
        "spin",
        wat(r#"(func (export "_start") (loop $l (br $l)))"#).as_bytes(),
    );
    s.push(s.case("spin", "").limits(|l| l.fuel = 1_000_003));
    s.module("stdout_split", wat(STDOUT_SPLIT).as_bytes());
    for cap in [0, 5, 7, 8] {
        s.push(
            s.case("stdout_split", &format!("cap_{cap}"))
                .limits(|l| l.stdout_bytes = cap),
        );
    }
    rune_cases(&mut s);
    s.module(
        "nop_nop",
        wat(r#"(func (export "_start") nop nop)"#).as_bytes(),
    );
    for fuel in [2, 3] {
        s.push(
            s.case("nop_nop", &format!("fuel_{fuel}"))
                .limits(|l| l.fuel = fuel),
        );
    }
    // Running out before, at and after a host call, and an engine trap past the limit.
    s.module("write_hi", wat(WRITE_HI).as_bytes());
    for fuel in [10, 11, 13] {
        s.push(
            s.case("write_hi", &format!("fuel_{fuel}"))
                .limits(|l| l.fuel = fuel),
        );
    }
    s.module(
        "trap_past_limit",
        wat(r#"(func (export "_start") nop nop (drop (i32.load (i32.const 70000))))"#).as_bytes(),
    );
    s.push(s.case("trap_past_limit", "").limits(|l| l.fuel = 2));
    s.wat_case("stderr_flood", STDERR_FLOOD);
    s.wat_case("floats", FLOATS);
    s.wat_case("simd", SIMD);
    s.wat_case("table_grow", TABLE_GROW);
    blob_cases(&mut s);
    scratch_cases(&mut s);
    s
}

/// The writable file system (`fs.rs` with scratch space): raw calls at several limits, and a
/// real program (Rust std's file system) creating, renaming, listing and removing files.
pub(crate) fn scratch_cases(s: &mut Suite) {
    let blobs = mounted();
    let refs: Vec<(&str, &[u8])> = blobs.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    s.module("symlinks", wat(SYMLINKS).as_bytes());
    s.push(s.case("symlinks", "default"));
    s.push(s.case("symlinks", "mounted").blobs(&refs));
    for limit in [100, 400, 1_000] {
        s.push(
            s.case("symlinks", &format!("scratch_{limit}"))
                .limits(|l| l.scratch_bytes = limit),
        );
    }
    s.module("scratch_ops", wat(SCRATCH_OPS).as_bytes());
    s.push(s.case("scratch_ops", "default"));
    s.push(s.case("scratch_ops", "mounted").blobs(&refs));
    for limit in [1_000, 10_000, 200_000] {
        s.push(
            s.case("scratch_ops", &format!("scratch_{limit}"))
                .limits(|l| l.scratch_bytes = limit),
        );
    }
    s.push(
        s.case("scratch_ops", "no_scratch")
            .limits(|l| l.scratch_bytes = 0),
    );
    s.module("files", runegrid_examples::FILES);
    let data = "pear\napple\nfig\n\u{fc}ber\n".as_bytes().to_vec();
    s.push(
        s.case("files", "tour")
            .args(&["tour"])
            .blobs(&[("data.txt", &data), ("b", &blobs[1].1)]),
    );
    s.push(s.case("files", "tour_no_blobs").args(&["tour"]));
    s.push(
        s.case("files", "tour_no_scratch")
            .args(&["tour"])
            .limits(|l| l.scratch_bytes = 0),
    );
    s.push(
        s.case("files", "tour_tight")
            .args(&["tour"])
            .limits(|l| l.scratch_bytes = 3_000),
    );
    s.push(
        s.case("files", "tour_output_limit")
            .args(&["tour"])
            .limits(|l| l.output_bytes = 40),
    );
    for (chunk, limit) in [(65536, 200_000), (1000, 50_000), (7, 1_000)] {
        s.push(
            s.case("files", &format!("fill_{chunk}_{limit}"))
                .args(&["fill", &chunk.to_string()])
                .limits(|l| l.scratch_bytes = limit),
        );
    }
    s.push(
        s.case("files", "sort")
            .args(&["sort", "/blobs/data.txt", "/out/sorted.txt"])
            .blobs(&[("data.txt", &data)]),
    );
    // Blobs mounted at paths of their own, beside plain ones, with and without scratch space.
    let at_paths = [
        ("/data/input.txt", data.as_slice()),
        ("b", blobs[1].1.as_slice()),
        ("/data/deep/er/x.bin", blobs[3].1.as_slice()),
        ("/top", b"top\n".as_slice()),
    ];
    for (name, limit) in [("tour_paths", 1 << 20), ("tour_paths_no_scratch", 0)] {
        s.push(
            s.case("files", name)
                .args(&["tour"])
                .blobs(&at_paths)
                .limits(|l| l.scratch_bytes = limit),
        );
    }
    s.push(
        s.case("files", "sort_path")
            .args(&["sort", "/data/input.txt", "/out/sorted.txt"])
            .blobs(&at_paths),
    );
    s.push(s.case("scratch_ops", "paths").blobs(&at_paths));
    // A C program (clang + wasi-libc: stdio, dirent, stat, mkdir, unlink).
    if let Some(wasm) = common::c_example("wordfreq") {
        s.module("wordfreq_c", &wasm);
        let book = "It was the best of times, it was the worst of times.\n".repeat(50);
        for (name, input) in [("book", "/blobs/book.txt"), ("missing", "/blobs/nope")] {
            s.push(
                s.case("wordfreq_c", name)
                    .args(&[input, "/out/words"])
                    .blobs(&[("book.txt", book.as_bytes())]),
            );
        }
    }
}

/// The blobs most blob cases mount (names chosen to catch decoding differences: a BOM, non-ASCII).
pub(crate) fn mounted() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("a.txt", b"hello, blobs!".to_vec()),
        ("b", (0..100u8).collect()),
        ("empty", Vec::new()),
        ("\u{feff}bom", b"byte order mark".to_vec()),
        (
            "\u{fc}n\u{ef} \u{2713}",
            "ünï ✓ content".as_bytes().to_vec(),
        ),
    ]
}

/// Read-only mounts (`crates/sandbox/src/wasi/fs.rs`): the cases of `tests/blobs.rs` and their
/// edges, the same modules with nothing mounted, and the `echo` example reading files.
pub(crate) fn blob_cases(s: &mut Suite) {
    let blobs = mounted();
    let refs: Vec<(&str, &[u8])> = blobs.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    for (key, body) in [
        ("blob_dir", BLOB_DIR),
        ("blob_file", BLOB_FILE),
        ("blob_open", BLOB_OPEN),
    ] {
        s.module(key, wat(&format!("{BLOB_DATA}\n{body}")).as_bytes());
        s.push(s.case(key, "mounted").blobs(&refs));
        s.push(s.case(key, "one").blobs(&refs[1..2]));
        s.push(s.case(key, "unmounted"));
    }
    // A large blob: reads far into it.
    let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    s.push(
        s.case("blob_file", "big")
            .blobs(&[("b", &big), ("a.txt", b"x"), ("empty", b"")]),
    );
    // A real program (Rust std's file system over WASI) reading mounted files.
    let data = b"a blob of data\n\x00\xff binary".to_vec();
    s.push(
        s.case("echo", "cat_blobs")
            .args(&[
                "cat:/blobs/data.txt",
                "cat:/blobs/./data.txt",
                "cat:/blobs/big",
                "cat:/blobs//empty",
            ])
            .blobs(&[
                ("data.txt", &data),
                ("big", &big[..100_000]),
                ("empty", b""),
            ]),
    );
    for (name, path) in [
        ("missing", "cat:/blobs/nope"),
        ("directory", "cat:/blobs"),
        ("dotdot", "cat:/blobs/../blobs/data.txt"),
        ("relative", "cat:data.txt"),
        ("elsewhere", "cat:/etc/passwd"),
        ("trailing_slash", "cat:/blobs/data.txt/"),
    ] {
        s.push(
            s.case("echo", &format!("cat_{name}"))
                .args(&[path])
                .blobs(&[("data.txt", &data)]),
        );
    }
    s.push(
        s.case("echo", "cat_unmounted")
            .args(&["cat:/blobs/data.txt"]),
    );
}

/// The Rune runner (a few MB of rune compiled to WASI): scripts compiled and run on both
/// engines, values, prints, floats, errors and fuel exhaustion.
pub(crate) fn rune_cases(s: &mut Suite) {
    use runegrid_runner::call_stdin;
    const SCRIPT: &str = r#"
pub fn add(a, b) { a + b }
pub fn keys(n) {
    let o = #{};
    for i in 0..n { o[`key${i}`] = i; }
    let seen = [];
    for (k, v) in o { println!("{}={}", k, v); seen.push(k); }
    seen
}
pub fn floats(x) { [x / 3.0, x.sqrt(), x.powf(0.7), (x * 1e300) * 1e10 > 1e308, 0.1 + 0.2] }
pub fn overflow() { 9223372036854775807 + 1 }
pub fn spin() { print!("spin"); loop { } }
"#;
    // As the coordinator registers it: pre-initialized (the snapshot is in the module).
    let prepared =
        runegrid_sandbox::preinitialize(runegrid_runner::RUNE_RUNNER, runegrid_runner::INIT_FUNC)
            .expect("the runner pre-initializes");
    s.module("rune", &prepared);
    let call = |f: &str, args: &[serde_json::Value]| call_stdin(SCRIPT, f, args).into_bytes();
    s.push(
        s.case("rune", "add")
            .stdin(&call("add", &[json!(1), json!(2)])),
    );
    for seed in [0, 42] {
        s.push(
            s.case("rune", &format!("keys_seed_{seed}"))
                .stdin(&call("keys", &[json!(40)]))
                .seed(seed),
        );
    }
    s.push(
        s.case("rune", "floats")
            .stdin(&call("floats", &[json!(2.5)])),
    );
    s.push(s.case("rune", "overflow").stdin(&call("overflow", &[])));
    s.push(
        s.case("rune", "compile_error")
            .stdin(call_stdin("pub fn f() {\n  let = 1;\n}", "f", &[]).as_bytes()),
    );
    s.push(s.case("rune", "bad_stdin").stdin(b"{\"script\": 1}"));
    s.push(
        s.case("rune", "out_of_fuel")
            .stdin(&call("spin", &[]))
            .limits(|l| l.fuel = 100_000_000),
    );
}
