/*
 * wordfreq: counts the words of a text file, as a C command-line tool would, with nothing
 * but the C library (Debian's clang + wasi-libc: `clang --target=wasm32-wasi -O2 wordfreq.c
 * -o wordfreq.wasm`).
 *
 * Usage: wordfreq INPUT OUTDIR
 * Reads INPUT (e.g. /blobs/book.txt), keeps a temporary spill file under /tmp, writes
 * OUTDIR/counts.tsv (word, count; most frequent first) and OUTDIR/summary.txt, lists OUTDIR,
 * and prints the summary. Exits 1 with a message on stderr when a file cannot be used.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct word {
    char *text;
    long count;
};

static struct word *words;
static size_t nwords, cap;

static void count(const char *w) {
    for (size_t i = 0; i < nwords; i++) {
        if (strcmp(words[i].text, w) == 0) {
            words[i].count++;
            return;
        }
    }
    if (nwords == cap) {
        cap = cap ? cap * 2 : 64;
        words = realloc(words, cap * sizeof *words);
    }
    words[nwords].text = strdup(w);
    words[nwords].count = 1;
    nwords++;
}

static int by_count(const void *a, const void *b) {
    const struct word *x = a, *y = b;
    if (x->count != y->count) return x->count < y->count ? 1 : -1;
    return strcmp(x->text, y->text);
}

static int fail(const char *what, const char *path) {
    fprintf(stderr, "wordfreq: %s %s: %s\n", what, path, strerror(errno));
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: wordfreq INPUT OUTDIR\n");
        return 2;
    }
    const char *input = argv[1], *outdir = argv[2];
    FILE *in = fopen(input, "r");
    if (!in) return fail("cannot open", input);

    /* Lower-cased words go to a spill file first, one per line, as a bigger tool would. */
    FILE *spill = fopen("/tmp/words.txt", "w+");
    if (!spill) return fail("cannot create", "/tmp/words.txt");
    char w[128];
    size_t n = 0;
    long total = 0;
    int c;
    while ((c = fgetc(in)) != EOF) {
        if (isalpha(c) && n + 1 < sizeof w) {
            w[n++] = (char)tolower(c);
        } else if (n > 0) {
            w[n] = 0;
            fprintf(spill, "%s\n", w);
            n = 0;
            total++;
        }
    }
    if (n > 0) {
        w[n] = 0;
        fprintf(spill, "%s\n", w);
        total++;
    }
    fclose(in);
    rewind(spill);
    while (fgets(w, sizeof w, spill)) {
        w[strcspn(w, "\n")] = 0;
        count(w);
    }
    fclose(spill);
    if (unlink("/tmp/words.txt") != 0) return fail("cannot remove", "/tmp/words.txt");
    qsort(words, nwords, sizeof *words, by_count);

    if (mkdir(outdir, 0755) != 0 && errno != EEXIST) return fail("cannot create", outdir);
    char path[512];
    snprintf(path, sizeof path, "%s/counts.tsv", outdir);
    FILE *out = fopen(path, "w");
    if (!out) return fail("cannot create", path);
    for (size_t i = 0; i < nwords; i++) fprintf(out, "%s\t%ld\n", words[i].text, words[i].count);
    if (fclose(out) != 0) return fail("cannot write", path);

    snprintf(path, sizeof path, "%s/summary.txt", outdir);
    out = fopen(path, "w");
    if (!out) return fail("cannot create", path);
    fprintf(out, "%ld words, %zu distinct; most frequent: %s (%ld)\n", total, nwords,
            nwords ? words[0].text : "-", nwords ? words[0].count : 0L);
    if (fclose(out) != 0) return fail("cannot write", path);

    DIR *d = opendir(outdir);
    if (!d) return fail("cannot list", outdir);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", outdir, e->d_name);
        if (stat(path, &st) != 0) return fail("cannot stat", path);
        printf("%s %lld bytes\n", e->d_name, (long long)st.st_size);
    }
    closedir(d);

    snprintf(path, sizeof path, "%s/summary.txt", outdir);
    in = fopen(path, "r");
    if (!in) return fail("cannot open", path);
    while ((c = fgetc(in)) != EOF) putchar(c);
    fclose(in);
    return 0;
}
