/* test_attention: the CPU backend's attention op (kernels/cpu/attention.c)
 * on hand-made batches over a random f16 KV store with scattered slots.
 *
 *   - against a double-precision softmax reference on awkward shapes
 *     (head_dim 20, 24, 64, 128; GQA groups of 1, 3, 4, 5; contexts of 1 to
 *     1100 keys, across the 512-key chunk boundaries; prefill blocks and
 *     single decode tokens);
 *   - determinism: the output row of one (sequence, position) is the same
 *     bits whether the sequence is prefilled in one go, in chunks, decoded
 *     token by token, batched with unrelated sequences, and on 1 to 4
 *     threads.
 *   - the AVX2 kernel and the portable loops agree bit for bit (a child
 *     process with SGL_ATT_NO_AVX2=1 hashes the same outputs).
 * Run a second time with SGL_ATT_NO_AVX2=1 (meson) for the portable loops.
 */
#include <stdint.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/kernels.h"
#include "tests/test.h"

enum { N_SLOTS = 4500, N_LAYERS = 2, LAYER = 1, MAX_SEQS = 4, MAX_LEN = 1100 };

typedef struct {
    int nh, nkv, hd;
} shape;

static uint32_t rng = 12345;
static float frand(void) { /* [-1, 1) */
    rng = rng * 1664525u + 1013904223u;
    return (float)(rng >> 8) / 8388608.0f - 1.0f;
}

/* The fixture: a KV store of random values, per sequence a scattered slot
 * list and one query row per position. */
typedef struct {
    shape s;
    kb_kv kv;
    uint16_t *k, *v;
    int32_t slots[MAX_SEQS][MAX_LEN];
    float *q[MAX_SEQS]; /* [MAX_LEN][nh * hd] */
} fixture;

static void fx_init(fixture *f, shape s) {
    memset(f, 0, sizeof *f);
    f->s = s;
    int kvd = s.nkv * s.hd;
    size_t n = (size_t)N_LAYERS * N_SLOTS * (size_t)kvd;
    f->k = malloc(n * 2), f->v = malloc(n * 2);
    float *tmp = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) tmp[i] = 2.0f * frand();
    kern_f32_to_f16(f->k, tmp, (int64_t)n);
    for (size_t i = 0; i < n; i++) tmp[i] = frand();
    kern_f32_to_f16(f->v, tmp, (int64_t)n);
    free(tmp);
    f->kv = (kb_kv){.n_slots = N_SLOTS, .n_layers = N_LAYERS, .kv_dim = kvd, .k = f->k, .v = f->v};
    /* slots: a permutation of the store, each sequence a disjoint stretch */
    static int32_t perm[N_SLOTS];
    for (int i = 0; i < N_SLOTS; i++) perm[i] = i;
    for (int i = N_SLOTS - 1; i > 0; i--) {
        rng = rng * 1664525u + 1013904223u;
        int j = (int)((rng >> 8) % (uint32_t)(i + 1));
        int32_t t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    for (int sq = 0; sq < MAX_SEQS; sq++) {
        memcpy(f->slots[sq], perm + sq * MAX_LEN, sizeof(int32_t) * MAX_LEN);
        f->q[sq] = malloc(sizeof(float) * (size_t)MAX_LEN * s.nh * s.hd);
        for (int i = 0; i < MAX_LEN * s.nh * s.hd; i++) f->q[sq][i] = 2.0f * frand();
    }
}

static void fx_free(fixture *f) {
    free(f->k), free(f->v);
    for (int sq = 0; sq < MAX_SEQS; sq++) free(f->q[sq]);
}

/* One piece of a batch: new tokens [pos0, pos0 + n_new) of sequence seq. */
typedef struct {
    int seq, pos0, n_new;
} piece;

/* Runs one attention call over the pieces on a pool of `threads` threads
 * and copies each output row to res[seq][pos] (rows of nh * hd). Returns 0
 * or -1. */
