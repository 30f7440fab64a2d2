;; nomemory: a valid module with `_start` but no exported memory, so WASI calls
;; could not work. A runner must reject it as "no exported memory".
(module
  (memory 1)
  (func (export "_start")))
