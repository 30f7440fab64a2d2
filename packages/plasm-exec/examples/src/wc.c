/* wc: count lines, words and bytes of stdin or of each FILE, like POSIX wc.
 *
 *   wc.wasm [-l] [-w] [-c] [FILE...]
 *
 * Prints "<lines> <words> <bytes>" (only the selected counts, always in that order),
 * followed by " <name>" when FILEs are given, and a "total" line for more than one.
 * Counts are separated by one space (the POSIX "%d %d %d" format, without padding).
 * A line is a '\n'; a word is a maximal run of bytes that are not ASCII whitespace
 * (space, \t, \n, \v, \f, \r), as in the C locale. FILEs are opened through the
 * directories the host preopened (plasm-exec --dir).
 *
 * Exit status: 0, 1 if a FILE could not be read, 2 on a bad option.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    uint64_t lines, words, bytes;
} counts;

static int show_lines, show_words, show_bytes;

static int is_space(unsigned char b) { return b == ' ' || (b >= '\t' && b <= '\r'); }

static int count_stream(FILE *f, const char *name, counts *out) {
    static unsigned char buf[64 * 1024];
    counts c = {0, 0, 0};
    int in_word = 0;
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        c.bytes += n;
        for (size_t i = 0; i < n; i++) {
            unsigned char b = buf[i];
            if (b == '\n') c.lines++;
            if (is_space(b)) {
                in_word = 0;
            } else if (!in_word) {
                in_word = 1;
                c.words++;
            }
        }
    }
    if (ferror(f)) {
        fprintf(stderr, "wc: %s: %s\n", name, strerror(errno));
        return 1;
    }
    *out = c;
    return 0;
}

static void print_counts(const counts *c, const char *name) {
    const char *sep = "";
    if (show_lines) { printf("%s%llu", sep, (unsigned long long)c->lines); sep = " "; }
    if (show_words) { printf("%s%llu", sep, (unsigned long long)c->words); sep = " "; }
    if (show_bytes) { printf("%s%llu", sep, (unsigned long long)c->bytes); }
    if (name != NULL) printf(" %s", name);
    printf("\n");
}

int main(int argc, char **argv) {
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1] != '\0'; i++) {
        if (strcmp(argv[i], "--") == 0) { i++; break; }
        for (const char *p = argv[i] + 1; *p; p++) {
            switch (*p) {
            case 'l': show_lines = 1; break;
            case 'w': show_words = 1; break;
            case 'c': show_bytes = 1; break;
            default:
                fprintf(stderr, "wc: unknown option -%c\nusage: wc [-l] [-w] [-c] [FILE...]\n", *p);
                return 2;
            }
        }
    }
    if (!show_lines && !show_words && !show_bytes) show_lines = show_words = show_bytes = 1;

    int status = 0;
    counts c;
    if (i == argc) {
        if (count_stream(stdin, "-", &c) == 0) print_counts(&c, NULL); else status = 1;
    } else {
        counts total = {0, 0, 0};
        int nfiles = argc - i;
        for (; i < argc; i++) {
            FILE *f = strcmp(argv[i], "-") == 0 ? stdin : fopen(argv[i], "rb");
            if (f == NULL) {
                fprintf(stderr, "wc: %s: %s\n", argv[i], strerror(errno));
                status = 1;
                continue;
            }
            if (count_stream(f, argv[i], &c) == 0) {
                print_counts(&c, argv[i]);
                total.lines += c.lines;
                total.words += c.words;
                total.bytes += c.bytes;
            } else {
                status = 1;
            }
            if (f != stdin) fclose(f);
        }
        if (nfiles > 1) print_counts(&total, "total");
    }
    if (fflush(stdout) != 0) {
        fprintf(stderr, "wc: write error: %s\n", strerror(errno));
        return 1;
    }
    return status;
}
