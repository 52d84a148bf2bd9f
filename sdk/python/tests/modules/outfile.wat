;; Writes "hello, files\n" to /out/hello.txt (fd 3 is the task's writable root "/") and
;; prints "done".
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "out/hello.txt")
  (data (i32.const 200) "hello, files\n")
  (data (i32.const 300) "done")
  (func (export "_start")
    ;; create out/hello.txt with the FD_WRITE right
    (drop (call $open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 13)
      (i32.const 1) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 16)))
    (i32.store (i32.const 0) (i32.const 200))
    (i32.store (i32.const 4) (i32.const 13))
    (drop (call $write (i32.load (i32.const 16)) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store (i32.const 0) (i32.const 300))
    (i32.store (i32.const 4) (i32.const 4))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
