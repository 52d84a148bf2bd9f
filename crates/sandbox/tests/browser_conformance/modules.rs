//! The WAT modules of the conformance cases: WASI calls, traps, limits, floats, SIMD, and the
//! blob modules (reading files mounted under `/blobs`).

use super::*;

/// Every WASI import of the runegrid subset but `fd_write` and `proc_exit` (which
/// [`common::module`] declares), one per line so that `module` moves them up.
pub(crate) const WASI_IMPORTS: &str = r#"
(import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
(import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
(import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
(import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
(import "wasi_snapshot_preview1" "clock_res_get" (func $clock_res_get (param i32 i32) (result i32)))
(import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
(import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
(import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
(import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
(import "wasi_snapshot_preview1" "fd_seek" (func $fd_seek (param i32 i64 i32 i32) (result i32)))
(import "wasi_snapshot_preview1" "fd_tell" (func $fd_tell (param i32 i32) (result i32)))
(import "wasi_snapshot_preview1" "fd_fdstat_get" (func $fd_fdstat_get (param i32 i32) (result i32)))
(import "wasi_snapshot_preview1" "fd_fdstat_set_flags" (func $fd_fdstat_set_flags (param i32 i32) (result i32)))
(import "wasi_snapshot_preview1" "fd_filestat_get" (func $fd_filestat_get (param i32 i32) (result i32)))
(import "wasi_snapshot_preview1" "fd_prestat_get" (func $fd_prestat_get (param i32 i32) (result i32)))
(import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func $fd_prestat_dir_name (param i32 i32 i32) (result i32)))
(import "wasi_snapshot_preview1" "fd_sync" (func $fd_sync (param i32) (result i32)))
(import "wasi_snapshot_preview1" "fd_datasync" (func $fd_datasync (param i32) (result i32)))
(import "wasi_snapshot_preview1" "fd_advise" (func $fd_advise (param i32 i64 i64 i32) (result i32)))
(import "wasi_snapshot_preview1" "fd_allocate" (func $fd_allocate (param i32 i64 i64) (result i32)))
(import "wasi_snapshot_preview1" "fd_pread" (func $fd_pread (param i32 i32 i32 i64 i32) (result i32)))
(import "wasi_snapshot_preview1" "fd_pwrite" (func $fd_pwrite (param i32 i32 i32 i64 i32) (result i32)))
(import "wasi_snapshot_preview1" "fd_readdir" (func $fd_readdir (param i32 i32 i32 i64 i32) (result i32)))
(import "wasi_snapshot_preview1" "fd_renumber" (func $fd_renumber (param i32 i32) (result i32)))
(import "wasi_snapshot_preview1" "fd_filestat_set_size" (func $fd_filestat_set_size (param i32 i64) (result i32)))
(import "wasi_snapshot_preview1" "fd_filestat_set_times" (func $fd_filestat_set_times (param i32 i64 i64 i32) (result i32)))
(import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
(import "wasi_snapshot_preview1" "path_filestat_get" (func $path_filestat_get (param i32 i32 i32 i32 i32) (result i32)))
(import "wasi_snapshot_preview1" "path_create_directory" (func $path_create_directory (param i32 i32 i32) (result i32)))
(import "wasi_snapshot_preview1" "path_remove_directory" (func $path_remove_directory (param i32 i32 i32) (result i32)))
(import "wasi_snapshot_preview1" "path_unlink_file" (func $path_unlink_file (param i32 i32 i32) (result i32)))
(import "wasi_snapshot_preview1" "path_rename" (func $path_rename (param i32 i32 i32 i32 i32 i32) (result i32)))
(import "wasi_snapshot_preview1" "path_readlink" (func $path_readlink (param i32 i32 i32 i32 i32 i32) (result i32)))
(import "wasi_snapshot_preview1" "path_symlink" (func $path_symlink (param i32 i32 i32 i32 i32) (result i32)))
(import "wasi_snapshot_preview1" "path_link" (func $path_link (param i32 i32 i32 i32 i32 i32 i32) (result i32)))
(import "wasi_snapshot_preview1" "path_filestat_set_times" (func $path_filestat_set_times (param i32 i32 i32 i32 i64 i64 i32) (result i32)))
(import "wasi_snapshot_preview1" "proc_raise" (func $proc_raise (param i32) (result i32)))
(import "wasi_snapshot_preview1" "sched_yield" (func $sched_yield (result i32)))
(import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
(import "wasi_snapshot_preview1" "sock_accept" (func $sock_accept (param i32 i32 i32) (result i32)))
(import "wasi_snapshot_preview1" "sock_recv" (func $sock_recv (param i32 i32 i32 i32 i32 i32) (result i32)))
(import "wasi_snapshot_preview1" "sock_send" (func $sock_send (param i32 i32 i32 i32 i32) (result i32)))
(import "wasi_snapshot_preview1" "sock_shutdown" (func $sock_shutdown (param i32 i32) (result i32)))
"#;

/// Helpers of every WAT case besides [`common::PRELUDE`]'s `$write` / `$print`: `$rec`
/// appends a byte (an errno) to a record at 1024, `$dump` prints the record, `$iov` stores an
/// iovec.
pub(crate) const HELPERS: &str = r#"
(global $at (mut i32) (i32.const 1024))
(func $rec (param i32)
  (i32.store8 (global.get $at) (local.get 0))
  (global.set $at (i32.add (global.get $at) (i32.const 1))))
(func $dump (call $print (i32.const 1024) (i32.sub (global.get $at) (i32.const 1024))))
(func $iov (param $at i32) (param $ptr i32) (param $len i32)
  (i32.store (local.get $at) (local.get $ptr))
  (i32.store offset=4 (local.get $at) (local.get $len)))
"#;

/// A module (one 64 KiB memory) with every WASI import, the prelude, the helpers and `body`.
pub(crate) fn wat(body: &str) -> String {
    module(&format!("{WASI_IMPORTS}\n{HELPERS}\n{body}"))
}

pub(crate) const ARGS_ENV: &str = r#"
(func (export "_start")
  (memory.fill (i32.const 2048) (i32.const 0xaa) (i32.const 1024))
  (call $rec (call $args_sizes_get (i32.const 2048) (i32.const 2052)))
  (call $rec (call $args_get (i32.const 2056) (i32.const 2100)))
  (call $rec (call $environ_sizes_get (i32.const 2200) (i32.const 2204)))
  (call $rec (call $environ_get (i32.const 2208) (i32.const 2300)))
  ;; EFAULT: nothing changes
  (call $rec (call $args_sizes_get (i32.const 65534) (i32.const 2400)))
  (call $rec (call $args_sizes_get (i32.const 2404) (i32.const 65533)))
  (call $rec (call $args_sizes_get (i32.const -4) (i32.const 2408)))
  (call $rec (call $args_get (i32.const 65524) (i32.const 2412)))
  (call $rec (call $args_get (i32.const 2500) (i32.const 65530)))
  (call $rec (call $environ_get (i32.const -8) (i32.const 2500)))
  (call $rec (call $environ_get (i32.const 2500) (i32.const 65537)))
  (call $rec (call $environ_sizes_get (i32.const 2600) (i32.const 65536)))
  ;; exactly at the end of memory
  (call $rec (call $args_sizes_get (i32.const 65532) (i32.const 65528)))
  ;; count and size at one address: size is written last
  (call $rec (call $args_sizes_get (i32.const 2700) (i32.const 2700)))
  ;; pointer table overlapping the strings: the writes interleave
  (call $rec (call $args_get (i32.const 2800) (i32.const 2802)))
  (call $rec (call $environ_get (i32.const 2900) (i32.const 2900)))
  (call $dump)
  (call $print (i32.const 2048) (i32.const 1024))
  (call $print (i32.const 65520) (i32.const 16)))
"#;

pub(crate) const FD_WRITE: &str = r#"
(data (i32.const 2000) "ABCDEFGHIJ")
(func (export "_start") (local $i i32)
  (memory.fill (i32.const 1500) (i32.const 0xaa) (i32.const 64))
  (call $iov (i32.const 3000) (i32.const 2000) (i32.const 3))
  (call $iov (i32.const 3008) (i32.const 2005) (i32.const 0))
  (call $iov (i32.const 3016) (i32.const 2003) (i32.const 4))
  (call $rec (call $fd_write (i32.const 1) (i32.const 3000) (i32.const 3) (i32.const 1500)))
  (call $rec (call $fd_write (i32.const 0) (i32.const 3000) (i32.const 3) (i32.const 1504)))
  (call $rec (call $fd_write (i32.const 3) (i32.const 3000) (i32.const 3) (i32.const 1504)))
  (call $rec (call $fd_write (i32.const -1) (i32.const 3000) (i32.const 3) (i32.const 1504)))
  ;; the iovec table leaves memory
  (call $rec (call $fd_write (i32.const 1) (i32.const 65532) (i32.const 1) (i32.const 1504)))
  ;; the second iovec leaves memory: nothing is written, on either fd
  (call $iov (i32.const 3100) (i32.const 2000) (i32.const 3))
  (call $iov (i32.const 3108) (i32.const 65535) (i32.const 2))
  (call $rec (call $fd_write (i32.const 1) (i32.const 3100) (i32.const 2) (i32.const 1504)))
  (call $rec (call $fd_write (i32.const 2) (i32.const 3100) (i32.const 2) (i32.const 1504)))
  ;; nwritten leaves memory: nothing is written
  (call $rec (call $fd_write (i32.const 1) (i32.const 3000) (i32.const 1) (i32.const 65533)))
  ;; a negative count is a huge unsigned one
  (call $rec (call $fd_write (i32.const 1) (i32.const 3000) (i32.const -1) (i32.const 1504)))
  ;; no iovecs, the table at and past the end of memory
  (call $rec (call $fd_write (i32.const 1) (i32.const 3000) (i32.const 0) (i32.const 1508)))
  (call $rec (call $fd_write (i32.const 1) (i32.const 65536) (i32.const 0) (i32.const 1512)))
  (call $rec (call $fd_write (i32.const 1) (i32.const 65537) (i32.const 0) (i32.const 1516)))
  ;; empty iovecs at and past the end of memory
  (call $iov (i32.const 3200) (i32.const 65536) (i32.const 0))
  (call $iov (i32.const 3208) (i32.const 65537) (i32.const 0))
  (call $rec (call $fd_write (i32.const 1) (i32.const 3200) (i32.const 1) (i32.const 1520)))
  (call $rec (call $fd_write (i32.const 1) (i32.const 3208) (i32.const 1) (i32.const 1524)))
  ;; stderr
  (call $rec (call $fd_write (i32.const 2) (i32.const 3000) (i32.const 3) (i32.const 1528)))
  ;; 100 iovecs over the same 10 bytes
  (loop $l
    (call $iov (i32.add (i32.const 4000) (i32.mul (local.get $i) (i32.const 8)))
      (i32.const 2000) (i32.const 10))
    (local.set $i (i32.add (local.get $i) (i32.const 1)))
    (br_if $l (i32.lt_u (local.get $i) (i32.const 100))))
  (call $rec (call $fd_write (i32.const 1) (i32.const 4000) (i32.const 100) (i32.const 1532)))
  ;; nwritten overwrites the iovec it was read from
  (call $rec (call $fd_write (i32.const 1) (i32.const 3000) (i32.const 1) (i32.const 3000)))
  (call $dump)
  (call $print (i32.const 1500) (i32.const 64))
  (call $print (i32.const 3000) (i32.const 24)))
"#;

pub(crate) const FD_READ: &str = r#"
(func $step (param $fd i32) (param $iovs i32) (param $n i32) (param $out i32)
  (memory.fill (i32.const 4000) (i32.const 46) (i32.const 32))
  (i32.store (i32.const 1200) (i32.const 0xaaaaaaaa))
  (call $rec (call $fd_read (local.get $fd) (local.get $iovs) (local.get $n) (local.get $out)))
  (call $rec (i32.load8_u (i32.const 1200)))
  (call $print (i32.const 4000) (i32.const 32)))
(func (export "_start")
  (call $iov (i32.const 3000) (i32.const 4000) (i32.const 3))
  (call $iov (i32.const 3008) (i32.const 4010) (i32.const 0))
  (call $iov (i32.const 3016) (i32.const 4020) (i32.const 5))
  (call $iov (i32.const 3100) (i32.const 4000) (i32.const 1))
  (call $iov (i32.const 3200) (i32.const 4000) (i32.const 2))
  (call $iov (i32.const 3208) (i32.const 65535) (i32.const 2))
  (call $iov (i32.const 3300) (i32.const 4000) (i32.const 20))
  (call $iov (i32.const 3308) (i32.const 4025) (i32.const 5))
  (call $step (i32.const 0) (i32.const 3000) (i32.const 3) (i32.const 1200))
  (call $step (i32.const 0) (i32.const 3100) (i32.const 1) (i32.const 1200))
  (call $step (i32.const 1) (i32.const 3000) (i32.const 3) (i32.const 1200))
  (call $step (i32.const 5) (i32.const 3000) (i32.const 3) (i32.const 1200))
  ;; EFAULT consumes nothing and writes nothing
  (call $step (i32.const 0) (i32.const 3200) (i32.const 2) (i32.const 1200))
  (call $step (i32.const 0) (i32.const 3000) (i32.const 3) (i32.const 65534))
  (call $step (i32.const 0) (i32.const 3000) (i32.const -1) (i32.const 1200))
  (call $step (i32.const 0) (i32.const 3000) (i32.const 0) (i32.const 1200))
  (call $step (i32.const 0) (i32.const 3000) (i32.const 3) (i32.const 1200))
  (call $step (i32.const 0) (i32.const 3300) (i32.const 2) (i32.const 1200))
  ;; a short read stops at the first iovec it does not fill
  (call $step (i32.const 0) (i32.const 3300) (i32.const 2) (i32.const 1200))
  (call $step (i32.const 0) (i32.const 3000) (i32.const 3) (i32.const 1200))
  (call $dump))
"#;

pub(crate) const CLOCK_RANDOM: &str = r#"
(func $random (param $len i32)
  (memory.fill (i32.const 2048) (i32.const 0xaa) (i32.const 16))
  (call $rec (call $random_get (i32.const 2048) (local.get $len)))
  (call $print (i32.const 2048) (i32.const 16)))
(func (export "_start") (local $i i32)
  (memory.fill (i32.const 1200) (i32.const 0xaa) (i32.const 128))
  (call $rec (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 1200)))
  (call $rec (call $clock_time_get (i32.const 1) (i64.const 0) (i32.const 1208)))
  (call $rec (call $clock_time_get (i32.const 2) (i64.const 0) (i32.const 1216)))
  (call $rec (call $clock_time_get (i32.const 3) (i64.const -1) (i32.const 1224)))
  ;; EINVAL and EFAULT do not tick
  (call $rec (call $clock_time_get (i32.const 4) (i64.const 0) (i32.const 1232)))
  (call $rec (call $clock_time_get (i32.const -1) (i64.const 0) (i32.const 1232)))
  (call $rec (call $clock_time_get (i32.const 9) (i64.const 0) (i32.const 65533)))
  (call $rec (call $clock_time_get (i32.const 1) (i64.const 0) (i32.const 65529)))
  (call $rec (call $clock_time_get (i32.const 1) (i64.const 0) (i32.const -8)))
  (call $rec (call $clock_time_get (i32.const 1) (i64.const 0) (i32.const 65528)))
  (i64.store (i32.const 1240) (i64.load (i32.const 65528)))
  (call $rec (call $clock_time_get (i32.const 0) (i64.const 0) (i32.const 1248)))
  (call $rec (call $clock_res_get (i32.const 0) (i32.const 1256)))
  (call $rec (call $clock_res_get (i32.const 3) (i32.const 1264)))
  (call $rec (call $clock_res_get (i32.const 4) (i32.const 1272)))
  (call $rec (call $clock_res_get (i32.const -1) (i32.const 1272)))
  (call $rec (call $clock_res_get (i32.const 1) (i32.const 65530)))
  ;; 1000 more ticks
  (loop $l
    (drop (call $clock_time_get (i32.const 1) (i64.const 0) (i32.const 1280)))
    (local.set $i (i32.add (local.get $i) (i32.const 1)))
    (br_if $l (i32.lt_u (local.get $i) (i32.const 1000))))
  (call $rec (call $clock_time_get (i32.const 0) (i64.const 0) (i32.const 1288)))
  (call $print (i32.const 1200) (i32.const 128))
  ;; whole outputs, the last one cut
  (call $random (i32.const 0))
  (call $random (i32.const 1))
  (call $random (i32.const 7))
  (call $random (i32.const 8))
  (call $random (i32.const 9))
  (call $random (i32.const 13))
  (call $random (i32.const 3))
  ;; EFAULT consumes no output
  (call $rec (call $random_get (i32.const 65535) (i32.const 2)))
  (call $rec (call $random_get (i32.const 100) (i32.const -1)))
  (call $rec (call $random_get (i32.const -1) (i32.const 0)))
  (call $rec (call $random_get (i32.const 65536) (i32.const 0)))
  (call $random (i32.const 16))
  ;; a big buffer
  (call $rec (call $random_get (i32.const 8192) (i32.const 40000)))
  (call $print (i32.const 8192) (i32.const 40000))
  (call $random (i32.const 5))
  (call $dump))
"#;

/// `poll_oneoff` on the virtual clock: sleeps, deadlines, fds ready at once, errors.
/// Subscriptions are built at 4096 (48 bytes each), events land at 8192 (32 each), the count at
/// 12000; `$poll` records the errno and prints the count, the events and the clock after.
pub(crate) const POLL: &str = r#"
(func $clock (param $i i32) (param $userdata i64) (param $id i32) (param $timeout i64) (param $flags i32)
  (local $at i32)
  (local.set $at (i32.add (i32.const 4096) (i32.mul (local.get $i) (i32.const 48))))
  (memory.fill (local.get $at) (i32.const 0x5a) (i32.const 48))
  (i64.store (local.get $at) (local.get $userdata))
  (i32.store8 offset=8 (local.get $at) (i32.const 0))
  (i32.store offset=16 (local.get $at) (local.get $id))
  (i64.store offset=24 (local.get $at) (local.get $timeout))
  (i64.store offset=32 (local.get $at) (i64.const 1000))
  (i32.store16 offset=40 (local.get $at) (local.get $flags)))
(func $fd (param $i i32) (param $userdata i64) (param $tag i32) (param $fd i32)
  (local $at i32)
  (local.set $at (i32.add (i32.const 4096) (i32.mul (local.get $i) (i32.const 48))))
  (memory.fill (local.get $at) (i32.const 0x5a) (i32.const 48))
  (i64.store (local.get $at) (local.get $userdata))
  (i32.store8 offset=8 (local.get $at) (local.get $tag))
  (i32.store offset=16 (local.get $at) (local.get $fd)))
(func $now
  (drop (call $clock_time_get (i32.const 1) (i64.const 0) (i32.const 12008)))
  (call $print (i32.const 12008) (i32.const 8)))
(func $poll (param $n i32)
  (memory.fill (i32.const 8192) (i32.const 0xaa) (i32.const 320))
  (i32.store (i32.const 12000) (i32.const 0xaaaaaaaa))
  (call $rec (call $poll_oneoff (i32.const 4096) (i32.const 8192) (local.get $n) (i32.const 12000)))
  (call $print (i32.const 12000) (i32.const 4))
  (call $print (i32.const 8192) (i32.mul (local.get $n) (i32.const 32)))
  (call $now))
(func (export "_start")
  ;; a sleep of 5 ms on the monotonic clock: no wall time, the counter jumps
  (call $clock (i32.const 0) (i64.const 11) (i32.const 1) (i64.const 5000000) (i32.const 0))
  (call $poll (i32.const 1))
  ;; a relative and an absolute deadline: the earliest one alone
  (call $clock (i32.const 0) (i64.const 21) (i32.const 1) (i64.const 3000000) (i32.const 0))
  (call $clock (i32.const 1) (i64.const 22) (i32.const 2) (i64.const 6000000) (i32.const 1))
  (call $poll (i32.const 2))
  ;; two due at the same deadline
  (call $clock (i32.const 0) (i64.const 31) (i32.const 3) (i64.const 9000000) (i32.const 1))
  (call $clock (i32.const 1) (i64.const 32) (i32.const 1) (i64.const 2999000) (i32.const 0))
  (call $poll (i32.const 2))
  ;; realtime: an absolute deadline in the past is due at once; one ahead moves the counter
  (call $clock (i32.const 0) (i64.const 41) (i32.const 0) (i64.const 5) (i32.const 1))
  (call $poll (i32.const 1))
  (call $clock (i32.const 0) (i64.const 42) (i32.const 0) (i64.const 1700000000020000000) (i32.const 1))
  (call $poll (i32.const 1))
  ;; fds are ready at once and the clock stays: stdin's bytes left, stdout, errors
  (call $clock (i32.const 0) (i64.const 51) (i32.const 1) (i64.const 1000) (i32.const 0))
  (call $fd (i32.const 1) (i64.const 52) (i32.const 1) (i32.const 0))
  (call $fd (i32.const 2) (i64.const 53) (i32.const 2) (i32.const 1))
  (call $fd (i32.const 3) (i64.const 54) (i32.const 2) (i32.const 2))
  (call $fd (i32.const 4) (i64.const 55) (i32.const 1) (i32.const 1))
  (call $fd (i32.const 5) (i64.const 56) (i32.const 2) (i32.const 0))
  (call $fd (i32.const 6) (i64.const 57) (i32.const 1) (i32.const 99))
  (call $fd (i32.const 7) (i64.const 58) (i32.const 1) (i32.const -1))
  (call $poll (i32.const 8))
  ;; a read takes bytes: fewer are left
  (call $iov (i32.const 3000) (i32.const 3100) (i32.const 4))
  (call $rec (call $fd_read (i32.const 0) (i32.const 3000) (i32.const 1) (i32.const 3010)))
  (call $fd (i32.const 0) (i64.const 59) (i32.const 1) (i32.const 0))
  (call $poll (i32.const 1))
  ;; an unknown clock id is an event with EINVAL, at once
  (call $clock (i32.const 0) (i64.const 61) (i32.const 7) (i64.const 10) (i32.const 0))
  (call $clock (i32.const 1) (i64.const 62) (i32.const 1) (i64.const 10) (i32.const 0))
  (call $poll (i32.const 2))
  ;; a zero timeout is due at once
  (call $clock (i32.const 0) (i64.const 71) (i32.const 1) (i64.const 0) (i32.const 0))
  (call $poll (i32.const 1))
  ;; errors of the call: nothing written, the clock stays
  (call $rec (call $poll_oneoff (i32.const 4096) (i32.const 8192) (i32.const 0) (i32.const 12000)))
  (call $fd (i32.const 0) (i64.const 81) (i32.const 3) (i32.const 0))
  (call $clock (i32.const 1) (i64.const 82) (i32.const 1) (i64.const 10) (i32.const 0))
  (call $rec (call $poll_oneoff (i32.const 4096) (i32.const 8192) (i32.const 2) (i32.const 12000)))
  (call $clock (i32.const 0) (i64.const 83) (i32.const 1) (i64.const 10) (i32.const 0))
  (call $rec (call $poll_oneoff (i32.const 65530) (i32.const 8192) (i32.const 1) (i32.const 12000)))
  (call $rec (call $poll_oneoff (i32.const 4096) (i32.const 65520) (i32.const 1) (i32.const 12000)))
  (call $rec (call $poll_oneoff (i32.const 4096) (i32.const 8192) (i32.const 1) (i32.const 65534)))
  (call $rec (call $poll_oneoff (i32.const 4096) (i32.const 8192) (i32.const -1) (i32.const 12000)))
  (call $print (i32.const 8192) (i32.const 64))
  (call $now)
  ;; events written over the subscriptions, after all were read
  (call $clock (i32.const 0) (i64.const 91) (i32.const 1) (i64.const 7) (i32.const 0))
  (call $clock (i32.const 1) (i64.const 92) (i32.const 1) (i64.const 7) (i32.const 0))
  (call $rec (call $poll_oneoff (i32.const 4096) (i32.const 4096) (i32.const 2) (i32.const 12000)))
  (call $print (i32.const 4096) (i32.const 96))
  ;; a deadline past the end of time saturates; the next reading wraps
  (call $clock (i32.const 0) (i64.const 99) (i32.const 1) (i64.const -2) (i32.const 0))
  (call $poll (i32.const 1))
  (call $rec (call $clock_time_get (i32.const 0) (i64.const 0) (i32.const 12016)))
  (call $print (i32.const 12016) (i32.const 8))
  (call $dump))
"#;

/// The socket functions: no fd is a socket.
pub(crate) const SOCKETS: &str = r#"
(func $each (param $fd i32)
  (call $rec (call $sock_accept (local.get $fd) (i32.const 0) (i32.const 2000)))
  (call $rec (call $sock_recv (local.get $fd) (i32.const 2000) (i32.const 1) (i32.const 0) (i32.const 2100) (i32.const 2104)))
  (call $rec (call $sock_send (local.get $fd) (i32.const 2000) (i32.const 1) (i32.const 0) (i32.const 2100)))
  (call $rec (call $sock_shutdown (local.get $fd) (i32.const 2))))
(func (export "_start")
  (memory.fill (i32.const 2000) (i32.const 0xaa) (i32.const 128))
  (call $each (i32.const 0))
  (call $each (i32.const 1))
  (call $each (i32.const 2))
  (call $each (i32.const 3))
  (call $each (i32.const 4))
  (call $each (i32.const -1))
  (call $print (i32.const 2000) (i32.const 128))
  (call $dump))
"#;

pub(crate) const FD_MISC: &str = r#"
(func $stat (param $fd i32)
  (memory.fill (i32.const 2048) (i32.const 0xaa) (i32.const 96))
  (call $rec (call $fd_fdstat_get (local.get $fd) (i32.const 2048)))
  (call $rec (call $fd_filestat_get (local.get $fd) (i32.const 2080)))
  (call $print (i32.const 2048) (i32.const 96)))
(func $ops (param $fd i32)
  (call $rec (call $fd_close (local.get $fd)))
  (call $rec (call $fd_seek (local.get $fd) (i64.const 0) (i32.const 0) (i32.const 2200)))
  (call $rec (call $fd_tell (local.get $fd) (i32.const 2200)))
  (call $rec (call $fd_fdstat_set_flags (local.get $fd) (i32.const 0)))
  (call $rec (call $fd_sync (local.get $fd)))
  (call $rec (call $fd_datasync (local.get $fd)))
  (call $rec (call $fd_advise (local.get $fd) (i64.const 0) (i64.const 0) (i32.const 0)))
  (call $rec (call $fd_allocate (local.get $fd) (i64.const 0) (i64.const 0)))
  (call $rec (call $fd_pread (local.get $fd) (i32.const 0) (i32.const 0) (i64.const 0) (i32.const 2200)))
  (call $rec (call $fd_pwrite (local.get $fd) (i32.const 0) (i32.const 0) (i64.const 0) (i32.const 2200)))
  (call $rec (call $fd_readdir (local.get $fd) (i32.const 0) (i32.const 0) (i64.const 0) (i32.const 2200)))
  (call $rec (call $fd_filestat_set_size (local.get $fd) (i64.const 0)))
  (call $rec (call $fd_filestat_set_times (local.get $fd) (i64.const 0) (i64.const 0) (i32.const 0)))
  (call $rec (call $fd_prestat_get (local.get $fd) (i32.const 2200)))
  (call $rec (call $fd_prestat_dir_name (local.get $fd) (i32.const 2200) (i32.const 8))))
(func (export "_start")
  (call $stat (i32.const 0))
  (call $stat (i32.const 1))
  (call $stat (i32.const 2))
  (call $stat (i32.const 3))
  (call $stat (i32.const 5))
  (call $stat (i32.const -1))
  (call $rec (call $fd_fdstat_get (i32.const 1) (i32.const 65520)))
  (call $rec (call $fd_filestat_get (i32.const 1) (i32.const 65500)))
  (call $rec (call $fd_fdstat_get (i32.const 0) (i32.const 65512)))
  (call $rec (call $fd_filestat_get (i32.const 2) (i32.const 65472)))
  (call $rec (call $fd_fdstat_get (i32.const 7) (i32.const 65520)))
  (call $ops (i32.const 0))
  (call $ops (i32.const 1))
  (call $ops (i32.const 2))
  (call $ops (i32.const 3))
  (call $ops (i32.const -1))
  (call $rec (call $fd_renumber (i32.const 1) (i32.const 2)))
  (call $rec (call $fd_renumber (i32.const 0) (i32.const 0)))
  (call $rec (call $fd_renumber (i32.const 1) (i32.const 5)))
  (call $rec (call $fd_renumber (i32.const 5) (i32.const 1)))
  (call $rec (call $path_open (i32.const 3) (i32.const 0) (i32.const 2000) (i32.const 4)
    (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 2200)))
  (call $rec (call $path_filestat_get (i32.const 3) (i32.const 0) (i32.const 2000) (i32.const 4) (i32.const 2200)))
  (call $rec (call $path_create_directory (i32.const 3) (i32.const 2000) (i32.const 4)))
  (call $rec (call $path_remove_directory (i32.const 3) (i32.const 2000) (i32.const 4)))
  (call $rec (call $path_unlink_file (i32.const 3) (i32.const 2000) (i32.const 4)))
  (call $rec (call $path_rename (i32.const 3) (i32.const 2000) (i32.const 4) (i32.const 3) (i32.const 2000) (i32.const 4)))
  (call $rec (call $path_readlink (i32.const 3) (i32.const 2000) (i32.const 4) (i32.const 2200) (i32.const 8) (i32.const 2208)))
  (call $rec (call $path_symlink (i32.const 2000) (i32.const 4) (i32.const 3) (i32.const 2000) (i32.const 4)))
  (call $rec (call $path_link (i32.const 3) (i32.const 0) (i32.const 2000) (i32.const 4) (i32.const 3) (i32.const 2000) (i32.const 4)))
  (call $rec (call $path_filestat_set_times (i32.const 3) (i32.const 0) (i32.const 2000) (i32.const 4) (i64.const 0) (i64.const 0) (i32.const 0)))
  (call $rec (call $poll_oneoff (i32.const 0) (i32.const 2200) (i32.const 1) (i32.const 2208)))
  (call $rec (call $proc_raise (i32.const 9)))
  (call $rec (call $sched_yield))
  (call $dump)
  (call $print (i32.const 2200) (i32.const 16)))
"#;

/// Bodies run after printing `before`, each in its own module with a 3-slot table (`$f`
/// at 0, `$g` of another type at 1, null at 2), a passive data and a passive element segment.
pub(crate) const TRAPS: &[(&str, &str)] = &[
    ("unreachable", "unreachable"),
    (
        "i32_div_s_zero",
        "(drop (i32.div_s (i32.const 1) (i32.const 0)))",
    ),
    (
        "i32_div_u_zero",
        "(drop (i32.div_u (i32.const 1) (i32.const 0)))",
    ),
    (
        "i32_rem_s_zero",
        "(drop (i32.rem_s (i32.const 1) (i32.const 0)))",
    ),
    (
        "i64_rem_u_zero",
        "(drop (i64.rem_u (i64.const 1) (i64.const 0)))",
    ),
    (
        "i64_div_s_zero",
        "(drop (i64.div_s (i64.const 1) (i64.const 0)))",
    ),
    (
        "i32_div_s_overflow",
        "(drop (i32.div_s (i32.const 0x80000000) (i32.const -1)))",
    ),
    (
        "i64_div_s_overflow",
        "(drop (i64.div_s (i64.const 0x8000000000000000) (i64.const -1)))",
    ),
    (
        "i32_rem_s_min_no_trap",
        "(call $rec (i32.rem_s (i32.const 0x80000000) (i32.const -1))) (call $dump)",
    ),
    (
        "trunc_sat_no_trap",
        "(i64.store (i32.const 2200) (i64.trunc_sat_f64_s (f64.const 1e300)))
         (i32.store (i32.const 2208) (i32.trunc_sat_f32_u (f32.const nan)))
         (call $print (i32.const 2200) (i32.const 12))",
    ),
    (
        "call_indirect_null",
        "(call_indirect (type $v) (i32.const 2))",
    ),
    (
        "call_indirect_oob",
        "(call_indirect (type $v) (i32.const 3))",
    ),
    (
        "call_indirect_negative",
        "(call_indirect (type $v) (i32.const -1))",
    ),
    (
        "call_indirect_signature",
        "(call_indirect (type $v) (i32.const 1))",
    ),
    ("load_oob", "(drop (i32.load (i32.const 65536)))"),
    (
        "load_offset_oob",
        "(drop (i32.load offset=65533 (i32.const 0)))",
    ),
    (
        "store_straddles_end",
        "(i64.store (i32.const 65530) (i64.const 1))",
    ),
    ("load8_negative", "(drop (i32.load8_u (i32.const -1)))"),
    (
        "memory_fill_oob",
        "(memory.fill (i32.const 65000) (i32.const 0) (i32.const 1000))",
    ),
    (
        "memory_copy_oob",
        "(memory.copy (i32.const 0) (i32.const 65000) (i32.const 1000))",
    ),
    (
        "memory_init_past_segment",
        "(memory.init $d (i32.const 0) (i32.const 1) (i32.const 3))",
    ),
    (
        "memory_init_dropped",
        "(data.drop $d) (memory.init $d (i32.const 0) (i32.const 0) (i32.const 1))",
    ),
    (
        "memory_init_dest_oob",
        "(memory.init $d (i32.const 65535) (i32.const 0) (i32.const 2))",
    ),
    (
        "memory_init_dropped_empty",
        "(data.drop $d) (memory.init $d (i32.const 65536) (i32.const 0) (i32.const 0))",
    ),
    ("table_get_oob", "(drop (table.get $t (i32.const 3)))"),
    (
        "table_set_oob",
        "(table.set $t (i32.const 5) (ref.null func))",
    ),
    (
        "table_fill_oob",
        "(table.fill $t (i32.const 2) (ref.null func) (i32.const 2))",
    ),
    (
        "table_copy_oob",
        "(table.copy $t $t (i32.const 0) (i32.const 2) (i32.const 2))",
    ),
    (
        "table_init_past_segment",
        "(table.init $t $e (i32.const 0) (i32.const 1) (i32.const 2))",
    ),
    (
        "table_init_dropped",
        "(elem.drop $e) (table.init $t $e (i32.const 0) (i32.const 0) (i32.const 1))",
    ),
    (
        "table_init_dest_oob",
        "(table.init $t $e (i32.const 2) (i32.const 0) (i32.const 2))",
    ),
    (
        "table_init_then_call",
        "(table.init $t $e (i32.const 1) (i32.const 0) (i32.const 2))
         (call_indirect (type $v) (i32.const 1))
         (call $proc_exit (call_indirect (type $ii) (i32.const 9) (i32.const 2)))",
    ),
];

/// Trapping float-to-integer truncations: wasmtime reports a NaN operand as
/// `bad_conversion_to_integer` and one out of range as `integer_overflow`, V8 words both
/// "float unrepresentable in integer range", so the browser engine declines them.
pub(crate) const TRUNC: &[(&str, &str)] = &[
    ("f32_nan_to_i32", "(drop (i32.trunc_f32_s (f32.const nan)))"),
    (
        "f64_nan_to_u64",
        "(drop (i64.trunc_f64_u (f64.const -nan)))",
    ),
    ("f32_big_to_i32", "(drop (i32.trunc_f32_s (f32.const 3e9)))"),
    (
        "f64_negative_to_u32",
        "(drop (i32.trunc_f64_u (f64.const -1)))",
    ),
    (
        "f64_big_to_i64",
        "(drop (i64.trunc_f64_s (f64.const 1e19)))",
    ),
];

pub(crate) fn trap_module(body: &str) -> String {
    wat(&format!(
        r#"
(type $v (func))
(type $ii (func (param i32) (result i32)))
(table $t 3 funcref)
(elem (i32.const 0) $f $g)
(elem $e func $f $g)
(data $d "abc")
(data (i32.const 2000) "before")
(func $f (type $v))
(func $g (type $ii) (local.get 0))
(func (export "_start")
  (call $print (i32.const 2000) (i32.const 6))
  {body})"#
    ))
}

pub(crate) const MEMORY_BOMB: &str = r#"
(func (export "_start")
  (loop $l
    (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1)) (then unreachable))
    (br $l)))"#;

/// Grows in steps and prints each `memory.grow` result and the final size (as bytes).
pub(crate) const MEMORY_STEPS: &str = r#"
(func $grow (param $pages i32) (call $rec (memory.grow (local.get $pages))))
(func (export "_start")
  (call $grow (i32.const 0))
  (call $grow (i32.const 1))
  (call $grow (i32.const 1))
  (call $grow (i32.const 1))
  (call $grow (i32.const 0x10000))
  (call $grow (i32.const -1))
  (call $rec (memory.size))
  (call $dump))"#;

pub(crate) const RECURSE: &str = r#"(func $r (call $r)) (func (export "_start") (call $r))"#;

/// Nests `n` calls below `_start` (n from the first argument's length).
pub(crate) const NESTED: &str = r#"
(func $r (param i32)
  (if (local.get 0) (then (call $r (i32.sub (local.get 0) (i32.const 1))))))
(func (export "_start")
  (drop (call $args_sizes_get (i32.const 100) (i32.const 104)))
  (call $r (i32.sub (i32.load (i32.const 104)) (i32.const 6))))"#;

pub(crate) const PRINT_LOOP: &str = r#"
(func (export "_start") (loop $l (call $print (i32.const 64) (i32.const 1000)) (br $l)))"#;

/// Writes 3 + 4 bytes in one call, then one byte, then exits 5.
pub(crate) const STDOUT_SPLIT: &str = r#"
(data (i32.const 2000) "ABCDEFGHIJ")
(func (export "_start")
  (call $iov (i32.const 3000) (i32.const 2000) (i32.const 3))
  (call $iov (i32.const 3008) (i32.const 2003) (i32.const 4))
  (call $rec (call $fd_write (i32.const 1) (i32.const 3000) (i32.const 0) (i32.const 3100)))
  (call $rec (call $fd_write (i32.const 1) (i32.const 3000) (i32.const 2) (i32.const 3100)))
  (call $print (i32.const 2007) (i32.const 1))
  (call $proc_exit (i32.const 5)))"#;

pub(crate) const STDERR_FLOOD: &str = r#"
(data (i32.const 2000) "done")
(func (export "_start")
  (memory.fill (i32.const 4096) (i32.const 69) (i32.const 60000))
  (call $write (i32.const 2) (i32.const 4096) (i32.const 60000))
  (call $write (i32.const 2) (i32.const 4096) (i32.const 60000))
  (call $print (i32.const 2000) (i32.const 4)))"#;

pub(crate) const FLOATS: &str = r#"
(global $p (mut i32) (i32.const 2048))
(func $f32 (param f32)
  (i32.store (global.get $p) (i32.reinterpret_f32 (local.get 0)))
  (global.set $p (i32.add (global.get $p) (i32.const 4))))
(func $f64 (param f64)
  (i64.store (global.get $p) (i64.reinterpret_f64 (local.get 0)))
  (global.set $p (i32.add (global.get $p) (i32.const 8))))
(func (export "_start")
  (call $f32 (f32.div (f32.const 0) (f32.const 0)))
  (call $f64 (f64.div (f64.const 0) (f64.const 0)))
  (call $f32 (f32.add (f32.const nan:0x1234) (f32.const 1)))
  (call $f64 (f64.mul (f64.const 2) (f64.add (f64.const nan:0x1234) (f64.const 1))))
  (call $f32 (f32.demote_f64 (f64.const nan:0x1234567)))
  (call $f64 (f64.promote_f32 (f32.sqrt (f32.const -1))))
  (call $f32 (f32.neg (f32.const nan:0x1234)))
  (call $f64 (f64.abs (f64.const -nan:0x1234)))
  (call $f64 (f64.copysign (f64.const nan:0x5) (f64.const -1)))
  (call $f32 (f32.min (f32.const -0) (f32.const 0)))
  (call $f64 (f64.max (f64.const nan:0x77) (f64.const 1)))
  (call $f64 (f64.nearest (f64.const 2.5)))
  (call $f64 (f64.sqrt (f64.const 2)))
  (call $f32 (f32.load (i32.const 0x7ff0)))
  (call $f64 (f64.convert_i64_u (i64.const -1)))
  (call $f32 (f32.convert_i64_s (i64.const 0x7fffffffffffffff)))
  (call $print (i32.const 2048) (i32.sub (global.get $p) (i32.const 2048))))"#;

/// SIMD: float lanes with NaNs (canonicalized lane by lane), bit-exact lane operations,
/// integer lanes, shuffles, lane loads and stores.
pub(crate) const SIMD: &str = r#"
(global $p (mut i32) (i32.const 2048))
(func $v (param v128)
  (v128.store (global.get $p) (local.get 0))
  (global.set $p (i32.add (global.get $p) (i32.const 16))))
(func (export "_start") (local $x v128)
  (i64.store (i32.const 0) (i64.const 0x0102030405060708))
  (i64.store (i32.const 8) (i64.const 0xf0e0d0c0b0a09080))
  (call $v (f32x4.div (v128.const f32x4 0 6 -0 1) (v128.const f32x4 0 2 0 0)))
  (call $v (f64x2.add (v128.const f64x2 nan:0x1234 1) (v128.const f64x2 1 -nan:0x5)))
  (call $v (f32x4.sqrt (v128.const f32x4 -1 4 nan:0x77 inf)))
  (call $v (f32x4.min (v128.const f32x4 -0 nan:0x3 1 2) (v128.const f32x4 0 1 nan:0x9 -2)))
  (call $v (f64x2.max (v128.const f64x2 -0 nan:0x3) (v128.const f64x2 0 1)))
  (call $v (f32x4.pmin (v128.const f32x4 nan:0x3 1 -0 2) (v128.const f32x4 0 nan:0x4 0 -2)))
  (call $v (f32x4.nearest (v128.const f32x4 2.5 -0.5 3.5 nan:0x10)))
  (call $v (f32x4.neg (v128.const f32x4 nan:0x1234 1 -2 0)))
  (call $v (f32x4.demote_f64x2_zero (v128.const f64x2 nan:0x1234567 1e300)))
  (call $v (f64x2.promote_low_f32x4 (f32x4.mul (v128.const f32x4 inf 3 0 0) (v128.const f32x4 0 0.5 0 0))))
  (call $v (i32x4.trunc_sat_f32x4_s (v128.const f32x4 nan 3e9 -3e9 -1.5)))
  (call $v (f32x4.convert_i32x4_u (v128.const i32x4 -1 0 7 0x7fffffff)))
  (call $v (i32x4.dot_i16x8_s (v128.load (i32.const 0)) (v128.const i16x8 1 -2 3 -4 5 -6 7 -8)))
  (call $v (i16x8.extmul_high_i8x16_u (v128.load (i32.const 0)) (i8x16.splat (i32.const 200))))
  (call $v (i8x16.add_sat_s (v128.load (i32.const 0)) (v128.const i8x16 127 127 127 127 -128 -128 -128 -128 1 1 1 1 1 1 1 1)))
  (call $v (i8x16.swizzle (v128.load (i32.const 0)) (v128.const i8x16 15 14 13 12 11 10 9 8 7 6 5 4 3 2 1 200)))
  (call $v (i8x16.shuffle 0 17 2 19 4 21 6 23 8 25 10 27 12 29 14 31 (v128.load (i32.const 0)) (v128.load offset=3 (i32.const 0))))
  (call $v (i64x2.shr_s (v128.load (i32.const 0)) (i32.const 67)))
  (call $v (v128.load8x8_s (i32.const 4)))
  (call $v (v128.load32_zero (i32.const 12)))
  (local.set $x (v128.load16_lane 5 (i32.const 6) (v128.const i64x2 0 0)))
  (call $v (local.get $x))
  (v128.store8_lane 2 (i32.const 3000) (v128.load (i32.const 0)))
  (i32.store (i32.const 3004) (i8x16.bitmask (v128.load (i32.const 0))))
  (i32.store (i32.const 3008) (i32x4.all_true (v128.load (i32.const 0))))
  (f32.store (i32.const 3012) (f32x4.extract_lane 2 (f32x4.div (v128.const f32x4 0 0 0 0) (v128.const f32x4 0 0 0 0))))
  (call $v (v128.load (i32.const 3000)))
  (call $print (i32.const 2048) (i32.sub (global.get $p) (i32.const 2048))))"#;

pub(crate) const TABLE_GROW: &str = r#"
(table $t 1 funcref)
(func (export "_start")
  (call $rec (table.grow $t (ref.null func) (i32.const 5)))
  (call $rec (table.grow $t (ref.null func) (i32.const 2000000)))
  (call $rec (table.size $t))
  (call $dump))"#;

pub(crate) const TRUNC_WHY: &str =
    "V8 does not say whether a truncation trapped on a NaN or out of range";
pub(crate) const STACK_WHY: &str =
    "the native stack ran out before the call-depth limit, at an engine-dependent depth";

/// Paths used by the blob modules: at 100 + 10 * i (see [`BLOB_PATHS`]).
pub(crate) const BLOB_DATA: &str = r#"
(data (i32.const 100) "a.txt")
(data (i32.const 110) "b")
(data (i32.const 120) "../a.txt")
(data (i32.const 130) "a.txt/")
(data (i32.const 140) "./b")
(data (i32.const 150) "\ff")
(data (i32.const 160) ".")
(data (i32.const 170) "nope")
(data (i32.const 180) "//.//b")
(data (i32.const 190) "\ef\bb\bfbom")
(data (i32.const 200) "\c3\bcn\c3\af \e2\9c\93")
(data (i32.const 210) "empty")
(data (i32.const 220) "b/..")
(data (i32.const 230) "./")
(data (i32.const 240) "bom")
(data (i32.const 250) "x/../b")
;; opens ($ptr, $len) under $dir: records errno and the fd written (-1 if none)
(func $open (param $dir i32) (param $ptr i32) (param $len i32) (param $oflags i32) (param $rights i64) (param $fdflags i32)
  (i32.store (i32.const 16) (i32.const -1))
  (call $rec (call $path_open (local.get $dir) (i32.const 0) (local.get $ptr) (local.get $len)
    (local.get $oflags) (local.get $rights) (i64.const 0) (local.get $fdflags) (i32.const 16)))
  (call $rec (i32.load (i32.const 16))))
(func $o (param $ptr i32) (param $len i32)
  (call $open (i32.const 3) (local.get $ptr) (local.get $len) (i32.const 0) (i64.const 2) (i32.const 0)))
;; path_filestat_get into 2400 (printed at the end)
(func $pstat (param $dir i32) (param $ptr i32) (param $len i32) (param $out i32)
  (call $rec (call $path_filestat_get (local.get $dir) (i32.const 0) (local.get $ptr) (local.get $len) (local.get $out))))
;; file operations without memory arguments on $fd
(func $ops (param $fd i32)
  (call $rec (call $fd_fdstat_set_flags (local.get $fd) (i32.const 0)))
  (call $rec (call $fd_sync (local.get $fd)))
  (call $rec (call $fd_datasync (local.get $fd)))
  (call $rec (call $fd_advise (local.get $fd) (i64.const 0) (i64.const 0) (i32.const 0)))
  (call $rec (call $fd_allocate (local.get $fd) (i64.const 0) (i64.const 1)))
  (call $rec (call $fd_pwrite (local.get $fd) (i32.const 3000) (i32.const 1) (i64.const 0) (i32.const 2200)))
  (call $rec (call $fd_write (local.get $fd) (i32.const 3000) (i32.const 1) (i32.const 2200)))
  (call $rec (call $fd_filestat_set_size (local.get $fd) (i64.const 0)))
  (call $rec (call $fd_filestat_set_times (local.get $fd) (i64.const 0) (i64.const 0) (i32.const 0)))
  (call $rec (call $path_create_directory (local.get $fd) (i32.const 100) (i32.const 5)))
  (call $rec (call $path_unlink_file (local.get $fd) (i32.const 100) (i32.const 5))))
"#;

/// The preopened directory: prestat, its name, stats, listings, file operations on it.
pub(crate) const BLOB_DIR: &str = r#"
(func $readdir (param $fd i32) (param $buf i32) (param $len i32) (param $cookie i64) (param $out i32)
  (call $rec (call $fd_readdir (local.get $fd) (local.get $buf) (local.get $len) (local.get $cookie) (local.get $out))))
(func (export "_start")
  (memory.fill (i32.const 2048) (i32.const 0xaa) (i32.const 2048))
  (memory.fill (i32.const 65280) (i32.const 0xbb) (i32.const 256))
  (call $iov (i32.const 3000) (i32.const 3100) (i32.const 4))
  (call $rec (call $fd_prestat_get (i32.const 3) (i32.const 2048)))
  (call $rec (call $fd_prestat_get (i32.const 4) (i32.const 2056)))
  (call $rec (call $fd_prestat_get (i32.const 2) (i32.const 2056)))
  (call $rec (call $fd_prestat_get (i32.const -1) (i32.const 2056)))
  (call $rec (call $fd_prestat_get (i32.const 3) (i32.const 65532)))
  (call $rec (call $fd_prestat_get (i32.const 3) (i32.const 65528)))
  (call $rec (call $fd_prestat_dir_name (i32.const 3) (i32.const 2064) (i32.const 5)))
  (call $rec (call $fd_prestat_dir_name (i32.const 3) (i32.const 2072) (i32.const 6)))
  (call $rec (call $fd_prestat_dir_name (i32.const 3) (i32.const 2080) (i32.const 10)))
  (call $rec (call $fd_prestat_dir_name (i32.const 3) (i32.const 2090) (i32.const 0)))
  (call $rec (call $fd_prestat_dir_name (i32.const 3) (i32.const 65533) (i32.const 5)))
  (call $rec (call $fd_prestat_dir_name (i32.const 3) (i32.const 65530) (i32.const 6)))
  (call $rec (call $fd_prestat_dir_name (i32.const 3) (i32.const 65520) (i32.const -1)))
  (call $rec (call $fd_prestat_dir_name (i32.const 4) (i32.const 2096) (i32.const 10)))
  (call $rec (call $fd_fdstat_get (i32.const 3) (i32.const 2104)))
  (call $rec (call $fd_filestat_get (i32.const 3) (i32.const 2128)))
  (call $rec (call $fd_fdstat_get (i32.const 3) (i32.const 65520)))
  (call $rec (call $fd_filestat_get (i32.const 3) (i32.const 65500)))
  (call $rec (call $fd_fdstat_get (i32.const 4) (i32.const 65520)))
  (call $rec (call $fd_filestat_get (i32.const 9) (i32.const 65500)))
  ;; file operations on the directory
  (call $rec (call $fd_read (i32.const 3) (i32.const 3000) (i32.const 1) (i32.const 2200)))
  (call $rec (call $fd_pread (i32.const 3) (i32.const 3000) (i32.const 1) (i64.const 0) (i32.const 2200)))
  (call $rec (call $fd_seek (i32.const 3) (i64.const 0) (i32.const 0) (i32.const 2200)))
  (call $rec (call $fd_tell (i32.const 3) (i32.const 2200)))
  (call $rec (call $fd_read (i32.const 3) (i32.const 65535) (i32.const 1) (i32.const 65535)))
  (call $ops (i32.const 3))
  (call $ops (i32.const 0))
  (call $ops (i32.const 1))
  (call $ops (i32.const 7))
  ;; listings
  (call $readdir (i32.const 3) (i32.const 2300) (i32.const 400) (i64.const 0) (i32.const 2204))
  (call $readdir (i32.const 3) (i32.const 2700) (i32.const 400) (i64.const 1) (i32.const 2208))
  (call $readdir (i32.const 3) (i32.const 3200) (i32.const 10) (i64.const 0) (i32.const 2212))
  (call $readdir (i32.const 3) (i32.const 3220) (i32.const 24) (i64.const 0) (i32.const 2216))
  (call $readdir (i32.const 3) (i32.const 3250) (i32.const 30) (i64.const 2) (i32.const 2220))
  (call $readdir (i32.const 3) (i32.const 3290) (i32.const 100) (i64.const 5) (i32.const 2224))
  (call $readdir (i32.const 3) (i32.const 3290) (i32.const 100) (i64.const 6) (i32.const 2228))
  (call $readdir (i32.const 3) (i32.const 3290) (i32.const 100) (i64.const 100) (i32.const 2232))
  (call $readdir (i32.const 3) (i32.const 3290) (i32.const 100) (i64.const -1) (i32.const 2236))
  (call $readdir (i32.const 3) (i32.const 3290) (i32.const 0) (i64.const 0) (i32.const 2240))
  (call $readdir (i32.const 3) (i32.const 65536) (i32.const 0) (i64.const 0) (i32.const 2244))
  (call $readdir (i32.const 3) (i32.const 65500) (i32.const 37) (i64.const 0) (i32.const 2248))
  (call $readdir (i32.const 3) (i32.const 65400) (i32.const 136) (i64.const 3) (i32.const 2252))
  (call $readdir (i32.const 3) (i32.const 3290) (i32.const 10) (i64.const 0) (i32.const 65534))
  (call $readdir (i32.const 3) (i32.const 3290) (i32.const -1) (i64.const 0) (i32.const 2256))
  (call $readdir (i32.const 0) (i32.const 3290) (i32.const 10) (i64.const 0) (i32.const 2256))
  (call $readdir (i32.const 9) (i32.const 3290) (i32.const 10) (i64.const 0) (i32.const 2256))
  ;; stats by path
  (call $pstat (i32.const 3) (i32.const 110) (i32.const 1) (i32.const 3400))
  (call $pstat (i32.const 3) (i32.const 140) (i32.const 3) (i32.const 3464))
  (call $pstat (i32.const 3) (i32.const 160) (i32.const 1) (i32.const 3528))
  (call $pstat (i32.const 3) (i32.const 190) (i32.const 6) (i32.const 3592))
  (call $pstat (i32.const 3) (i32.const 200) (i32.const 8) (i32.const 3656))
  (call $pstat (i32.const 3) (i32.const 210) (i32.const 5) (i32.const 3720))
  (call $pstat (i32.const 3) (i32.const 230) (i32.const 2) (i32.const 3784))
  (call $pstat (i32.const 3) (i32.const 180) (i32.const 6) (i32.const 3848))
  (call $pstat (i32.const 3) (i32.const 100) (i32.const 0) (i32.const 3912))
  (call $pstat (i32.const 3) (i32.const 130) (i32.const 6) (i32.const 3912))
  (call $pstat (i32.const 3) (i32.const 170) (i32.const 4) (i32.const 3912))
  (call $pstat (i32.const 3) (i32.const 120) (i32.const 8) (i32.const 3912))
  (call $pstat (i32.const 3) (i32.const 240) (i32.const 3) (i32.const 3912))
  (call $pstat (i32.const 3) (i32.const 220) (i32.const 4) (i32.const 3912))
  (call $pstat (i32.const 3) (i32.const 250) (i32.const 6) (i32.const 3912))
  (call $pstat (i32.const 3) (i32.const 150) (i32.const 1) (i32.const 3912))
  (call $pstat (i32.const 3) (i32.const 150) (i32.const 1) (i32.const 65500))
  (call $pstat (i32.const 3) (i32.const 100) (i32.const 5) (i32.const 65473))
  (call $pstat (i32.const 3) (i32.const 65530) (i32.const 10) (i32.const 3912))
  (call $pstat (i32.const 3) (i32.const 100) (i32.const -1) (i32.const 3912))
  (call $pstat (i32.const 0) (i32.const 100) (i32.const 5) (i32.const 3912))
  (call $pstat (i32.const 9) (i32.const 100) (i32.const 5) (i32.const 3912))
  (call $pstat (i32.const 9) (i32.const 65530) (i32.const 10) (i32.const 65530))
  ;; the directory opened again, the preopen closed
  (call $open (i32.const 3) (i32.const 160) (i32.const 1) (i32.const 2) (i64.const 0) (i32.const 0))
  (call $rec (call $fd_fdstat_get (i32.const 4) (i32.const 3976)))
  (call $readdir (i32.const 4) (i32.const 4000) (i32.const 60) (i64.const 1) (i32.const 2260))
  (call $rec (call $fd_renumber (i32.const 3) (i32.const 4)))
  (call $rec (call $fd_renumber (i32.const 3) (i32.const 5)))
  (call $rec (call $fd_renumber (i32.const 5) (i32.const 0)))
  (call $rec (call $fd_renumber (i32.const 1) (i32.const 4)))
  (call $rec (call $fd_close (i32.const 3)))
  (call $rec (call $fd_close (i32.const 3)))
  (call $rec (call $fd_prestat_get (i32.const 3) (i32.const 2048)))
  (call $rec (call $fd_prestat_dir_name (i32.const 3) (i32.const 2064) (i32.const 10)))
  (call $rec (call $fd_fdstat_get (i32.const 3) (i32.const 3976)))
  (call $open (i32.const 3) (i32.const 100) (i32.const 5) (i32.const 0) (i64.const 2) (i32.const 0))
  (call $open (i32.const 4) (i32.const 100) (i32.const 5) (i32.const 0) (i64.const 2) (i32.const 0))
  (call $rec (call $fd_prestat_get (i32.const 3) (i32.const 2048)))
  (call $readdir (i32.const 3) (i32.const 4000) (i32.const 60) (i64.const 0) (i32.const 2260))
  (call $rec (call $fd_close (i32.const 4)))
  (call $open (i32.const 3) (i32.const 160) (i32.const 1) (i32.const 0) (i64.const 2) (i32.const 0))
  (call $rec (call $fd_close (i32.const 0)))
  (call $rec (call $fd_close (i32.const -5)))
  (call $dump)
  (call $print (i32.const 2048) (i32.const 2048))
  (call $print (i32.const 65280) (i32.const 256)))
"#;

/// A blob as a file: reads, preads, seeks, tells, stats; faults change nothing.
pub(crate) const BLOB_FILE: &str = r#"
(func $read (param $fd i32) (param $iovs i32) (param $n i32) (param $out i32)
  (call $rec (call $fd_read (local.get $fd) (local.get $iovs) (local.get $n) (local.get $out))))
(func $pread (param $fd i32) (param $iovs i32) (param $n i32) (param $off i64) (param $out i32)
  (call $rec (call $fd_pread (local.get $fd) (local.get $iovs) (local.get $n) (local.get $off) (local.get $out))))
(func $seek (param $fd i32) (param $off i64) (param $whence i32) (param $out i32)
  (call $rec (call $fd_seek (local.get $fd) (local.get $off) (local.get $whence) (local.get $out))))
(func $tell (param $fd i32) (param $out i32)
  (call $rec (call $fd_tell (local.get $fd) (local.get $out))))
(func (export "_start")
  (memory.fill (i32.const 2048) (i32.const 0xaa) (i32.const 2048))
  (memory.fill (i32.const 65280) (i32.const 0xbb) (i32.const 256))
  ;; iovecs: 3000 one of 5; 3008 three (3, 0, 4); 3032 one of 300; 3040 two, the second outside memory
  (call $iov (i32.const 3000) (i32.const 2300) (i32.const 5))
  (call $iov (i32.const 3008) (i32.const 2310) (i32.const 3))
  (call $iov (i32.const 3016) (i32.const 2320) (i32.const 0))
  (call $iov (i32.const 3024) (i32.const 2330) (i32.const 4))
  (call $iov (i32.const 3032) (i32.const 2400) (i32.const 300))
  (call $iov (i32.const 3040) (i32.const 2340) (i32.const 2))
  (call $iov (i32.const 3048) (i32.const 65535) (i32.const 2))
  (call $iov (i32.const 3056) (i32.const 65530) (i32.const 6))
  (call $o (i32.const 100) (i32.const 5))
  (call $o (i32.const 110) (i32.const 1))
  (call $o (i32.const 210) (i32.const 5))
  (call $read (i32.const 4) (i32.const 3000) (i32.const 1) (i32.const 2200))
  (call $tell (i32.const 4) (i32.const 2208))
  (call $read (i32.const 4) (i32.const 3008) (i32.const 3) (i32.const 2216))
  (call $tell (i32.const 4) (i32.const 2224))
  (call $read (i32.const 4) (i32.const 3008) (i32.const 3) (i32.const 2232))
  (call $read (i32.const 4) (i32.const 3008) (i32.const 3) (i32.const 2236))
  (call $tell (i32.const 4) (i32.const 2240))
  ;; faults: the position does not move
  (call $read (i32.const 5) (i32.const 3040) (i32.const 2) (i32.const 2248))
  (call $read (i32.const 5) (i32.const 3000) (i32.const 1) (i32.const 65534))
  (call $read (i32.const 5) (i32.const 3000) (i32.const -1) (i32.const 2248))
  (call $read (i32.const 5) (i32.const 65530) (i32.const 1) (i32.const 2248))
  (call $tell (i32.const 5) (i32.const 2252))
  (call $tell (i32.const 5) (i32.const 65530))
  (call $read (i32.const 5) (i32.const 3056) (i32.const 1) (i32.const 2260))
  (call $read (i32.const 5) (i32.const 3032) (i32.const 1) (i32.const 2264))
  (call $read (i32.const 5) (i32.const 3032) (i32.const 1) (i32.const 2268))
  (call $read (i32.const 5) (i32.const 3000) (i32.const 0) (i32.const 2272))
  (call $tell (i32.const 5) (i32.const 2276))
  ;; seeks
  (call $seek (i32.const 5) (i64.const 10) (i32.const 0) (i32.const 2284))
  (call $seek (i32.const 5) (i64.const -3) (i32.const 1) (i32.const 2292))
  (call $seek (i32.const 5) (i64.const -1) (i32.const 2) (i32.const 2300))
  (call $read (i32.const 5) (i32.const 3008) (i32.const 3) (i32.const 2308))
  (call $seek (i32.const 5) (i64.const -101) (i32.const 2) (i32.const 2312))
  (call $seek (i32.const 5) (i64.const 0) (i32.const 3) (i32.const 2312))
  (call $seek (i32.const 5) (i64.const 0) (i32.const -1) (i32.const 2312))
  (call $seek (i32.const 5) (i64.const 5) (i32.const 0) (i32.const 65530))
  (call $tell (i32.const 5) (i32.const 2320))
  (call $seek (i32.const 5) (i64.const 9223372036854775807) (i32.const 0) (i32.const 2328))
  (call $seek (i32.const 5) (i64.const 9223372036854775807) (i32.const 1) (i32.const 2336))
  (call $seek (i32.const 5) (i64.const 1) (i32.const 1) (i32.const 2344))
  (call $seek (i32.const 5) (i64.const 2) (i32.const 1) (i32.const 2352))
  (call $tell (i32.const 5) (i32.const 2360))
  (call $read (i32.const 5) (i32.const 3000) (i32.const 1) (i32.const 2368))
  (call $seek (i32.const 5) (i64.const -9223372036854775808) (i32.const 1) (i32.const 2372))
  (call $seek (i32.const 5) (i64.const -9223372036854775808) (i32.const 0) (i32.const 2380))
  (call $seek (i32.const 5) (i64.const 1000) (i32.const 2) (i32.const 2388))
  (call $read (i32.const 5) (i32.const 3000) (i32.const 1) (i32.const 2396))
  ;; preads leave the position alone
  (call $seek (i32.const 5) (i64.const 20) (i32.const 0) (i32.const 3100))
  (call $pread (i32.const 5) (i32.const 3008) (i32.const 3) (i64.const 90) (i32.const 3108))
  (call $pread (i32.const 5) (i32.const 3008) (i32.const 3) (i64.const 97) (i32.const 3112))
  (call $pread (i32.const 5) (i32.const 3000) (i32.const 1) (i64.const 100) (i32.const 3116))
  (call $pread (i32.const 5) (i32.const 3000) (i32.const 1) (i64.const -1) (i32.const 3120))
  (call $pread (i32.const 5) (i32.const 3000) (i32.const 1) (i64.const 4294967296) (i32.const 3124))
  (call $pread (i32.const 5) (i32.const 3040) (i32.const 2) (i64.const 0) (i32.const 3128))
  (call $pread (i32.const 5) (i32.const 3000) (i32.const 1) (i64.const 0) (i32.const 65533))
  (call $tell (i32.const 5) (i32.const 3132))
  (call $pread (i32.const 4) (i32.const 3000) (i32.const 1) (i64.const 2) (i32.const 3140))
  ;; the empty blob
  (call $read (i32.const 6) (i32.const 3000) (i32.const 1) (i32.const 3144))
  (call $seek (i32.const 6) (i64.const 0) (i32.const 2) (i32.const 3148))
  (call $pread (i32.const 6) (i32.const 3000) (i32.const 1) (i64.const 0) (i32.const 3156))
  ;; stats
  (call $rec (call $fd_filestat_get (i32.const 4) (i32.const 3200)))
  (call $rec (call $fd_filestat_get (i32.const 5) (i32.const 3264)))
  (call $rec (call $fd_filestat_get (i32.const 6) (i32.const 3328)))
  (call $rec (call $fd_fdstat_get (i32.const 5) (i32.const 3392)))
  (call $rec (call $fd_filestat_get (i32.const 5) (i32.const 65480)))
  (call $rec (call $fd_fdstat_get (i32.const 5) (i32.const 65520)))
  ;; other operations on a file
  (call $ops (i32.const 5))
  (call $rec (call $fd_readdir (i32.const 5) (i32.const 3500) (i32.const 50) (i64.const 0) (i32.const 3420)))
  (call $rec (call $fd_readdir (i32.const 5) (i32.const 65530) (i32.const 50) (i64.const 0) (i32.const 3420)))
  (call $rec (call $fd_prestat_get (i32.const 5) (i32.const 3424)))
  (call $rec (call $fd_renumber (i32.const 4) (i32.const 5)))
  (call $rec (call $fd_renumber (i32.const 4) (i32.const 8)))
  ;; a file is no directory
  (call $open (i32.const 4) (i32.const 100) (i32.const 5) (i32.const 0) (i64.const 2) (i32.const 0))
  (call $pstat (i32.const 5) (i32.const 100) (i32.const 5) (i32.const 3600))
  ;; closing
  (call $rec (call $fd_close (i32.const 5)))
  (call $rec (call $fd_close (i32.const 5)))
  (call $read (i32.const 5) (i32.const 3000) (i32.const 1) (i32.const 3430))
  (call $tell (i32.const 5) (i32.const 3430))
  (call $o (i32.const 140) (i32.const 3))
  (call $tell (i32.const 5) (i32.const 3440))
  (call $rec (call $fd_close (i32.const 6)))
  (call $rec (call $fd_close (i32.const 5)))
  (call $o (i32.const 190) (i32.const 6))
  (call $o (i32.const 200) (i32.const 8))
  (call $read (i32.const 6) (i32.const 3032) (i32.const 1) (i32.const 3448))
  (call $dump)
  (call $print (i32.const 2048) (i32.const 2048))
  (call $print (i32.const 65280) (i32.const 256)))
"#;

/// `path_open`: every refusal, in precedence order, the lowest free fd and the open-file limit.
pub(crate) const BLOB_OPEN: &str = r#"
(func (export "_start") (local $i i32) (local $e i32)
  (memory.fill (i32.const 2048) (i32.const 0xaa) (i32.const 256))
  (call $o (i32.const 170) (i32.const 4))
  (call $o (i32.const 120) (i32.const 8))
  (call $o (i32.const 130) (i32.const 6))
  (call $o (i32.const 220) (i32.const 4))
  (call $o (i32.const 250) (i32.const 6))
  (call $o (i32.const 240) (i32.const 3))
  (call $open (i32.const 3) (i32.const 100) (i32.const 5) (i32.const 1) (i64.const 2) (i32.const 0))
  (call $open (i32.const 3) (i32.const 100) (i32.const 5) (i32.const 4) (i64.const 2) (i32.const 0))
  (call $open (i32.const 3) (i32.const 100) (i32.const 5) (i32.const 8) (i64.const 2) (i32.const 0))
  (call $open (i32.const 3) (i32.const 170) (i32.const 4) (i32.const 8) (i64.const 2) (i32.const 0))
  (call $open (i32.const 3) (i32.const 100) (i32.const 5) (i32.const 0) (i64.const 64) (i32.const 0))
  (call $open (i32.const 3) (i32.const 100) (i32.const 5) (i32.const 0) (i64.const 256) (i32.const 0))
  (call $open (i32.const 3) (i32.const 100) (i32.const 5) (i32.const 0) (i64.const 4194304) (i32.const 0))
  (call $open (i32.const 3) (i32.const 100) (i32.const 5) (i32.const 0) (i64.const -1) (i32.const 0))
  (call $open (i32.const 3) (i32.const 100) (i32.const 5) (i32.const 0) (i64.const -9223372036854775808) (i32.const 0))
  (call $open (i32.const 3) (i32.const 100) (i32.const 5) (i32.const 0) (i64.const 2) (i32.const 1))
  (call $open (i32.const 3) (i32.const 100) (i32.const 5) (i32.const 0) (i64.const 2) (i32.const 2))
  (call $open (i32.const 3) (i32.const 100) (i32.const 5) (i32.const 2) (i64.const 2) (i32.const 0))
  (call $open (i32.const 3) (i32.const 160) (i32.const 1) (i32.const 2) (i64.const 0) (i32.const 0))
  (call $open (i32.const 0) (i32.const 100) (i32.const 5) (i32.const 0) (i64.const 2) (i32.const 0))
  (call $open (i32.const 9) (i32.const 100) (i32.const 5) (i32.const 0) (i64.const 2) (i32.const 0))
  (call $open (i32.const -1) (i32.const 100) (i32.const 5) (i32.const 0) (i64.const 2) (i32.const 0))
  (call $open (i32.const 3) (i32.const 150) (i32.const 1) (i32.const 0) (i64.const 2) (i32.const 0))
  (call $open (i32.const 3) (i32.const 150) (i32.const 1) (i32.const 1) (i64.const 2) (i32.const 0))
  (call $open (i32.const 3) (i32.const 65530) (i32.const 10) (i32.const 0) (i64.const 2) (i32.const 0))
  (call $open (i32.const 3) (i32.const 100) (i32.const -1) (i32.const 0) (i64.const 2) (i32.const 0))
  (call $open (i32.const 3) (i32.const 100) (i32.const 0) (i32.const 0) (i64.const 2) (i32.const 0))
  (call $open (i32.const 9) (i32.const 65530) (i32.const 10) (i32.const 1) (i64.const 2) (i32.const 0))
  ;; out outside memory: after the path, before the flags
  (call $rec (call $path_open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 5)
    (i32.const 1) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 65534)))
  (call $rec (call $path_open (i32.const 3) (i32.const 0) (i32.const 150) (i32.const 1)
    (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 65534)))
  (call $rec (call $path_open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 5)
    (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 65532)))
  ;; the other path functions stay ENOTCAPABLE
  (call $rec (call $path_remove_directory (i32.const 3) (i32.const 100) (i32.const 5)))
  (call $rec (call $path_rename (i32.const 3) (i32.const 100) (i32.const 5) (i32.const 3) (i32.const 110) (i32.const 1)))
  (call $rec (call $path_readlink (i32.const 3) (i32.const 100) (i32.const 5) (i32.const 2048) (i32.const 8) (i32.const 2056)))
  (call $rec (call $path_symlink (i32.const 100) (i32.const 5) (i32.const 3) (i32.const 110) (i32.const 1)))
  (call $rec (call $path_link (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 5) (i32.const 3) (i32.const 110) (i32.const 1)))
  (call $rec (call $path_filestat_set_times (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 5) (i64.const 0) (i64.const 0) (i32.const 0)))
  ;; the open-file limit: fds 4.. until EMFILE
  (loop $l
    (local.set $e (call $path_open (i32.const 3) (i32.const 0) (i32.const 110) (i32.const 1)
      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 16)))
    (local.set $i (i32.add (local.get $i) (i32.const 1)))
    (br_if $l (i32.eqz (local.get $e))))
  (call $rec (local.get $e))
  (call $rec (local.get $i))
  (call $rec (i32.load (i32.const 16)))
  (call $rec (call $fd_close (i32.const 50)))
  (call $rec (call $fd_close (i32.const 7)))
  (call $rec (call $fd_close (i32.const 130)))
  (call $rec (call $fd_close (i32.const 131)))
  (call $o (i32.const 110) (i32.const 1))
  (call $o (i32.const 110) (i32.const 1))
  (call $o (i32.const 110) (i32.const 1))
  (call $o (i32.const 110) (i32.const 1))
  (call $rec (call $fd_fdstat_get (i32.const 130) (i32.const 2100)))
  (call $rec (call $fd_tell (i32.const 129) (i32.const 2128)))
  ;; close everything but the directory: numbers start again at 4
  (local.set $i (i32.const 4))
  (loop $c
    (drop (call $fd_close (local.get $i)))
    (local.set $i (i32.add (local.get $i) (i32.const 1)))
    (br_if $c (i32.lt_u (local.get $i) (i32.const 200))))
  (call $o (i32.const 100) (i32.const 5))
  (call $rec (call $fd_close (i32.const 3)))
  (call $o (i32.const 100) (i32.const 5))
  (call $open (i32.const 4) (i32.const 160) (i32.const 1) (i32.const 0) (i64.const 0) (i32.const 0))
  (call $dump)
  (call $print (i32.const 2048) (i32.const 256)))
"#;

/// The writable file system (`fs.rs` with scratch space): every `path_*` and file call with
/// its edges — creation, writes past the end, truncation, times, renames onto and into
/// things, removal while open, listings, renumbering, names too long, bad memory and UTF-8 —
/// and a final fill until the scratch space is full. The root is fd 4 when blobs are mounted
/// (fd 3 is `/blobs`), fd 3 otherwise. Prints the errnos, then memory 1024-4096 (stats, fdstats,
/// listings, counts).
pub(crate) const SCRATCH_OPS: &str = r#"
(data (i32.const 300) "tmp/f")
(data (i32.const 310) "tmp/g")
(data (i32.const 320) "tmp/d")
(data (i32.const 330) "tmp/d/")
(data (i32.const 340) "tmp/f/")
(data (i32.const 350) "blobs/a.txt")
(data (i32.const 370) "tmp")
(data (i32.const 380) ".")
(data (i32.const 390) "..")
(data (i32.const 400) "tmp/d/e")
(data (i32.const 410) "tmp/d/e/../../d")
(data (i32.const 430) "out/x")
(data (i32.const 440) "\ff")
(data (i32.const 450) "tmp/d2")
(data (i32.const 460) "tmp/../tmp/f")
(data (i32.const 480) "///")
(data (i32.const 490) "out")
(data (i32.const 500) "tmp/d2/e")
(data (i32.const 510) "out/x/")
(data (i32.const 520) "blobs/x")
(data (i32.const 530) "tmp/big")
(data (i32.const 540) "hello")
(global $r (mut i32) (i32.const 3))
(global $a (mut i32) (i32.const -1))
(global $b (mut i32) (i32.const -1))
;; path_open under the root: records errno and the fd (low byte), returns the fd (-1: none)
(func $op (param $ptr i32) (param $len i32) (param $oflags i32) (param $rights i64) (param $fdflags i32) (result i32)
  (i32.store (i32.const 16) (i32.const -1))
  (call $rec (call $path_open (global.get $r) (i32.const 0) (local.get $ptr) (local.get $len)
    (local.get $oflags) (local.get $rights) (i64.const 0) (local.get $fdflags) (i32.const 16)))
  (call $rec (i32.load (i32.const 16)))
  (i32.load (i32.const 16)))
(func $mkdir (param $ptr i32) (param $len i32)
  (call $rec (call $path_create_directory (global.get $r) (local.get $ptr) (local.get $len))))
(func $rmdir (param $ptr i32) (param $len i32)
  (call $rec (call $path_remove_directory (global.get $r) (local.get $ptr) (local.get $len))))
(func $unlink (param $ptr i32) (param $len i32)
  (call $rec (call $path_unlink_file (global.get $r) (local.get $ptr) (local.get $len))))
(func $mv (param $p1 i32) (param $l1 i32) (param $p2 i32) (param $l2 i32)
  (call $rec (call $path_rename (global.get $r) (local.get $p1) (local.get $l1) (global.get $r) (local.get $p2) (local.get $l2))))
(func $wr (param $fd i32) (param $ptr i32) (param $len i32)
  (call $iov (i32.const 40) (local.get $ptr) (local.get $len))
  (call $rec (call $fd_write (local.get $fd) (i32.const 40) (i32.const 1) (i32.const 24)))
  (call $rec (i32.load (i32.const 24))))
(func (export "_start")
  (local $i i32) (local $fd i32) (local $total i32)
  (if (i32.eqz (call $fd_prestat_get (i32.const 4) (i32.const 2000))) (then (global.set $r (i32.const 4))))
  (call $rec (global.get $r))
  ;; a file: write, write past the end, read back
  (global.set $a (call $op (i32.const 300) (i32.const 5) (i32.const 1) (i64.const 0x42) (i32.const 0)))
  (call $wr (global.get $a) (i32.const 540) (i32.const 5))
  (call $iov (i32.const 40) (i32.const 540) (i32.const 2))
  (call $rec (call $fd_pwrite (global.get $a) (i32.const 40) (i32.const 1) (i64.const 10) (i32.const 24)))
  (call $rec (call $fd_filestat_get (global.get $a) (i32.const 2000)))
  (call $rec (call $fd_seek (global.get $a) (i64.const 0) (i32.const 0) (i32.const 2064)))
  (call $iov (i32.const 40) (i32.const 2080) (i32.const 20))
  (call $rec (call $fd_read (global.get $a) (i32.const 40) (i32.const 1) (i32.const 2072)))
  (call $rec (call $fd_read (i32.const 1) (i32.const 40) (i32.const 1) (i32.const 2072)))
  ;; sizes
  (call $rec (call $fd_filestat_set_size (global.get $a) (i64.const 3)))
  (call $rec (call $fd_filestat_set_size (global.get $a) (i64.const 0x10000000000)))
  (call $rec (call $fd_allocate (global.get $a) (i64.const 0) (i64.const 100)))
  (call $rec (call $fd_allocate (global.get $a) (i64.const -1) (i64.const 2)))
  (call $rec (call $fd_allocate (global.get $a) (i64.const 1) (i64.const 2)))
  ;; times
  (call $rec (call $fd_filestat_set_times (global.get $a) (i64.const 7) (i64.const 9) (i32.const 3)))
  (call $rec (call $fd_filestat_set_times (global.get $a) (i64.const 7) (i64.const 9) (i32.const 5)))
  (call $rec (call $fd_filestat_get (global.get $a) (i32.const 2100)))
  (drop (call $clock_time_get (i32.const 1) (i64.const 0) (i32.const 2164)))
  (call $rec (call $fd_filestat_set_times (global.get $a) (i64.const 7) (i64.const 9) (i32.const 10)))
  (call $rec (call $fd_filestat_get (global.get $a) (i32.const 2172)))
  (call $rec (call $path_filestat_set_times (global.get $r) (i32.const 0) (i32.const 370) (i32.const 3) (i64.const 1) (i64.const 2) (i32.const 12)))
  (call $rec (call $path_filestat_set_times (global.get $r) (i32.const 0) (i32.const 350) (i32.const 11) (i64.const 1) (i64.const 2) (i32.const 5)))
  (call $rec (call $fd_fdstat_get (global.get $a) (i32.const 2240)))
  (call $rec (call $fd_fdstat_get (global.get $r) (i32.const 2264)))
  ;; opens
  (drop (call $op (i32.const 300) (i32.const 5) (i32.const 5) (i64.const 0x42) (i32.const 0)))
  (global.set $b (call $op (i32.const 300) (i32.const 5) (i32.const 8) (i64.const 0x40) (i32.const 1)))
  (call $rec (call $fd_fdstat_get (global.get $b) (i32.const 2288)))
  (call $rec (call $fd_filestat_get (global.get $a) (i32.const 2312)))
  (call $wr (global.get $b) (i32.const 540) (i32.const 5))
  (call $wr (global.get $b) (i32.const 540) (i32.const 3))
  (call $iov (i32.const 40) (i32.const 2400) (i32.const 20))
  (call $rec (call $fd_pread (global.get $a) (i32.const 40) (i32.const 1) (i64.const 0) (i32.const 2396)))
  (call $rec (call $fd_read (global.get $b) (i32.const 40) (i32.const 1) (i32.const 2396)))
  (drop (call $op (i32.const 340) (i32.const 6) (i32.const 0) (i64.const 2) (i32.const 0)))
  (drop (call $op (i32.const 330) (i32.const 6) (i32.const 1) (i64.const 2) (i32.const 0)))
  (drop (call $op (i32.const 370) (i32.const 3) (i32.const 0) (i64.const 0x40) (i32.const 0)))
  (drop (call $op (i32.const 370) (i32.const 3) (i32.const 8) (i64.const 2) (i32.const 0)))
  (drop (call $op (i32.const 350) (i32.const 11) (i32.const 0) (i64.const 0x40) (i32.const 0)))
  (drop (call $op (i32.const 350) (i32.const 11) (i32.const 0) (i64.const 2) (i32.const 0)))
  (call $rec (call $fd_close (call $op (i32.const 460) (i32.const 12) (i32.const 0) (i64.const 2) (i32.const 0))))
  (drop (call $op (i32.const 390) (i32.const 2) (i32.const 0) (i64.const 2) (i32.const 0)))
  (drop (call $op (i32.const 440) (i32.const 1) (i32.const 1) (i64.const 2) (i32.const 0)))
  (drop (call $op (i32.const 65530) (i32.const 10) (i32.const 1) (i64.const 2) (i32.const 0)))
  (call $rec (call $path_open (global.get $r) (i32.const 0) (i32.const 300) (i32.const 5) (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 65534)))
  (i32.store (i32.const 600) (i32.const 0x2f706d74))
  (memory.fill (i32.const 604) (i32.const 0x6e) (i32.const 256))
  (drop (call $op (i32.const 600) (i32.const 260) (i32.const 1) (i64.const 2) (i32.const 0)))
  (call $mkdir (i32.const 600) (i32.const 259))
  (call $rec (call $fd_close (call $op (i32.const 600) (i32.const 259) (i32.const 1) (i64.const 2) (i32.const 0))))
  (call $unlink (i32.const 600) (i32.const 259))
  ;; directories
  (call $mkdir (i32.const 320) (i32.const 5))
  (call $mkdir (i32.const 330) (i32.const 6))
  (call $mkdir (i32.const 380) (i32.const 1))
  (call $mkdir (i32.const 400) (i32.const 7))
  (call $mkdir (i32.const 520) (i32.const 7))
  (call $mkdir (i32.const 340) (i32.const 6))
  (call $mkdir (i32.const 480) (i32.const 3))
  (call $rec (call $path_create_directory (i32.const 0) (i32.const 320) (i32.const 5)))
  (call $rec (call $path_create_directory (i32.const 99) (i32.const 320) (i32.const 5)))
  (call $rec (call $path_create_directory (global.get $a) (i32.const 320) (i32.const 5)))
  (call $rec (call $path_filestat_get (global.get $r) (i32.const 0) (i32.const 410) (i32.const 15) (i32.const 2500)))
  ;; renames
  (call $mv (i32.const 320) (i32.const 5) (i32.const 400) (i32.const 7))
  (call $mv (i32.const 300) (i32.const 5) (i32.const 320) (i32.const 5))
  (call $mv (i32.const 320) (i32.const 5) (i32.const 300) (i32.const 5))
  (call $mv (i32.const 300) (i32.const 5) (i32.const 430) (i32.const 5))
  (call $mv (i32.const 430) (i32.const 5) (i32.const 430) (i32.const 5))
  (call $mv (i32.const 380) (i32.const 1) (i32.const 310) (i32.const 5))
  (call $mv (i32.const 450) (i32.const 6) (i32.const 310) (i32.const 5))
  (call $mv (i32.const 320) (i32.const 5) (i32.const 450) (i32.const 6))
  (call $mv (i32.const 370) (i32.const 3) (i32.const 490) (i32.const 3))
  (call $mv (i32.const 350) (i32.const 11) (i32.const 310) (i32.const 5))
  (call $mv (i32.const 430) (i32.const 5) (i32.const 510) (i32.const 6))
  ;; removal
  (call $rmdir (i32.const 450) (i32.const 6))
  (call $rmdir (i32.const 500) (i32.const 8))
  (call $rmdir (i32.const 380) (i32.const 1))
  (call $rmdir (i32.const 430) (i32.const 5))
  (call $rmdir (i32.const 480) (i32.const 3))
  (call $unlink (i32.const 450) (i32.const 6))
  (call $unlink (i32.const 510) (i32.const 6))
  (call $unlink (i32.const 350) (i32.const 11))
  (call $unlink (i32.const 430) (i32.const 5))
  (call $unlink (i32.const 430) (i32.const 5))
  (call $rec (call $fd_filestat_get (global.get $a) (i32.const 2564)))
  (call $wr (global.get $a) (i32.const 540) (i32.const 5))
  ;; no links
  (call $rec (call $path_readlink (global.get $r) (i32.const 490) (i32.const 3) (i32.const 2700) (i32.const 10) (i32.const 2696)))
  (call $rec (call $path_readlink (global.get $r) (i32.const 430) (i32.const 5) (i32.const 2700) (i32.const 10) (i32.const 2696)))
  (call $rec (call $path_readlink (global.get $r) (i32.const 490) (i32.const 3) (i32.const 65530) (i32.const 10) (i32.const 2696)))
  (call $rec (call $path_symlink (i32.const 490) (i32.const 3) (global.get $r) (i32.const 310) (i32.const 5)))
  (call $rec (call $path_link (global.get $r) (i32.const 0) (i32.const 490) (i32.const 3) (global.get $r) (i32.const 310) (i32.const 5)))
  ;; listings: the root, then tmp
  (call $rec (call $fd_readdir (global.get $r) (i32.const 2720) (i32.const 200) (i64.const 0) (i32.const 2716)))
  (local.set $fd (call $op (i32.const 370) (i32.const 3) (i32.const 2) (i64.const 0x4000) (i32.const 0)))
  (call $rec (call $fd_readdir (local.get $fd) (i32.const 2920) (i32.const 100) (i64.const 0) (i32.const 2916)))
  (call $rec (call $fd_readdir (local.get $fd) (i32.const 3020) (i32.const 100) (i64.const 3) (i32.const 3016)))
  ;; renumber and close
  (call $rec (call $fd_renumber (global.get $a) (global.get $b)))
  (call $rec (call $fd_close (global.get $b)))
  (call $rec (call $fd_close (global.get $a)))
  (call $rec (call $fd_renumber (global.get $r) (i32.const 1)))
  ;; fill: 4 KiB writes until the space runs out (at most 300)
  (local.set $fd (call $op (i32.const 530) (i32.const 7) (i32.const 1) (i64.const 0x40) (i32.const 0)))
  (call $iov (i32.const 40) (i32.const 0) (i32.const 4096))
  (block $full
    (loop $more
      (br_if $full (call $fd_write (local.get $fd) (i32.const 40) (i32.const 1) (i32.const 24)))
      (local.set $total (i32.add (local.get $total) (i32.load (i32.const 24))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $more (i32.lt_u (local.get $i) (i32.const 300)))))
  (call $rec (call $fd_write (local.get $fd) (i32.const 40) (i32.const 1) (i32.const 24)))
  (i32.store (i32.const 3200) (local.get $total))
  (i32.store (i32.const 3204) (local.get $i))
  (call $mkdir (i32.const 310) (i32.const 5))
  (call $rec (call $fd_filestat_get (local.get $fd) (i32.const 3208)))
  (call $dump)
  (call $print (i32.const 1024) (i32.const 3072)))
"#;

/// Symbolic links (`fs.rs`): made, read back (whole and cut), followed or not by each call,
/// through directories, in loops, dangling, escaping the root, listed, renamed, removed, left
/// under `/out` (not an output), and charged to the scratch space. The root is found as in
/// [`SCRATCH_OPS`]. Prints the errnos, then memory 1024-4096.
pub(crate) const SYMLINKS: &str = r#"
(data (i32.const 300) "tmp/f")
(data (i32.const 310) "f")
(data (i32.const 320) "tmp/l")
(data (i32.const 330) "tmp/d")
(data (i32.const 340) "d")
(data (i32.const 350) "tmp/ld")
(data (i32.const 360) "tmp/ld/x")
(data (i32.const 370) "tmp/a")
(data (i32.const 380) "b")
(data (i32.const 390) "tmp/b")
(data (i32.const 400) "a")
(data (i32.const 410) "tmp/up")
(data (i32.const 420) "../../..")
(data (i32.const 430) "tmp/up/x")
(data (i32.const 440) "/etc")
(data (i32.const 450) "tmp/dang")
(data (i32.const 460) "nowhere")
(data (i32.const 470) "out/link")
(data (i32.const 480) "../tmp/f")
(data (i32.const 490) "tmp/l/")
(data (i32.const 500) "tmp/l2")
(data (i32.const 510) "tmp")
(data (i32.const 520) "tmp/ld/")
(data (i32.const 530) "hello")
(global $r (mut i32) (i32.const 3))
(func $op (param $flags i32) (param $ptr i32) (param $len i32) (param $oflags i32) (param $rights i64) (result i32)
  (i32.store (i32.const 16) (i32.const -1))
  (call $rec (call $path_open (global.get $r) (local.get $flags) (local.get $ptr) (local.get $len)
    (local.get $oflags) (local.get $rights) (i64.const 0) (i32.const 0) (i32.const 16)))
  (call $rec (i32.load (i32.const 16)))
  (i32.load (i32.const 16)))
(func $ln (param $t i32) (param $tl i32) (param $p i32) (param $pl i32)
  (call $rec (call $path_symlink (local.get $t) (local.get $tl) (global.get $r) (local.get $p) (local.get $pl))))
(func $stat (param $flags i32) (param $p i32) (param $pl i32) (param $out i32)
  (call $rec (call $path_filestat_get (global.get $r) (local.get $flags) (local.get $p) (local.get $pl) (local.get $out))))
(func (export "_start")
  (local $fd i32)
  (if (i32.eqz (call $fd_prestat_get (i32.const 4) (i32.const 2000))) (then (global.set $r (i32.const 4))))
  (call $rec (global.get $r))
  ;; a file and a link to it
  (local.set $fd (call $op (i32.const 0) (i32.const 300) (i32.const 5) (i32.const 1) (i64.const 0x42)))
  (call $iov (i32.const 40) (i32.const 530) (i32.const 5))
  (call $rec (call $fd_write (local.get $fd) (i32.const 40) (i32.const 1) (i32.const 24)))
  (call $ln (i32.const 310) (i32.const 1) (i32.const 320) (i32.const 5))
  (call $ln (i32.const 310) (i32.const 1) (i32.const 320) (i32.const 5))
  (call $ln (i32.const 310) (i32.const 1) (i32.const 490) (i32.const 6))
  (call $ln (i32.const 440) (i32.const 4) (i32.const 500) (i32.const 6))
  (call $ln (i32.const 310) (i32.const 0) (i32.const 500) (i32.const 6))
  ;; read it back, whole and cut
  (call $rec (call $path_readlink (global.get $r) (i32.const 320) (i32.const 5) (i32.const 2100) (i32.const 10) (i32.const 2096)))
  (call $rec (call $path_readlink (global.get $r) (i32.const 300) (i32.const 5) (i32.const 2110) (i32.const 10) (i32.const 2096)))
  (call $rec (call $path_readlink (global.get $r) (i32.const 320) (i32.const 5) (i32.const 2120) (i32.const 0) (i32.const 2116)))
  (call $rec (call $path_readlink (global.get $r) (i32.const 320) (i32.const 5) (i32.const 65530) (i32.const 10) (i32.const 2116)))
  ;; stats: the link, then what it points to
  (call $stat (i32.const 0) (i32.const 320) (i32.const 5) (i32.const 2200))
  (call $stat (i32.const 1) (i32.const 320) (i32.const 5) (i32.const 2264))
  (call $stat (i32.const 0) (i32.const 490) (i32.const 6) (i32.const 2328))
  ;; opens: not followed (ELOOP), followed (the file), through a trailing slash
  (drop (call $op (i32.const 0) (i32.const 320) (i32.const 5) (i32.const 0) (i64.const 2)))
  (drop (call $op (i32.const 0) (i32.const 320) (i32.const 5) (i32.const 2) (i64.const 2)))
  (call $rec (call $fd_close (call $op (i32.const 1) (i32.const 320) (i32.const 5) (i32.const 0) (i64.const 2))))
  (drop (call $op (i32.const 1) (i32.const 320) (i32.const 5) (i32.const 2) (i64.const 2)))
  (drop (call $op (i32.const 1) (i32.const 320) (i32.const 5) (i32.const 5) (i64.const 2)))
  ;; a link to a directory, walked through
  (call $rec (call $path_create_directory (global.get $r) (i32.const 330) (i32.const 5)))
  (call $ln (i32.const 340) (i32.const 1) (i32.const 350) (i32.const 6))
  (call $rec (call $fd_close (call $op (i32.const 0) (i32.const 360) (i32.const 8) (i32.const 1) (i64.const 0x40))))
  (call $stat (i32.const 0) (i32.const 520) (i32.const 7) (i32.const 2392))
  (call $rec (call $path_remove_directory (global.get $r) (i32.const 350) (i32.const 6)))
  ;; a loop, an escape, a dangling link
  (call $ln (i32.const 380) (i32.const 1) (i32.const 370) (i32.const 5))
  (call $ln (i32.const 400) (i32.const 1) (i32.const 390) (i32.const 5))
  (call $stat (i32.const 1) (i32.const 370) (i32.const 5) (i32.const 2456))
  (call $ln (i32.const 420) (i32.const 8) (i32.const 410) (i32.const 6))
  (call $stat (i32.const 0) (i32.const 430) (i32.const 8) (i32.const 2456))
  (call $ln (i32.const 460) (i32.const 7) (i32.const 450) (i32.const 8))
  (call $stat (i32.const 1) (i32.const 450) (i32.const 8) (i32.const 2456))
  (drop (call $op (i32.const 1) (i32.const 450) (i32.const 8) (i32.const 1) (i64.const 0x42)))
  ;; a link under /out: not an output
  (call $ln (i32.const 480) (i32.const 8) (i32.const 470) (i32.const 8))
  ;; times on the link itself, then through it
  (call $rec (call $path_filestat_set_times (global.get $r) (i32.const 0) (i32.const 320) (i32.const 5) (i64.const 1) (i64.const 2) (i32.const 5)))
  (call $rec (call $path_filestat_set_times (global.get $r) (i32.const 1) (i32.const 320) (i32.const 5) (i64.const 3) (i64.const 4) (i32.const 5)))
  (call $stat (i32.const 0) (i32.const 320) (i32.const 5) (i32.const 2520))
  (call $stat (i32.const 0) (i32.const 300) (i32.const 5) (i32.const 2584))
  ;; list tmp: the links show as links
  (local.set $fd (call $op (i32.const 0) (i32.const 510) (i32.const 3) (i32.const 2) (i64.const 0x4000)))
  (call $rec (call $fd_readdir (local.get $fd) (i32.const 2700) (i32.const 400) (i64.const 0) (i32.const 2696)))
  ;; rename and remove links
  (call $rec (call $path_rename (global.get $r) (i32.const 320) (i32.const 5) (global.get $r) (i32.const 500) (i32.const 6)))
  (call $rec (call $path_unlink_file (global.get $r) (i32.const 500) (i32.const 6)))
  (call $rec (call $path_unlink_file (global.get $r) (i32.const 370) (i32.const 5)))
  (call $stat (i32.const 0) (i32.const 300) (i32.const 5) (i32.const 3100))
  (call $dump)
  (call $print (i32.const 1024) (i32.const 3072)))
"#;
