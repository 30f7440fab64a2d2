/* exit: end at once through WASI proc_exit(n), with n from argv[1].
 *
 *   exit.wasm N        N is a decimal integer 0..255 (default 0)
 *
 * Used by plasm-exec's tests to check that guest exit codes come through exactly.
 * It calls __wasi_proc_exit directly (not exit()), writes nothing and flushes nothing.
 * A missing-digit or out-of-range N prints a usage line on stderr and exits with 2.
 */
#include <stdio.h>
#include <stdlib.h>
#include <wasi/api.h>

int main(int argc, char **argv) {
    unsigned long n = 0;
    if (argc > 1) {
        char *end = NULL;
        n = strtoul(argv[1], &end, 10);
        if (argv[1][0] < '0' || argv[1][0] > '9' || *end != '\0' || n > 255) {
            fputs("usage: exit N   (N in 0..255)\n", stderr);
            fflush(stderr);
            __wasi_proc_exit(2);
        }
    }
    __wasi_proc_exit((__wasi_exitcode_t)n);
}
