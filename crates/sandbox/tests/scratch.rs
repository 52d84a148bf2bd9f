//! The writable file system: scratch space, `/out`, limits and determinism, seen through a
//! real program (`examples/files`, plain `std::fs`) and through raw WASI calls.

mod common;

use common::{c_example, limits, module, program, sandbox};
use runegrid_core::{ExecStatus, Limits};
use runegrid_instrument::{Options, instrument};
use runegrid_sandbox::{Blob, Program, RunOutput, TaskRun};
use std::sync::{Arc, OnceLock};

fn files() -> &'static Program {
    static P: OnceLock<Arc<Program>> = OnceLock::new();
    P.get_or_init(|| {
        let out = instrument(runegrid_examples::FILES, &Options::default()).expect("instrument");
        sandbox().compile(&out.bytes).expect("compile")
    })
}

fn run_files(args: &[&str], scratch_bytes: u64, blobs: &[Blob]) -> RunOutput {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let task = TaskRun {
        args: &args,
        env: &[],
        stdin: b"",
        seed: 0,
        limits: Limits {
            scratch_bytes,
            ..limits()
        },
        blobs,
    };
    sandbox().run(files(), &task, &mut |_| {}).expect("run")
}

fn stdout(out: &RunOutput) -> String {
    String::from_utf8_lossy(&out.execution.stdout).into_owned()
}