static int run(fixture *f, int threads, const piece *pc, int n, float **res) {
    int qd = f->s.nh * f->s.hd;
    int64_t rows = 0;
    int32_t max_ctx = 0;
    for (int i = 0; i < n; i++) rows += pc[i].n_new;
    kb_seq seqs[16];
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)rows);
    int32_t *row_seq = malloc(sizeof(int32_t) * (size_t)rows);
    int32_t *zero = calloc((size_t)rows, sizeof(int32_t));
    float *q = malloc(sizeof(float) * (size_t)(rows * qd));
    float *out = malloc(sizeof(float) * (size_t)(rows * qd));
    int64_t r = 0;
    for (int i = 0; i < n; i++) {
        seqs[i] = (kb_seq){.row0 = (int32_t)r, .n_new = pc[i].n_new, .pos0 = pc[i].pos0,
                           .slot0 = 0, .slots = f->slots[pc[i].seq]};
        max_ctx = SGL_MAX(max_ctx, pc[i].pos0 + pc[i].n_new);
        for (int t = 0; t < pc[i].n_new; t++, r++) {
            pos[r] = pc[i].pos0 + t;
            row_seq[r] = i;
            memcpy(q + r * qd, f->q[pc[i].seq] + (int64_t)pos[r] * qd, sizeof(float) * (size_t)qd);
        }
    }
    kb_batch b = {.n_seqs = n, .seqs = seqs, .n_rows = rows, .tok = zero, .pos = pos,
                  .wslot = zero, .row_seq = row_seq, .max_ctx = max_ctx};
    kern_pool *pool = kern_pool_new(threads);
    kb_backend *be = kb_cpu_new(pool);
    sgl_error err;
    int bad, rc = -1;
    kb_att_shape sh = {f->s.nh, f->s.nkv, f->s.hd};
    if (be && be->ops->begin(be, &b, &err) == 0) {
        be->ops->attention(be, &f->kv, LAYER, &sh, q, out);
        rc = be->ops->finish(be, &bad, &err);
    }
    r = 0;
    for (int i = 0; i < n && rc == 0; i++)
        for (int t = 0; t < pc[i].n_new; t++, r++)
            memcpy(res[pc[i].seq] + (int64_t)(pc[i].pos0 + t) * qd, out + r * qd,
                   sizeof(float) * (size_t)qd);
    if (be) be->ops->destroy(be);
    kern_pool_free(pool);
    free(pos), free(row_seq), free(zero), free(q), free(out);
    return rc;
}

static float **res_new(fixture *f) {
    float **r = malloc(sizeof(float *) * MAX_SEQS);
    for (int sq = 0; sq < MAX_SEQS; sq++) {
        size_t n = (size_t)MAX_LEN * f->s.nh * f->s.hd;
        r[sq] = malloc(sizeof(float) * n);
        for (size_t i = 0; i < n; i++) r[sq][i] = NAN; /* rows no run wrote stay NaN */
    }
    return r;
}
static void res_free(float **r) {
    for (int sq = 0; sq < MAX_SEQS; sq++) free(r[sq]);
    free(r);
}

static float f16_at(const uint16_t *p) {
    float x;
    kern_f16_to_f32(&x, p, 1);
    return x;
}

