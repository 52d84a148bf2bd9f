;; Stands in for the coordinator's Rune runner (whatever its stdin): prints two lines, with
;; busy work before each, then the result line {"ok":{"sum":3}}, each with its own write.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "line 0\n")
  (data (i32.const 80) "{\"ok\":{\"sum\":3}}\n")
  (func $spin
    (local $i i32)
    (loop $l
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 100000000)))))
  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start")
    (call $spin)
    (call $write (i32.const 64) (i32.const 7))
    (call $spin)
    (i32.store8 (i32.const 69) (i32.const 49))
    (call $write (i32.const 64) (i32.const 7))
    (call $write (i32.const 80) (i32.const 17))))
