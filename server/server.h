/* server: `sglc serve`'s HTTP front end (libmicrohttpd, one thread per
 * connection) over one shared engine: OpenAI, SGLang-native and Anthropic
 * routes, whole SGL program runs, Prometheus metrics. See docs/server.md
 * for the routes and server/README.md for the layout.
 *
 *   sgl_server_config c = sgl_server_config_default();
 *   sgl_server *s = sgl_server_start(&c, engine, &err);  // engine borrowed
 *   ... wait for a signal ...
 *   sgl_server_shutdown(s);   // stop accepting, finish or abort in-flight
 *   sgl_server_free(s);
 */
#ifndef SGL_SERVER_H
#define SGL_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "runtime/engine.h"
#include "util/util.h"

typedef struct sgl_server_config {
    const char *host;          /* default "127.0.0.1" */
    int port;                  /* default 30000; 0: any free port (see sgl_server_port) */
    const char *api_key;       /* NULL: no auth; else "Authorization: Bearer KEY" on every
                                  route but /health */
    size_t max_body;           /* request bodies above this get 413 (default 8 MiB) */
    bool allow_io;             /* IO builtins in /v1/programs/run */
    const char *programs_dir;  /* NULL: /v1/programs/run takes sources only */
    const char *model_path;    /* shown by /get_model_info and /v1/models */
    double shutdown_grace_s;   /* in-flight requests get this long before they are
                                  aborted at shutdown (default 10) */
    FILE *log;                 /* one line per request; NULL: stderr */
} sgl_server_config;

sgl_server_config sgl_server_config_default(void);

typedef struct sgl_server sgl_server;

/* Starts listening and serving with the local engine e (borrowed; it must
 * outlive the server). Returns the server (caller frees with
 * sgl_server_free) or NULL with err set (bind failure, not a local engine). */
sgl_server *sgl_server_start(const sgl_server_config *cfg, sgl_engine *e, sgl_error *err);
/* The port actually bound. */
int sgl_server_port(const sgl_server *s);
/* Stops accepting, waits up to shutdown_grace_s for in-flight requests,
 * cancels what is left, then stops every connection. Idempotent. */
void sgl_server_shutdown(sgl_server *s);
/* Shuts down if needed and frees. NULL ok. */
void sgl_server_free(sgl_server *s);

#endif
