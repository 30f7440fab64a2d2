;; membomb: grows linear memory one 64 KiB page at a time and writes to each new page
;; (so the pages are really used), for as long as memory.grow succeeds. When the host's
;; memory limit refuses a page, memory.grow returns -1 and the guest traps with
;; `unreachable`, the way a C or Rust program aborts when its allocator fails.
;; Expected end: memory_limit (the store's memory fence refused the growth).
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (local $page i32)
    (loop $grow
      (local.set $page (memory.grow (i32.const 1)))
      (if (i32.eq (local.get $page) (i32.const -1))
        (then (unreachable)))
      ;; touch the first word of the new page
      (i32.store (i32.shl (local.get $page) (i32.const 16)) (local.get $page))
      (br $grow))))
