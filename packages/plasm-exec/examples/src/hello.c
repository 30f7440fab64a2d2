/* hello: read all of stdin and write it reversed by Unicode code point.
 *
 *   printf 'Hello, World' | plasm-exec run hello.wasm   ->   dlroW ,olleH
 *
 * Input is read whole into a buffer that grows as needed, so any size that fits in
 * linear memory works. A well-formed UTF-8 sequence moves as one unit; any byte that
 * is not part of a well-formed sequence (Unicode 15, table 3-7) moves on its own, so
 * arbitrary bytes reverse the way Python's
 *   data.decode("utf-8", "surrogateescape")[::-1].encode("utf-8", "surrogateescape")
 * does. No newline is added. Writes loop until every byte is accepted (short writes).
 *
 * Exit status: 0, or 1 when reading stdin or writing stdout fails (message on stderr)
 * or when memory runs out.
 *
 * It talks to WASI directly (<wasi/api.h>), not through stdio, to stay small.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <wasi/api.h>

static int write_all(__wasi_fd_t fd, const uint8_t *buf, size_t len) {
    while (len > 0) {
        __wasi_ciovec_t iov = {.buf = buf, .buf_len = len};
        size_t written = 0;
        if (__wasi_fd_write(fd, &iov, 1, &written) != 0) {
            return -1;
        }
        buf += written;
        len -= written;
    }
    return 0;
}

static int fail(const char *what) {
    write_all(2, (const uint8_t *)"hello: ", 7);
    write_all(2, (const uint8_t *)what, strlen(what));
    write_all(2, (const uint8_t *)"\n", 1);
    return 1;
}

static int is_cont(uint8_t b) { return (b & 0xC0) == 0x80; }

/* Length of the well-formed UTF-8 sequence starting at s[0], or 1 if there is none. */
static size_t char_len(const uint8_t *s, size_t avail) {
    uint8_t b0 = s[0];
    if (b0 < 0x80) return 1;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        return (avail >= 2 && is_cont(s[1])) ? 2 : 1;
    }
    if (b0 >= 0xE0 && b0 <= 0xEF) {
        uint8_t lo = (b0 == 0xE0) ? 0xA0 : 0x80; /* no overlongs */
        uint8_t hi = (b0 == 0xED) ? 0x9F : 0xBF; /* no surrogates */
        if (avail >= 3 && s[1] >= lo && s[1] <= hi && is_cont(s[2])) return 3;
        return 1;
    }
    if (b0 >= 0xF0 && b0 <= 0xF4) {
        uint8_t lo = (b0 == 0xF0) ? 0x90 : 0x80; /* no overlongs */
        uint8_t hi = (b0 == 0xF4) ? 0x8F : 0xBF; /* nothing above U+10FFFF */
        if (avail >= 4 && s[1] >= lo && s[1] <= hi && is_cont(s[2]) && is_cont(s[3])) return 4;
        return 1;
    }
    return 1;
}

int main(void) {
    size_t cap = 64 * 1024;
    size_t len = 0;
    uint8_t *in = malloc(cap);
    if (in == NULL) return fail("out of memory");
    for (;;) {
        if (len == cap) {
            uint8_t *grown = (cap <= SIZE_MAX / 2) ? realloc(in, cap * 2) : NULL;
            if (grown == NULL) return fail("out of memory");
            in = grown;
            cap *= 2;
        }
        __wasi_iovec_t iov = {.buf = in + len, .buf_len = cap - len};
        size_t got = 0;
        if (__wasi_fd_read(0, &iov, 1, &got) != 0) return fail("cannot read stdin");
        if (got == 0) break;
        len += got;
    }

    uint8_t *out = malloc(len > 0 ? len : 1);
    if (out == NULL) return fail("out of memory");
    for (size_t i = 0; i < len;) {
        size_t n = char_len(in + i, len - i);
        memcpy(out + (len - i - n), in + i, n);
        i += n;
    }
    if (write_all(1, out, len) != 0) return fail("cannot write stdout");
    return 0;
}
