/* uuidgen: print a random (version 4) UUID, like util-linux uuidgen -r.
 *
 *   uuidgen.wasm
 *
 * The 16 bytes come from WASI random_get, so under plasm-exec --deterministic the
 * output is the same on every run; otherwise it differs each time.
 *
 * Exit status: 0, or 1 if random_get fails.
 */
#include <stdint.h>
#include <stdio.h>
#include <wasi/api.h>

int main(void) {
    uint8_t u[16];
    if (__wasi_random_get(u, sizeof u) != 0) {
        fputs("uuidgen: random_get failed\n", stderr);
        return 1;
    }
    u[6] = (uint8_t)((u[6] & 0x0F) | 0x40); /* version 4 */
    u[8] = (uint8_t)((u[8] & 0x3F) | 0x80); /* RFC 4122 variant */
    for (int i = 0; i < 16; i++) {
        printf("%02x", u[i]);
        if (i == 3 || i == 5 || i == 7 || i == 9) putchar('-');
    }
    putchar('\n');
    return fflush(stdout) == 0 ? 0 : 1;
}
