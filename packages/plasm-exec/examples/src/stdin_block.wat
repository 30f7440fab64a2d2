;; stdin_block: reads stdin forever and discards it, never exiting. On a pipe whose
;; writer never closes it the guest sits blocked inside the fd_read host call; at end of
;; input (fd_read returns 0 bytes) or on an error it simply reads again. Expected end:
;; timeout, by the wall-clock fence (epoch interruption), not by fuel.
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; 0..7: one iovec {buf = 16, len = 4096}; 8..11: bytes read
  (data (i32.const 0) "\10\00\00\00\00\10\00\00")
  (func (export "_start")
    (loop $forever
      (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br $forever))))
