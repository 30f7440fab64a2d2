;; recurse: unbounded, non-tail recursion. Each call adds a frame until the engine's
;; wasm stack limit is hit and the guest traps. Expected end: trapped (stack overflow).
(module
  (memory (export "memory") 1)
  (func $down (param $depth i64) (result i64)
    (i64.add
      (call $down (i64.add (local.get $depth) (i64.const 1)))
      (local.get $depth)))
  (func (export "_start")
    (drop (call $down (i64.const 0)))))