/* Largest |out - reference| over the heads of (seq, pos). */
static double ref_err(fixture *f, float **res, int seq, int pos) {
    const shape s = f->s;
    int qd = s.nh * s.hd, kvd = s.nkv * s.hd, rep = s.nh / s.nkv;
    const float *q = f->q[seq] + (int64_t)pos * qd, *o = res[seq] + (int64_t)pos * qd;
    double *sc = malloc(sizeof(double) * (size_t)(pos + 1)), worst = 0;
    for (int h = 0; h < s.nh; h++) {
        int kh = h / rep;
        double mx = -1e300, sum = 0;
        for (int j = 0; j <= pos; j++) {
            const uint16_t *k =
                f->k + ((int64_t)LAYER * N_SLOTS + f->slots[seq][j]) * kvd + kh * s.hd;
            double d = 0;
            for (int i = 0; i < s.hd; i++) d += (double)q[h * s.hd + i] * f16_at(k + i);
            sc[j] = d / sqrt((double)s.hd);
            mx = sc[j] > mx ? sc[j] : mx;
        }
        for (int j = 0; j <= pos; j++) sum += sc[j] = exp(sc[j] - mx);
        for (int i = 0; i < s.hd; i++) {
            double a = 0;
            for (int j = 0; j <= pos; j++)
                a += sc[j] * f16_at(f->v + ((int64_t)LAYER * N_SLOTS + f->slots[seq][j]) * kvd +
                                    kh * s.hd + i);
            double e = fabs(a / sum - o[h * s.hd + i]);
            if (!(e <= worst)) worst = e; /* NaN counts as worst */
        }
    }
    free(sc);
    return worst;
}

static const shape SHAPES[] = {{9, 3, 64}, {8, 2, 128}, {4, 4, 20}, {5, 1, 24}};

/* Prefill blocks and decode tokens of several sequences in one batch,
 * every row checked (sampled) against the reference. */
static void test_reference(void) {
    for (size_t si = 0; si < sizeof SHAPES / sizeof *SHAPES; si++) {
        fixture f;
        fx_init(&f, SHAPES[si]);
        float **res = res_new(&f);
        /* seq 0: 1100 tokens in one prefill; seq 1: one token at 0; seq 2:
         * a block at 500..530 (crosses 512); seq 3: decode at 1023 and 1024 */
        piece a[] = {{0, 0, MAX_LEN}, {1, 0, 1}, {2, 500, 31}, {3, 1023, 1}};
        piece b[] = {{3, 1024, 1}, {1, 511, 1}, {2, 0, 1}};
        CHECK(run(&f, 2, a, 4, res) == 0);
        CHECK(run(&f, 3, b, 3, res) == 0);
        int check[][2] = {{0, 0}, {0, 1}, {0, 7}, {0, 511}, {0, 512}, {0, 513}, {0, 777},
                          {0, 1023}, {0, 1024}, {0, 1099}, {1, 0}, {1, 511}, {2, 0},
                          {2, 500}, {2, 511}, {2, 512}, {2, 530}, {3, 1023}, {3, 1024}};
        for (size_t i = 0; i < sizeof check / sizeof *check; i++) {
            double e = ref_err(&f, res, check[i][0], check[i][1]);
            CHECK_MSG(e <= 1e-5, "shape %d/%d x %d: seq %d pos %d: error %g", f.s.nh, f.s.nkv,
                      f.s.hd, check[i][0], check[i][1], e);
        }
        res_free(res);
        fx_free(&f);
    }
}

static int same_rows(fixture *f, float **x, float **y, int seq, int p0, int p1) {
    size_t qd = (size_t)f->s.nh * f->s.hd;
    return memcmp(x[seq] + p0 * qd, y[seq] + p0 * qd, sizeof(float) * qd * (size_t)(p1 - p0)) == 0;
}

