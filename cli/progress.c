/* progress: the live status line of `sglc batch` and `sglc run` (see
 * progress.h). */
#include "cli/progress.h"

#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "util/util.h"

struct cli_progress {
    FILE *out;
    sgl_engine *engine;
    bool tty;            /* redraw in place; else plain lines */
    bool shown;          /* a line is on the terminal now */
    double t0, last;     /* start; last draw */
    int64_t gen0, prompt0, cached0; /* engine counters at the start */
    cli_progress_counts counts;     /* the last ones drawn */
};

bool cli_progress_wanted(bool forced) { return forced || isatty(fileno(stderr)); }

cli_progress *cli_progress_new(FILE *out, sgl_engine *e) {
    cli_progress *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->out = out;
    p->engine = e;
    p->tty = isatty(fileno(out));
    p->t0 = sgl_now();
    p->last = -1;
    if (e) {
        sgl_engine_metrics m;
        sgl_engine_metrics_get(e, &m);
        p->gen0 = m.generated_tokens;
        p->prompt0 = m.prompt_tokens;
        p->cached0 = m.cached_tokens;
    }
    return p;
}

/* "m:ss" or "h:mm:ss". */
static void fmt_time(char *buf, size_t cap, double s) {
    if (s < 0) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, cap, "%ld:%02ld", t / 60, t % 60);
}

static void erase(cli_progress *p) {
    if (!p->shown) return;
    fputs("\r\033[K", p->out);
    fflush(p->out);
    p->shown = false;
}

static void draw(cli_progress *p, const cli_progress_counts *c) {
    double now = sgl_now(), el = now - p->t0;
    char line[256], t_el[32], t_eta[32];
    int n = 0;
    if (c->total > 0) n = snprintf(line, sizeof line, "[%lld/%lld] ", (long long)c->done, (long long)c->total);
    n += snprintf(line + n, sizeof line - (size_t)n, "%lld done, %lld failed, %lld running",
                  (long long)(c->done - c->failed), (long long)c->failed, (long long)c->running);
    if (p->engine) {
        sgl_engine_metrics m;
        sgl_engine_metrics_get(p->engine, &m);
        int64_t gen = m.generated_tokens - p->gen0, prompt = m.prompt_tokens - p->prompt0,
                cached = m.cached_tokens - p->cached0;
        n += snprintf(line + n, sizeof line - (size_t)n, " | %.1f tok/s | cache %.1f%%",
                      el > 0 ? (double)gen / el : 0.0, prompt > 0 ? 100.0 * (double)cached / (double)prompt : 0.0);
    }
    fmt_time(t_el, sizeof t_el, el);
    n += snprintf(line + n, sizeof line - (size_t)n, " | %s", t_el);
    if (c->total > 0 && c->done > 0 && c->done < c->total) {
        fmt_time(t_eta, sizeof t_eta, el * (double)(c->total - c->done) / (double)c->done);
        n += snprintf(line + n, sizeof line - (size_t)n, " | ETA %s", t_eta);
    } else if (c->total > 0 && c->done < c->total) {
        n += snprintf(line + n, sizeof line - (size_t)n, " | ETA -");
    }
    if (n >= (int)sizeof line) n = (int)sizeof line - 1;
    if (p->tty) {
        /* One terminal line: cut to the width (a wrapped line could not be
         * erased with \r). */
        struct winsize ws;
        if (ioctl(fileno(p->out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 && n > ws.ws_col - 1)
            n = ws.ws_col - 1;
        fprintf(p->out, "\r%.*s\033[K", n, line);
        p->shown = true;
    } else {
        fprintf(p->out, "progress: %.*s\n", n, line);
    }
    fflush(p->out);
    p->last = now;
    p->counts = *c;
}

void cli_progress_update(cli_progress *p, const cli_progress_counts *c, bool force) {
    if (!p) return;
    double now = sgl_now();
    double every = p->tty ? 0.1 : 1.0;
    if (!force && p->last >= 0 && now - p->last < every) return;
    draw(p, c);
}

void cli_progress_end(cli_progress *p, const cli_progress_counts *last) {
    if (!p) return;
    if (p->tty) erase(p);
    else if (last) draw(p, last);
    free(p);
}

/* ---- program output through the status line --------------------------------- */

typedef struct wrap {
    cli_progress *p;
    FILE *out;
} wrap;

static ssize_t wrap_write(void *cookie, const char *buf, size_t size) {
    wrap *w = cookie;
    erase(w->p);
    size_t k = fwrite(buf, 1, size, w->out);
    fflush(w->out);
    return k == 0 && size ? -1 : (ssize_t)k;
}

static int wrap_close(void *cookie) {
    free(cookie);
    return 0;
}

FILE *cli_progress_wrap(cli_progress *p, FILE *out) {
    if (!p || !p->tty || !isatty(fileno(out))) return out;
    wrap *w = calloc(1, sizeof *w);
    if (!w) return out;
    w->p = p;
    w->out = out;
    cookie_io_functions_t io = {.read = NULL, .write = wrap_write, .seek = NULL, .close = wrap_close};
    FILE *f = fopencookie(w, "w", io);
    if (!f) {
        free(w);
        return out;
    }
    setvbuf(f, NULL, _IOLBF, 0);
    return f;
}
