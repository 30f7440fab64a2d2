/* tee: copy stdin to stdout and to each FILE, like coreutils tee.
 *
 *   tee.wasm [-a] [FILE...]
 *
 * FILEs are created (or appended to, with -a) inside the directories the host
 * preopened; a directory preopened read-only (plasm-exec --dir without :rw) makes
 * the open fail, which is reported and ends the run with status 1 after copying.
 *
 * Exit status: 0, 1 if any FILE could not be opened or written, 2 on a bad option.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#define MAX_FILES 64

int main(int argc, char **argv) {
    const char *mode = "wb";
    int i = 1;
    if (i < argc && strcmp(argv[i], "-a") == 0) { mode = "ab"; i++; }
    if (i < argc && argv[i][0] == '-' && argv[i][1] != '\0') {
        fprintf(stderr, "tee: unknown option %s\nusage: tee [-a] [FILE...]\n", argv[i]);
        return 2;
    }
    if (argc - i > MAX_FILES) {
        fprintf(stderr, "tee: at most %d files\n", MAX_FILES);
        return 2;
    }
    FILE *out[MAX_FILES + 1];
    const char *names[MAX_FILES + 1];
    int nout = 0, status = 0;
    out[nout] = stdout;
    names[nout++] = "stdout";
    for (; i < argc; i++) {
        FILE *f = fopen(argv[i], mode);
        if (f == NULL) {
            fprintf(stderr, "tee: %s: %s\n", argv[i], strerror(errno));
            status = 1;
            continue;
        }
        out[nout] = f;
        names[nout++] = argv[i];
    }
    static char buf[64 * 1024];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) {
        for (int k = 0; k < nout; k++) {
            if (out[k] != NULL && fwrite(buf, 1, n, out[k]) != n) {
                fprintf(stderr, "tee: %s: %s\n", names[k], strerror(errno));
                status = 1;
                if (k > 0) fclose(out[k]);
                out[k] = NULL;
            }
        }
    }
    if (ferror(stdin)) {
        fprintf(stderr, "tee: stdin: %s\n", strerror(errno));
        status = 1;
    }
    for (int k = 0; k < nout; k++) {
        if (out[k] == NULL) continue;
        if ((k == 0 ? fflush(out[k]) : fclose(out[k])) != 0) {
            fprintf(stderr, "tee: %s: %s\n", names[k], strerror(errno));
            status = 1;
        }
    }
    return status;
}
