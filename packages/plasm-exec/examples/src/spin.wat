;; spin: an infinite loop that makes no host calls.
;; Ends only by a fence: out of fuel, or the wall clock (epoch interruption).
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $forever
      (br $forever))))
