/* printenv: print the guest's environment, like coreutils printenv.
 *
 *   printenv.wasm [NAME...]
 *
 * With no NAME, prints every variable the host passed (plasm-exec --env K=V; nothing
 * is inherited) as "NAME=value", one per line, in the order given. With NAMEs, prints
 * the value of each one that is set, one per line.
 *
 * Exit status: 0, or 1 if any NAME is not set.
 */
#include <stdio.h>
#include <stdlib.h>

extern char **environ;

int main(int argc, char **argv) {
    int status = 0;
    if (argc < 2) {
        for (char **e = environ; *e != NULL; e++) puts(*e);
    } else {
        for (int i = 1; i < argc; i++) {
            const char *value = getenv(argv[i]);
            if (value == NULL) {
                status = 1;
            } else {
                puts(value);
            }
        }
    }
    if (fflush(stdout) != 0) return 1;
    return status;
}
