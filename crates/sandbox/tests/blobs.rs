//! Read-only file mounts ("blobs"): what a guest sees under `/blobs`, call by call.

mod common;

use common::{limits, module, program, sandbox};
use runegrid_core::{ExecStatus, Limits};
use runegrid_sandbox::{Blob, RunOutput, SandboxError, TaskRun};
use std::sync::Arc;

/// Imports, a record area and helpers: `$rec` appends an i32 (sign-extended) and `$rec64` an
/// i64 to the record area at 4096; `$dump` writes the records to stdout. Strings used as paths
/// live at 100-160 (the data segments); reads land at 1000 and up; out-parameters at 16-112
/// and 200-264.
const HARNESS: &str = r#"
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func $dir_name (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_filestat_get" (func $path_stat (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_pread" (func $pread (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_seek" (func $seek (param i32 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_tell" (func $tell (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $fdstat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_filestat_get" (func $filestat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_readdir" (func $readdir (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_renumber" (func $renumber (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_allocate" (func $allocate (param i32 i64 i64) (result i32)))
  (import "wasi_snapshot_preview1" "fd_sync" (func $sync (param i32) (result i32)))
  (global $p (mut i32) (i32.const 4096))
  (func $rec64 (param $v i64)
    (i64.store (global.get $p) (local.get $v))
    (global.set $p (i32.add (global.get $p) (i32.const 8))))
  (func $rec (param $v i32) (call $rec64 (i64.extend_i32_s (local.get $v))))
  (func $dump (call $print (i32.const 4096) (i32.sub (global.get $p) (i32.const 4096))))
  ;; one iovec at 40: (ptr 1000, len $len)
  (func $iov (param $len i32)
    (i32.store (i32.const 40) (i32.const 1000))
    (i32.store (i32.const 44) (local.get $len)))
  ;; opens PATH (at $ptr, $len bytes) relative to $dir, read-only; records errno and fd
  (func $try_open (param $dir i32) (param $ptr i32) (param $len i32) (param $oflags i32) (param $rights i64)
    (i32.store (i32.const 16) (i32.const -1))
    (call $rec (call $open (local.get $dir) (i32.const 0) (local.get $ptr) (local.get $len)
      (local.get $oflags) (local.get $rights) (i64.const 0) (i32.const 0) (i32.const 16)))
    (call $rec (i32.load (i32.const 16))))
  (data (i32.const 100) "a.txt")
  (data (i32.const 110) "nope")
  (data (i32.const 120) "../a.txt")
  (data (i32.const 130) "a.txt/")
  (data (i32.const 140) "./b")
  (data (i32.const 150) "\ff")
  (data (i32.const 160) ".")
"#;

fn blobs() -> Vec<Blob> {
    vec![
        Blob::new("a.txt", &b"hello, blobs!"[..]),
        Blob::new("b", (0..100u8).collect::<Vec<u8>>()),
    ]
}

fn run_with(body: &str, blobs: &[Blob]) -> Result<RunOutput, SandboxError> {
    let wat = module(&format!(
        "{HARNESS}\n(func (export \"_start\")\n{body}\n(call $dump))"
    ));
    let p = program(&wat);
    let task = TaskRun {
        args: &[],
        env: &[],
        stdin: b"",
        seed: 0,
        // No scratch space: the blob mount alone, at fd 3 (`tests/scratch.rs` has the rest).
        limits: Limits {
            scratch_bytes: 0,
            ..limits()
        },
        blobs,
    };
    sandbox().run(&p, &task, &mut |_| {})
}

/// Runs `body` with [`blobs`] mounted and returns the records.
fn records(body: &str) -> Vec<i64> {
    records_with(body, &blobs())
}

fn records_with(body: &str, blobs: &[Blob]) -> Vec<i64> {
    let out = run_with(body, blobs).expect("run");
    assert_eq!(
        out.execution.status,
        ExecStatus::Exited { code: 0 },
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.execution
        .stdout
        .chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

const BADF: i64 = 8;
const FAULT: i64 = 21;
const ILSEQ: i64 = 25;
const INVAL: i64 = 28;
const NAMETOOLONG: i64 = 37;
const NOENT: i64 = 44;
const NOTDIR: i64 = 54;
const NOTSUP: i64 = 58;
const ROFS: i64 = 69;
const SPIPE: i64 = 70;
const NOTCAPABLE: i64 = 76;

#[test]
fn the_mount_is_a_preopened_directory() {
    let r = records(
        r#"
    (call $rec (call $prestat (i32.const 3) (i32.const 16)))
    (call $rec (i32.load8_u (i32.const 16)))
    (call $rec (i32.load (i32.const 20)))
    (call $rec (call $dir_name (i32.const 3) (i32.const 1000) (i32.const 5)))
    (call $rec (call $dir_name (i32.const 3) (i32.const 1000) (i32.const 6)))
    (call $rec64 (i64.load (i32.const 1000)))
    (call $rec (call $prestat (i32.const 4) (i32.const 16)))
    (call $rec (call $prestat (i32.const 3) (i32.const 65535)))
    (call $rec (call $fdstat (i32.const 3) (i32.const 16)))
    (call $rec (i32.load8_u (i32.const 16)))
    (call $rec64 (i64.load (i32.const 24)))
    (call $rec64 (i64.load (i32.const 32)))"#,
    );
    let mut name = [0u8; 8];
    name[..6].copy_from_slice(b"/blobs");
    assert_eq!(
        r,
        vec![
            0,
            0,
            6,
            NAMETOOLONG,
            0,
            i64::from_le_bytes(name),
            BADF,
            FAULT,
            0,
            3,
            runegrid_sandbox::wasi::DIR_RIGHTS as i64,
            runegrid_sandbox::wasi::FILE_RIGHTS as i64,
        ]
    );
}

#[test]
fn a_blob_reads_seeks_and_stats_like_a_file() {
    let r = records(
        r#"
    (call $try_open (i32.const 3) (i32.const 100) (i32.const 5) (i32.const 0) (i64.const 2))
    (call $iov (i32.const 5))
    (call $rec (call $read (i32.const 4) (i32.const 40) (i32.const 1) (i32.const 24)))
    (call $rec (i32.load (i32.const 24)))
    (call $rec (i32.load (i32.const 1000)))
    (call $rec (call $tell (i32.const 4) (i32.const 32)))
    (call $rec64 (i64.load (i32.const 32)))
    (call $rec (call $seek (i32.const 4) (i64.const -3) (i32.const 2) (i32.const 32)))
    (call $rec64 (i64.load (i32.const 32)))
    (call $iov (i32.const 8))
    (call $rec (call $read (i32.const 4) (i32.const 40) (i32.const 1) (i32.const 24)))
    (call $rec (i32.load (i32.const 24)))
    (call $iov (i32.const 5))
    (call $rec (call $pread (i32.const 4) (i32.const 40) (i32.const 1) (i64.const 7) (i32.const 24)))
    (call $rec (i32.load (i32.const 24)))
    (call $rec (i32.load (i32.const 1000)))
    (call $rec (call $tell (i32.const 4) (i32.const 32)))
    (call $rec64 (i64.load (i32.const 32)))
    (call $rec (call $seek (i32.const 4) (i64.const -100) (i32.const 1) (i32.const 32)))
    (call $rec (call $seek (i32.const 4) (i64.const 0) (i32.const 3) (i32.const 32)))
    (call $rec (call $seek (i32.const 4) (i64.const 50) (i32.const 0) (i32.const 32)))
    (call $rec (call $read (i32.const 4) (i32.const 40) (i32.const 1) (i32.const 24)))
    (call $rec (i32.load (i32.const 24)))
    (call $rec (call $filestat (i32.const 4) (i32.const 48)))
    (call $rec64 (i64.load (i32.const 56)))
    (call $rec (i32.load8_u (i32.const 64)))
    (call $rec64 (i64.load (i32.const 72)))
    (call $rec64 (i64.load (i32.const 80)))
    (call $rec64 (i64.load (i32.const 104)))
    (call $rec (call $fdstat (i32.const 4) (i32.const 16)))
    (call $rec (i32.load8_u (i32.const 16)))
    (call $rec (call $fd_write (i32.const 4) (i32.const 40) (i32.const 1) (i32.const 24)))
    (call $rec (call $allocate (i32.const 4) (i64.const 0) (i64.const 1)))
    (call $rec (call $sync (i32.const 4)))
    (call $rec (call $close (i32.const 4)))
    (call $rec (call $close (i32.const 4)))
    (call $rec (call $read (i32.const 4) (i32.const 40) (i32.const 1) (i32.const 24)))
    (call $rec (call $seek (i32.const 1) (i64.const 0) (i32.const 0) (i32.const 32)))"#,
    );
    assert_eq!(
        r,
        vec![
            0,
            4,
            0,
            5,
            i64::from(u32::from_le_bytes(*b"hell")),
            0,
            5,
            0,
            10,
            0,
            3,
            0,
            5,
            i64::from(u32::from_le_bytes(*b"blob")),
            0,
            13, // pread leaves the position alone
            INVAL,
            INVAL,
            0,
            0,
            0, // past the end: 0 bytes
            0,
            2,  // ino: first blob
            4,  // regular file
            1,  // nlink
            13, // size
            0,  // ctim
            0,
            4,
            BADF, // fd_write: not open for writing
            ROFS, // fd_allocate
            0,
            0,
            BADF,
            BADF,
            SPIPE, // stdio keeps its answers
        ]
    );
}

#[test]
fn path_open_refuses_what_a_read_only_mount_cannot_do() {
    let r = records(
        r#"
    (call $try_open (i32.const 3) (i32.const 110) (i32.const 4) (i32.const 0) (i64.const 2))
    (call $try_open (i32.const 3) (i32.const 120) (i32.const 8) (i32.const 0) (i64.const 2))
    (call $try_open (i32.const 3) (i32.const 130) (i32.const 6) (i32.const 0) (i64.const 2))
    (call $try_open (i32.const 3) (i32.const 100) (i32.const 5) (i32.const 1) (i64.const 2))
    (call $try_open (i32.const 3) (i32.const 100) (i32.const 5) (i32.const 8) (i64.const 2))
    (call $try_open (i32.const 3) (i32.const 100) (i32.const 5) (i32.const 0) (i64.const 66))
    (call $try_open (i32.const 3) (i32.const 100) (i32.const 5) (i32.const 2) (i64.const 2))
    (call $try_open (i32.const 0) (i32.const 100) (i32.const 5) (i32.const 0) (i64.const 2))
    (call $try_open (i32.const 9) (i32.const 100) (i32.const 5) (i32.const 0) (i64.const 2))
    (call $try_open (i32.const 3) (i32.const 150) (i32.const 1) (i32.const 0) (i64.const 2))
    (call $try_open (i32.const 3) (i32.const 65530) (i32.const 10) (i32.const 0) (i64.const 2))
    (call $try_open (i32.const 3) (i32.const 100) (i32.const 0) (i32.const 0) (i64.const 2))
    (call $try_open (i32.const 3) (i32.const 140) (i32.const 3) (i32.const 0) (i64.const 2))
    (call $try_open (i32.const 4) (i32.const 100) (i32.const 5) (i32.const 0) (i64.const 2))"#,
    );
    // Each open records (errno, fd written or -1).
    assert_eq!(
        r,
        vec![
            NOENT, -1, //  nope
            NOTCAPABLE, -1, //  ../a.txt
            NOTDIR, -1, //  a.txt/
            0, 4, //  O_CREAT on an existing file opens it
            ROFS, -1, //  O_TRUNC
            ROFS, -1, //  FD_WRITE right
            NOTDIR, -1, //  O_DIRECTORY on a file
            NOTDIR, -1, //  dirfd is stdin
            BADF, -1, //  dirfd not open
            ILSEQ, -1, //  not UTF-8
            FAULT, -1, //  path outside memory
            NOENT, -1, //  empty path
            0, 5, //  ./b
            NOTDIR, -1, //  dirfd is a file
        ]
    );
}

#[test]
fn the_directory_lists_stats_and_closes() {
    let r = records(
        r#"
    (call $rec (call $readdir (i32.const 3) (i32.const 1000) (i32.const 200) (i64.const 0) (i32.const 24)))
    (call $rec (i32.load (i32.const 24)))
    (call $rec64 (i64.load (i32.const 1000)))
    (call $rec64 (i64.load (i32.const 1008)))
    (call $rec (i32.load (i32.const 1016)))
    (call $rec (i32.load8_u (i32.const 1020)))
    (call $rec (i32.load (i32.const 1024)))
    (call $rec (call $readdir (i32.const 3) (i32.const 1000) (i32.const 200) (i64.const 1) (i32.const 24)))
    (call $rec (i32.load (i32.const 24)))
    (call $rec (call $readdir (i32.const 3) (i32.const 1000) (i32.const 10) (i64.const 0) (i32.const 24)))
    (call $rec (i32.load (i32.const 24)))
    (call $rec (call $readdir (i32.const 3) (i32.const 1000) (i32.const 200) (i64.const 2) (i32.const 24)))
    (call $rec (i32.load (i32.const 24)))
    (call $rec (call $path_stat (i32.const 3) (i32.const 0) (i32.const 140) (i32.const 3) (i32.const 200)))
    (call $rec64 (i64.load (i32.const 232)))
    (call $rec (call $path_stat (i32.const 3) (i32.const 0) (i32.const 110) (i32.const 4) (i32.const 200)))
    (call $try_open (i32.const 3) (i32.const 160) (i32.const 1) (i32.const 2) (i64.const 0))
    (call $rec (call $read (i32.const 4) (i32.const 40) (i32.const 1) (i32.const 24)))
    (call $rec (call $readdir (i32.const 0) (i32.const 1000) (i32.const 200) (i64.const 0) (i32.const 24)))
    (call $rec (call $renumber (i32.const 3) (i32.const 4)))
    (call $rec (call $renumber (i32.const 3) (i32.const 5)))
    (call $rec (call $close (i32.const 3)))
    (call $rec (call $prestat (i32.const 3) (i32.const 16)))
    (call $try_open (i32.const 4) (i32.const 100) (i32.const 5) (i32.const 0) (i64.const 2))"#,
    );
    assert_eq!(
        r,
        vec![
            0,
            24 + 5 + 24 + 1, // both entries
            1,               // d_next
            2,               // d_ino
            5,               // d_namlen
            4,               // d_type: regular file
            i64::from(u32::from_le_bytes(*b"a.tx")),
            0,
            25, // from cookie 1: "b" only
            0,
            10, // cut to the buffer
            0,
            0, // past the end
            0,
            100, // size of b
            NOENT,
            0,
            4, // "." opens the directory again, as fd 4
            BADF,
            NOTDIR, // readdir on stdin
            0,      // renumber 3 onto 4: fd 4 is the preopened directory now
            BADF,   // fd 3 is free
            BADF,   // and cannot be closed
            BADF,   // fd 3 is no longer a preopen
            0,
            3, // the lowest free fd is 3 again, opened from fd 4
        ]
    );
}

#[test]
fn without_blobs_nothing_changes() {
    let body = r#"
    (call $rec (call $prestat (i32.const 3) (i32.const 16)))
    (call $try_open (i32.const 3) (i32.const 100) (i32.const 5) (i32.const 0) (i64.const 2))
    (call $rec (call $path_stat (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 5) (i32.const 200)))
    (call $rec (call $read (i32.const 3) (i32.const 40) (i32.const 1) (i32.const 24)))
    (call $rec (call $close (i32.const 3)))
    (call $rec (call $readdir (i32.const 3) (i32.const 1000) (i32.const 200) (i64.const 0) (i32.const 24)))
    (call $rec (call $readdir (i32.const 1) (i32.const 1000) (i32.const 200) (i64.const 0) (i32.const 24)))
    (call $rec (call $seek (i32.const 0) (i64.const 0) (i32.const 0) (i32.const 32)))
    (call $rec (call $renumber (i32.const 1) (i32.const 2)))"#;
    assert_eq!(
        records_with(body, &[]),
        vec![
            BADF, NOTCAPABLE, -1, NOTCAPABLE, BADF, BADF, BADF, NOTDIR, SPIPE, NOTSUP
        ]
    );
}

#[test]
fn bad_blob_names_are_refused() {
    for blobs in [
        vec![Blob::new("a/b", &b""[..])],
        vec![Blob::new("", &b""[..])],
        vec![Blob::new("..", &b""[..])],
        vec![Blob::new("x", &b""[..]), Blob::new("x", &b"1"[..])],
    ] {
        let err = run_with("", &blobs).unwrap_err();
        assert!(matches!(err, SandboxError::InvalidTask(_)), "{err}");
        assert_eq!(err.failure_kind(), runegrid_core::FailureKind::InvalidTask);
    }
}

#[test]
fn blobs_are_shared_not_copied_and_runs_agree() {
    let big: Arc<[u8]> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let blobs = vec![Blob {
        name: "a.txt".into(),
        bytes: big.clone(),
    }];
    let body = r#"
    (call $try_open (i32.const 3) (i32.const 100) (i32.const 5) (i32.const 0) (i64.const 2))
    (call $rec (call $seek (i32.const 4) (i64.const 1000000) (i32.const 0) (i32.const 32)))
    (call $iov (i32.const 8))
    (call $rec (call $read (i32.const 4) (i32.const 40) (i32.const 1) (i32.const 24)))
    (call $rec64 (i64.load (i32.const 1000)))"#;
    let a = run_with(body, &blobs).unwrap();
    let b = run_with(body, &blobs).unwrap();
    assert_eq!(a.execution, b.execution);
    assert_eq!(a.execution.digest(), b.execution.digest());
    let want: [u8; 8] = big[1_000_000..1_000_008].try_into().unwrap();
    let r = records_with(body, &blobs);
    assert_eq!(r[..4], [0, 4, 0, 0]);
    assert_eq!(r[4], i64::from_le_bytes(want));
    // The runs borrowed the bytes: only `big` and `blobs` hold them now.
    assert_eq!(Arc::strong_count(&big), 2);
}