/* Sequence 0 (1100 tokens) computed five ways; every row bit-identical. */
static void test_determinism(void) {
    for (size_t si = 0; si < sizeof SHAPES / sizeof *SHAPES; si++) {
        fixture f;
        fx_init(&f, SHAPES[si]);
        float **one = res_new(&f), **other = res_new(&f);
        piece whole = {0, 0, MAX_LEN};
        CHECK(run(&f, 1, &whole, 1, one) == 0);
        /* the same on 2 and 4 threads */
        for (int th = 2; th <= 4; th += 2) {
            CHECK(run(&f, th, &whole, 1, other) == 0);
            CHECK_MSG(same_rows(&f, one, other, 0, 0, MAX_LEN), "shape %zu: %d threads", si, th);
        }
        /* chunked prefill (blocks cross the 64-token items and 512-key
         * chunks at other places), with unrelated sequences in the batch */
        piece c1[] = {{1, 0, 40}, {0, 0, 5}};
        piece c2[] = {{0, 5, 600}, {2, 0, 1}, {1, 40, 1}};
        piece c3[] = {{3, 0, 70}, {0, 605, 480}};
        CHECK(run(&f, 2, c1, 2, other) == 0);
        CHECK(run(&f, 3, c2, 3, other) == 0);
        CHECK(run(&f, 2, c3, 2, other) == 0);
        CHECK_MSG(same_rows(&f, one, other, 0, 0, 1085), "shape %zu: chunked prefill", si);
        /* the last tokens decoded one at a time (one work item per chunk),
         * alone or batched with other decodes and a prefill, 1..3 threads */
        for (int p = 1085; p < MAX_LEN; p++) {
            piece d[] = {{2, 3 + p % 5, 1}, {0, p, 1}, {1, 100, 17}, {3, p - 300, 1}};
            int n = p % 3 == 0 ? 1 : 4;
            CHECK(run(&f, 1 + p % 3, n == 1 ? d + 1 : d, n, other) == 0);
        }
        CHECK_MSG(same_rows(&f, one, other, 0, 1085, MAX_LEN), "shape %zu: decode", si);
        /* and a decode token at every chunk position class, against the
         * one-shot prefill's row */
        int ps[] = {0, 1, 510, 511, 512, 513, 1023, 1024, 1025};
        for (size_t i = 0; i < sizeof ps / sizeof *ps; i++) {
            piece d = {0, ps[i], 1};
            CHECK(run(&f, 2, &d, 1, other) == 0);
            CHECK_MSG(same_rows(&f, one, other, 0, ps[i], ps[i] + 1), "shape %zu: decode at %d",
                      si, ps[i]);
        }
        res_free(one), res_free(other);
        fx_free(&f);
    }
}

/* FNV-1a over the bits of every output row of a batch mixing prefill
 * blocks and decode tokens, for every shape. */
static uint64_t outputs_hash(void) {
    uint64_t h = 1469598103934665603ull;
    rng = 4242; /* the same data in both processes */
    for (size_t si = 0; si < sizeof SHAPES / sizeof *SHAPES; si++) {
        fixture f;
        fx_init(&f, SHAPES[si]);
        float **res = res_new(&f);
        piece a[] = {{0, 0, 700}, {1, 1030, 1}, {2, 500, 31}, {3, 511, 1}};
        if (run(&f, 2, a, 4, res)) h = 0;
        int qd = f.s.nh * f.s.hd;
        for (size_t i = 0; i < sizeof a / sizeof *a; i++) {
            const unsigned char *b =
                (const unsigned char *)(res[a[i].seq] + (int64_t)a[i].pos0 * qd);
            for (size_t k = 0; k < sizeof(float) * (size_t)qd * (size_t)a[i].n_new; k++)
                h = (h ^ b[k]) * 1099511628211ull;
        }
        res_free(res);
        fx_free(&f);
    }
    return h;
}

/* The AVX2 kernel and the portable loops give the same bits: this process
 * (whichever path the CPU picks) against a child run with SGL_ATT_NO_AVX2=1. */
static void test_paths_agree(void) {
    if (getenv("SGL_ATT_NO_AVX2")) return; /* this run is the portable one */
    char cmd[4200];
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return;
    self[n] = 0;
    snprintf(cmd, sizeof cmd, "SGL_ATT_NO_AVX2=1 '%s' --hash", self);
    FILE *p = popen(cmd, "r");
    unsigned long long child = 0;
    CHECK(p && fscanf(p, "%llx", &child) == 1);
    if (p) pclose(p);
    unsigned long long mine = (unsigned long long)outputs_hash();
    CHECK_MSG(child == mine, "portable loops %016llx, this CPU's kernel %016llx", child, mine);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--hash")) {
        printf("%016llx\n", (unsigned long long)outputs_hash());
        return 0;
    }
    TEST_RUN(test_reference);
    TEST_RUN(test_determinism);
    TEST_RUN(test_paths_agree);
    return TEST_DONE();
}
