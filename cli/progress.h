/* progress: the live one-line status that `sglc batch` and `sglc run`
 * (run_batch) draw on stderr while programs run:
 *
 *   [12/40] 11 done, 1 failed, 16 running | 153.2 tok/s | cache 45.0% | 0:12 | ETA 0:28
 *
 * On a terminal the line is redrawn in place (at most ten times a second,
 * cut to the terminal's width) and erased by cli_progress_end, so what the
 * command prints afterwards starts on a clean line. Off a terminal (only
 * when asked for with --progress) it is written as plain lines, at most one
 * a second, plus a last one at the end. Tokens per second and the cache hit
 * rate come from the engine's metrics, measured from cli_progress_new.
 */
#ifndef SGL_CLI_PROGRESS_H
#define SGL_CLI_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "runtime/engine.h"

typedef struct cli_progress cli_progress;

/* Counts to show; total 0 = not known yet (no ETA). */
typedef struct cli_progress_counts {
    int64_t total, done, failed, running;
} cli_progress_counts;

/* Whether a command draws the line: stderr is a terminal, or forced
 * (--progress). */
bool cli_progress_wanted(bool forced);

/* A status line on out (stderr) for a run on engine e (borrowed; may be
 * NULL: no token figures). Returns NULL when memory runs out; every other
 * function accepts NULL and then does nothing. Caller frees with
 * cli_progress_end. */
cli_progress *cli_progress_new(FILE *out, sgl_engine *e);

/* Redraws the line with counts when it is due (rate-limited), or at once
 * when force. */
void cli_progress_update(cli_progress *p, const cli_progress_counts *c, bool force);

/* Erases the line on a terminal (nothing is left behind), or writes the
 * last counts as a final plain line off one; then frees p. */
void cli_progress_end(cli_progress *p, const cli_progress_counts *last);

/* For a program's own output on the same terminal: erases the line before
 * each write to out (borrowed; stdout), so output never lands after the
 * status text; the next update redraws it. Returns a FILE to write to
 * instead of out (the caller fcloses it before cli_progress_end), or out
 * itself when no wrapping is needed or possible. */
FILE *cli_progress_wrap(cli_progress *p, FILE *out);

#endif
