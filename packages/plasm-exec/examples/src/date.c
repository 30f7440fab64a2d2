/* date: print the current UTC time as RFC 3339 with nanoseconds, then the monotonic
 * clock in nanoseconds.
 *
 *   date.wasm        ->   2025-05-20T12:34:56.123456789Z
 *                         monotonic_ns=123456789
 *
 * Reads the WASI realtime and monotonic clocks, so under plasm-exec --deterministic
 * both lines are the same on every run.
 *
 * Exit status: 0, or 1 if a clock cannot be read.
 */
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <wasi/api.h>

int main(void) {
    __wasi_timestamp_t real = 0, mono = 0;
    if (__wasi_clock_time_get(__WASI_CLOCKID_REALTIME, 1, &real) != 0 ||
        __wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &mono) != 0) {
        fputs("date: cannot read the clock\n", stderr);
        return 1;
    }
    time_t secs = (time_t)(real / 1000000000u);
    struct tm tm;
    char text[64];
    if (gmtime_r(&secs, &tm) == NULL || strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
        fputs("date: time out of range\n", stderr);
        return 1;
    }
    printf("%s.%09uZ\nmonotonic_ns=%llu\n", text, (unsigned)(real % 1000000000u),
           (unsigned long long)mono);
    return fflush(stdout) == 0 ? 0 : 1;
}
