;; badimport: imports a function from outside WASI preview1 (module "env"), as a
;; module built for another host would. A runner must reject it as an unsupported
;; import, naming "env" "host_secret", before running anything.
(module
  (import "env" "host_secret" (func $host_secret (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $host_secret))))
