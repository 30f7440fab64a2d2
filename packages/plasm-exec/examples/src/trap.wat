;; trap: executes `unreachable` at once. Expected end: trapped (unreachable).
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (unreachable)))
