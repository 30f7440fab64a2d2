;; bigmem: declares an initial memory of 4096 pages (256 MiB) and then exits 0 without
;; touching it. With a memory limit below 256 MiB, instantiation must fail cleanly
;; ("initial memory over the limit"); with a larger limit it runs and exits 0.
(module
  (memory (export "memory") 4096)
  (func (export "_start")))
