;; flood: writes "y\n" to stdout forever, 64 KiB per fd_write, like `yes`.
;; It ignores fd_write errors and short writes on purpose: only the host's
;; output fence (or fuel, or the wall clock) ends it. Expected end: output_limit.
;; Unfenced it writes hundreds of MB per second; never run it without a limit.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  ;; 0..7: one iovec {buf = 65536, len = 65536}; 8..11: bytes written
  (data (i32.const 0) "\00\00\01\00\00\00\01\00")
  (data (i32.const 65536) "y\n")
  (func (export "_start")
    (local $have i32)
    ;; fill 65536..131071 with "y\ny\n...": double the filled prefix 15 times
    (local.set $have (i32.const 2))
    (loop $fill
      (memory.copy
        (i32.add (i32.const 65536) (local.get $have)) (i32.const 65536) (local.get $have))
      (local.set $have (i32.shl (local.get $have) (i32.const 1)))
      (br_if $fill (i32.lt_u (local.get $have) (i32.const 65536))))
    (loop $forever
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br $forever))))
