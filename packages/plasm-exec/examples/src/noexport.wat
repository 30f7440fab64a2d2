;; noexport: a valid module that exports memory and a function, but no `_start`.
;; A runner must reject it as "no _start" before running anything.
(module
  (memory (export "memory") 1)
  (func (export "main") (result i32)
    (i32.const 0)))
