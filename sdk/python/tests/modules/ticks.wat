;; Writes "tick 0\n" .. "tick 3\n", one write each, with 2.5*10^8 loop iterations (about 2*10^9
;; fuel) of busy work before each: output that streams while the task runs.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "tick 0\n")
  (func (export "_start")
    (local $t i32)
    (local $i i32)
    (loop $ticks
      (local.set $i (i32.const 0))
      (loop $spin
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $spin (i32.lt_u (local.get $i) (i32.const 250000000))))
      (i32.store8 (i32.const 69) (i32.add (i32.const 48) (local.get $t)))
      (i32.store (i32.const 0) (i32.const 64))
      (i32.store (i32.const 4) (i32.const 7))
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $t (i32.add (local.get $t) (i32.const 1)))
      (br_if $ticks (i32.lt_u (local.get $t) (i32.const 4)))))
)