#[test]
fn a_std_fs_program_creates_renames_lists_and_removes() {
    let blobs = [Blob::new("data.txt", &b"b\na\nc\n"[..])];
    let out = run_files(&["tour"], 1 << 20, &blobs);
    let text = stdout(&out);
    assert_eq!(
        out.execution.status,
        ExecStatus::Exited { code: 0 },
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        // The tree at start: the mount, then the scratch directories.
        "dir  blobs 0 bytes, mtime 0\n  file data.txt 6 bytes, mtime 0\ndir  tmp 0 bytes, mtime 0\ndir  out 0 bytes, mtime 0\n",
        "mkdir /tmp/a again: AlreadyExists (errno 20)\n",
        "mkdir /nowhere/x: NotFound (errno 44)\n",
        "content: \"hello\\nworld\\n\"\n",
        "content: \"heXYo\\nworld\\n\"\n",
        "bytes: [104, 101, 88, 0, 0, 0]\n",
        "bytes: [104, 101, 88, 0, 0, 0, 0, 0, 0, 0, 33]\n",
        "read the old name: NotFound (errno 44)\n",
        "greeting: \"other\"\n",
        "mv a into a/b: InvalidInput (errno 28)\n",
        "rmdir /tmp/c (not empty): Uncategorized (errno 55)\n",
        "unlink a directory: IsADirectory (errno 31)\n",
        "rmdir a file: NotADirectory (errno 54)\n",
        "listed 300\nrm -r /tmp/many: ok\nlist it: NotFound (errno 44)\n",
        "content: \"still here\", size 10\n",
        "blob data.txt (6 bytes)\n",
        "create /blobs/new: ReadOnlyFilesystem (errno 69)\n",
        "  file report.txt 17 bytes",
        "    file part-2 20 bytes",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // Removed directories and files are gone from the final tree.
    assert!(!text.contains("dir  c "), "{text}");
    assert!(!text.contains("ghost 10"), "{text}");

    // The same run again: the same transcript and fuel, byte for byte.
    let again = run_files(&["tour"], 1 << 20, &blobs);
    assert_eq!(again.execution, out.execution);
}

#[test]
fn the_scratch_limit_is_enospc_not_a_trap() {
    let limit = 200_000;
    let out = run_files(&["fill", "65536"], limit, &[]);
    let text = stdout(&out);
    assert_eq!(
        out.execution.status,
        ExecStatus::Exited { code: 0 },
        "{text}"
    );
    // The file costs 64 bytes plus its name ("fill", 4): the rest is its data, written
    // partly by the last write, then ENOSPC.
    let data = limit - 64 - 4;
    assert!(
        text.starts_with(&format!(
            "wrote {data} bytes, then StorageFull (errno 51)\nsize on record {data}\n"
        )),
        "{text}"
    );
    assert!(
        text.contains("mkdir /tmp/more: StorageFull (errno 51)\n"),
        "{text}"
    );
    // Removing the file gives the space back.
    assert!(
        text.contains("rm /tmp/fill: ok\nwrite again: ok\nsize 65536\n"),
        "{text}"
    );
}

#[test]
fn without_scratch_there_is_no_writable_root() {
    let out = run_files(&["tour"], 0, &[]);
    assert_eq!(out.execution.status, ExecStatus::Exited { code: 1 });
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("files: "), "{err}");

    // With blobs only, they are readable and nothing is writable.
    let blobs = [Blob::new("in.txt", &b"z\ny\n"[..])];
    let out = run_files(&["sort", "/blobs/in.txt", "/tmp/sorted"], 0, &blobs);
    assert_eq!(out.execution.status, ExecStatus::Exited { code: 1 });
    let out = run_files(
        &["sort", "/blobs/in.txt", "/out/sorted.txt"],
        1 << 20,
        &blobs,
    );
    assert_eq!(
        stdout(&out),
        "sorted 2 lines into /out/sorted.txt (4 bytes)\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Blobs mounted at paths of their own: readable there, read-only, directories made on the
/// way and writable beside them; names that collide are refused before the run.
#[test]
fn blobs_mount_at_their_own_paths() {
    let blobs = [
        Blob::new("/data/input.txt", &b"b\na\n"[..]),
        Blob::new("plain.txt", &b"plain"[..]),
    ];
    let out = run_files(
        &["sort", "/data/input.txt", "/data/sorted.txt"],
        1 << 20,
        &blobs,
    );
    assert_eq!(
        stdout(&out),
        "sorted 2 lines into /data/sorted.txt (4 bytes)\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_files(&["tour"], 1 << 20, &blobs);
    let text = stdout(&out);
    assert!(
        text.starts_with(
            "== the tree at start\ndir  blobs 0 bytes, mtime 0\n  file plain.txt 5 bytes, mtime 0\n\
             dir  tmp 0 bytes, mtime 0\ndir  out 0 bytes, mtime 0\ndir  data 0 bytes, mtime 0\n\
             \x20 file input.txt 4 bytes, mtime 0\n"
        ),
        "{text}"
    );
    // Overwriting the mounted file is refused (read-only), in every scratch setting.
    let out = run_files(&["sort", "/data/input.txt", "/data/input.txt"], 0, &blobs);
    assert_eq!(out.execution.status, ExecStatus::Exited { code: 1 });
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Names that cannot be mounted: the run is refused, not started.
    for bad in [
        vec!["/a", "/a/b"],
        vec!["/blobs/x"],
        vec!["/tmp"],
        vec!["/x/../y"],
    ] {
        let blobs: Vec<Blob> = bad.iter().map(|n| Blob::new(*n, &b"x"[..])).collect();
        let task = TaskRun {
            args: &[],
            env: &[],
            stdin: b"",
            seed: 0,
            limits: limits(),
            blobs: &blobs,
        };
        let r = sandbox().run(files(), &task, &mut |_| {});
        assert!(
            matches!(r, Err(runegrid_sandbox::SandboxError::InvalidTask(_))),
            "{bad:?}: {r:?}"
        );
    }
}

/// A C program built with clang and wasi-libc: reads a blob, spills to `/tmp`, writes
/// `/out/words/*`, lists and stats them.
#[test]
fn a_c_program_reads_a_blob_and_writes_outputs() {
    let Some(wasm) = c_example("wordfreq") else {
        return;
    };
    let out = instrument(&wasm, &Options::default()).expect("instrument");
    let p = sandbox().compile(&out.bytes).expect("compile");
    let book = "The cat saw the dog. The dog saw a cat, and the cat ran.\n";
    let blobs = [Blob::new("book.txt", book.as_bytes())];
    let args = ["/blobs/book.txt".to_string(), "/out/words".to_string()];
    let task = TaskRun {
        args: &args,
        env: &[],
        stdin: b"",
        seed: 0,
        limits: limits(),
        blobs: &blobs,
    };
    let run = sandbox().run(&p, &task, &mut |_| {}).expect("run");
    assert_eq!(
        stdout(&run),
        "counts.tsv 40 bytes\nsummary.txt 45 bytes\n\
         14 words, 7 distinct; most frequent: the (4)\n",
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // A missing input: a message and exit code 1, not a trap.
    let args = ["/blobs/nope.txt".to_string(), "/out/words".to_string()];
    let run = sandbox()
        .run(
            &p,
            &TaskRun {
                args: &args,
                ..task
            },
            &mut |_| {},
        )
        .expect("run");
    assert_eq!(run.execution.status, ExecStatus::Exited { code: 1 });
    assert_eq!(
        String::from_utf8_lossy(&run.stderr),
        "wordfreq: cannot open /blobs/nope.txt: No such file or directory\n"
    );
}

/// Raw calls: costs, cookies that survive removals, renumbering, times.
#[test]
fn raw_calls_keep_their_contract() {
    let wat = module(
        r#"
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_create_directory" (func $mkdir (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_unlink_file" (func $unlink (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_readdir" (func $readdir (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_renumber" (func $renumber (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_filestat_get" (func $fstat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (global $p (mut i32) (i32.const 4096))
  (func $rec (param $v i32)
    (i64.store (global.get $p) (i64.extend_i32_s (local.get $v)))
    (global.set $p (i32.add (global.get $p) (i32.const 8))))
  (data (i32.const 100) "tmp/d")
  (data (i32.const 110) "tmp/d/x")
  (data (i32.const 120) "tmp/d/y")
  (data (i32.const 130) "tmp/d/z")
  (func (export "_start")
    ;; fd 3 is the root: no blobs
    (call $rec (call $prestat (i32.const 3) (i32.const 200)))
    (call $rec (i32.load (i32.const 204)))
    (call $rec (call $mkdir (i32.const 3) (i32.const 100) (i32.const 5)))
    ;; three files x, y, z (CREAT)
    (call $rec (call $open (i32.const 3) (i32.const 0) (i32.const 110) (i32.const 7) (i32.const 1) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 16)))
    (call $rec (call $open (i32.const 3) (i32.const 0) (i32.const 120) (i32.const 7) (i32.const 1) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 20)))
    (call $rec (call $open (i32.const 3) (i32.const 0) (i32.const 130) (i32.const 7) (i32.const 1) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 24)))
    (call $rec (i32.load (i32.const 16)))
    ;; remove y; open tmp/d and list from cookie 1: z only (cookie 2 is z's place)
    (call $rec (call $unlink (i32.const 3) (i32.const 120) (i32.const 7)))
    (call $rec (call $open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 5) (i32.const 2) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 28)))
    (call $rec (call $readdir (i32.load (i32.const 28)) (i32.const 1000) (i32.const 200) (i64.const 1) (i32.const 32)))
    (call $rec (i32.load (i32.const 32)))
    (call $rec (i32.wrap_i64 (i64.load (i32.const 1000))))
    ;; renumber the directory's fd onto x's: x's fd now lists
    (call $rec (call $renumber (i32.load (i32.const 28)) (i32.load (i32.const 16))))
    (call $rec (call $readdir (i32.load (i32.const 16)) (i32.const 1000) (i32.const 200) (i64.const 0) (i32.const 32)))
    (call $rec (i32.load (i32.const 32)))
    ;; a clock read moves "now": a new file's mtime is after it
    (drop (call $clock (i32.const 0) (i64.const 0) (i32.const 40)))
    (call $rec (call $open (i32.const 3) (i32.const 0) (i32.const 120) (i32.const 7) (i32.const 1) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 20)))
    (call $rec (call $fstat (i32.load (i32.const 20)) (i32.const 300)))
    (call $rec (i32.wrap_i64 (i64.sub (i64.load (i32.const 348)) (i64.load (i32.const 40)))))
    (call $print (i32.const 4096) (i32.sub (global.get $p) (i32.const 4096))))
"#,
    );
    let p = program(&wat);
    let task = TaskRun {
        args: &[],
        env: &[],
        stdin: b"",
        seed: 0,
        limits: limits(),
        blobs: &[],
    };
    let out = sandbox().run(&p, &task, &mut |_| {}).expect("run");
    assert_eq!(out.execution.status, ExecStatus::Exited { code: 0 });
    let rec: Vec<i64> = out
        .execution
        .stdout
        .chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let entry = 24 + 1; // one dirent with a one-byte name
    assert_eq!(
        rec,
        vec![
            0,
            1, // fd 3: a preopen named "/"
            0, // mkdir tmp/d
            0,
            0,
            0,
            4, // x, y, z at fds 4, 5, 6
            0, // unlink y
            0, // open tmp/d
            0,
            entry,
            3, // from cookie 1: only z, whose d_next is 3
            0, // renumber
            0,
            2 * entry, // x and z
            0,         // y again (fd 5 was free)
            0,
            0, // its mtime is the clock's last reading
        ]
    );
}
