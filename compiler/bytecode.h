/* bytecode.h: the SGVM module format: what the compiler produces and the VM
 * executes. A module is a constants pool, call sites (gen/select/builtin
 * keyword arguments), functions (code, line table, prefix hint) and the
 * source file table. Everything a module points to is owned by the module
 * and freed by compiler_module_free (compiler/compiler.h); the VM only reads
 * it, so one module may be shared by any number of fibers and threads.
 *
 * Instructions are 32-bit words, little end first in memory as uint32_t:
 *
 *    31                      8 7        0
 *   +-------------------------+----------+
 *   |            A (24)       |  op (8)  |   iA  : A unsigned, 0 .. 2^24-1
 *   +------------+------------+----------+
 *   |   B (12)   |   A (12)   |  op (8)  |   iAB : A, B unsigned, 0 .. 4095
 *   +------------+------------+----------+
 *   |          sJ (24)        |  op (8)  |   isJ : signed jump, pc += sJ
 *   +-------------------------+----------+        (relative to the NEXT pc)
 *
 * The machine is a stack machine with one frame per call: n_locals slots
 * (parameters first, in order, then let/for variables, then compiler
 * temporaries), and an operand stack of at most max_stack values. The
 * opcodes (enum sgl_opcode: SGL_BC_LOAD_CONST, ...), their operand formats
 * and stack effects are in opcodes.def.
 *
 * Parking: only ops flagged SGL_OPF_PARK may suspend a fiber. They are
 * INDEX (when the object is a stream: reading a variable waits for its
 * generation), READ_VAR and META (wait while the variable is pending),
 * SELECT (scoring), JOIN (waits for the branches), FORK (may prefill first),
 * CALL_BUILTIN / CALL_BUILTIN_KW (only run_batch and text() wait), and CALL /
 * CALL_FRESH / CALL_VALUE (when the callee parks). GEN never parks: it
 * appends a placeholder and submits the request; reading the result later is
 * what waits.
 */
#ifndef SGL_COMPILER_BYTECODE_H
#define SGL_COMPILER_BYTECODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- instructions -------------------------------------------------------- */

/* Operand formats (opcodes.def second column). */
typedef enum sgl_op_format {
    SGL_FMT_N,  /* no operand */
    SGL_FMT_A,  /* A: 24 bits unsigned */
    SGL_FMT_AB, /* A: 12 bits, B: 12 bits, unsigned */
    SGL_FMT_J,  /* sJ: 24 bits signed */
} sgl_op_format;

/* Opcode flags (opcodes.def fifth column). */
enum {
    SGL_OPF_PARK = 1u << 0,   /* may park the fiber */
    SGL_OPF_STREAM = 1u << 1, /* extends the stream under its operands, leaves it */
    SGL_OPF_JUMP = 1u << 2,   /* operand is a relative jump */
    SGL_OPF_END = 1u << 3,    /* no fall-through */
};

typedef enum sgl_opcode {
#define OPCODE(name, fmt, pops, pushes, flags, doc) SGL_BC_##name,
#include "compiler/opcodes.def"
#undef OPCODE
    SGL_BC__COUNT
} sgl_opcode;

typedef uint32_t sgl_instr;

#define SGL_INSTR_OP(i) ((sgl_opcode)((i) & 0xffu))
#define SGL_INSTR_A(i) ((uint32_t)(i) >> 8)                    /* iA */
#define SGL_INSTR_A12(i) (((uint32_t)(i) >> 8) & 0xfffu)       /* iAB: A */
#define SGL_INSTR_B12(i) ((uint32_t)(i) >> 20)                 /* iAB: B */
#define SGL_INSTR_SJ(i) ((int32_t)(i) >> 8)                    /* isJ (arithmetic shift) */
#define SGL_INSTR_MAKE_A(op, a) ((sgl_instr)(op) | ((sgl_instr)(a) << 8))
#define SGL_INSTR_MAKE_AB(op, a, b) ((sgl_instr)(op) | ((sgl_instr)(a) << 8) | ((sgl_instr)(b) << 20))
#define SGL_INSTR_MAKE_SJ(op, sj) ((sgl_instr)(op) | ((sgl_instr)(uint32_t)(int32_t)(sj) << 8))
#define SGL_INSTR_A_MAX 0xffffffu
#define SGL_INSTR_A12_MAX 0xfffu
#define SGL_INSTR_SJ_MAX 0x7fffff

/* Static facts about an opcode (from opcodes.def). pops/pushes -1 = varies. */
typedef struct sgl_opcode_info {
    const char *name; /* "LOAD_CONST" */
    sgl_op_format format;
    int pops, pushes;
    unsigned flags; /* SGL_OPF_* */
    const char *doc;
} sgl_opcode_info;

/* Returns the info of op (static storage), or NULL if op is out of range. */
const sgl_opcode_info *sgl_opcode_get(sgl_opcode op);

/* Chat roles (ROLE_BEGIN / ROLE_END operand, prefix hint items). */
typedef enum sgl_role {
    SGL_ROLE_SYSTEM,
    SGL_ROLE_USER,
    SGL_ROLE_ASSISTANT,
    SGL_ROLE__COUNT
} sgl_role;
/* Returns "system", "user", "assistant", or "?". */
const char *sgl_role_name(sgl_role r);

/* APPEND operand A. */
enum {
    SGL_APPEND_VALUE = 0, /* `s += v`: strings as they are, other values as str(v) */
    SGL_APPEND_STR = 1,   /* a piece of `s += a + b + ...`: must be a string */
    SGL_APPEND_FMT = 2,   /* a piece of an f-string: formatted as FORMAT does */
    SGL_APPEND_IMAGE = 3, /* image(path): the image file at path is part of the prompt */
    SGL_APPEND_VAR_BEGIN = 4, /* with var_scope(s, name): the value is the name; text from here on */
    SGL_APPEND_VAR_END = 5,   /* ... becomes variable name here */
};

/* JOIN operand A. */
enum {
    SGL_JOIN_GATHER = 0,  /* branch variables become lists on the parent */
    SGL_JOIN_CONCAT = 1,  /* branch texts are appended to the parent in order */
    SGL_JOIN_DYNAMIC = 2, /* the mode string is on the stack */
};

/* ---- constants ----------------------------------------------------------- */

typedef enum sgl_const_kind {
    SGL_CONST_NONE,
    SGL_CONST_BOOL,
    SGL_CONST_INT,
    SGL_CONST_FLOAT,
    SGL_CONST_STRING,
    SGL_CONST_LIST, /* items: constant indices */
    SGL_CONST_MAP,  /* items: 2*n constant indices, key0 value0 key1 value1 ... (keys are strings) */
} sgl_const_kind;

/* A constant. Nested list/map constants refer to earlier pool entries by
 * index (an entry only refers to entries with smaller indices). Strings may
 * hold NUL bytes: use len. */
typedef struct sgl_const {
    sgl_const_kind kind;
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            const char *bytes; /* NUL-terminated as well */
            uint32_t len;
        } str;
        struct {
            const uint32_t *items;
            uint32_t n; /* LIST: items; MAP: pairs (items has 2*n entries) */
        } agg;
    };
} sgl_const;

/* ---- call sites ----------------------------------------------------------- */

/* Keyword argument of a call site: its id (lang/kwargs.def) and either a
 * constant or "dynamic" (the value is on the stack, see sgl_bc_site). */
typedef struct sgl_bc_kwarg {
    uint32_t id;    /* sgl_kwarg_id */
    int32_t konst;  /* constant index, or SGL_SITE_DYNAMIC */
} sgl_bc_kwarg;

#define SGL_SITE_DYNAMIC (-1)  /* value is on the stack */
#define SGL_SITE_NO_NAME (-2)  /* gen() without a variable name */

/* A call site of GEN, SELECT or CALL_BUILTIN_KW. Stack layout at the op,
 * bottom to top: [stream (GEN/SELECT)] [name if name == SGL_SITE_DYNAMIC]
 * [n_pos positional values (CALL_BUILTIN_KW)] [the value of every kwarg
 * whose konst is SGL_SITE_DYNAMIC, in kwargs order].
 * select's choices always appear as the CHOICES kwarg (positional choices
 * are moved there). */
typedef struct sgl_bc_site {
    uint32_t builtin;     /* sgl_builtin: GEN, SELECT, RUN_BATCH, JOIN, ... */
    int32_t name;         /* GEN/SELECT: constant index of the variable name,
                             SGL_SITE_DYNAMIC or SGL_SITE_NO_NAME; else -2 */
    uint32_t n_pos;       /* CALL_BUILTIN_KW: positional args on the stack */
    uint32_t n_kwargs;
    const sgl_bc_kwarg *kwargs;
    uint32_t file, line, col; /* where the call is (for messages) */
} sgl_bc_site;

/* ---- functions ------------------------------------------------------------ */

/* Line table entry: instructions from pc up to the next entry's pc come from
 * file:line:col (1-based). Entries are sorted by pc; the first has pc 0. */
typedef struct sgl_bc_line {
    uint32_t pc;
    uint32_t file; /* index into sgl_module.files */
    uint32_t line, col;
} sgl_bc_line;

/* Prefix hint: the function's longest argument-independent prefix of stream
 * appends, as the VM replays it onto an empty stream to compute (and cache)
 * that prefix once, e.g. before a batch or before a fork's branches. */
typedef enum sgl_prefix_kind {
    SGL_PREFIX_TEXT,       /* append constant string `konst` */
    SGL_PREFIX_ROLE_BEGIN, /* open `role` */
    SGL_PREFIX_ROLE_END,   /* close `role` */
} sgl_prefix_kind;

typedef struct sgl_bc_prefix_item {
    uint8_t kind; /* sgl_prefix_kind */
    uint8_t role; /* sgl_role, for ROLE_* */
    uint32_t konst; /* TEXT: constant index of a string */
} sgl_bc_prefix_item;

enum {
    SGL_FNF_STREAM = 1u << 0,  /* the first parameter is the stream the fn extends */
    SGL_FNF_MAIN = 1u << 1,    /* the program's main block (no parameters) */
    SGL_FNF_REORDER = 1u << 2, /* @reorder: appends may have been reordered */
};

typedef struct sgl_bc_function {
    const char *name;          /* "answer"; "main" for the main block */
    uint32_t module;           /* index of the defining module in the program */
    uint32_t n_params;
    const char *const *param_names; /* n_params names (run_batch maps keys to them) */
    uint32_t n_locals;         /* >= n_params: frame size including temporaries */
    uint32_t max_stack;        /* operand stack high-water mark */
    uint32_t flags;            /* SGL_FNF_* */
    const sgl_instr *code;
    uint32_t n_code;           /* the last instruction is always RETURN */
    const sgl_bc_line *lines;
    uint32_t n_lines;
    /* Prefix hint (empty when n_prefix == 0). prefix_text is the plain text
     * of the TEXT items concatenated (roles not rendered), for display. */
    const sgl_bc_prefix_item *prefix;
    uint32_t n_prefix;
    const char *prefix_text;
    uint32_t prefix_len;
    uint32_t file, line;       /* where the fn is declared */
} sgl_bc_function;

/* ---- module --------------------------------------------------------------- */

typedef struct sgl_module {
    const sgl_const *consts;
    uint32_t n_consts;
    const sgl_bc_site *sites;
    uint32_t n_sites;
    const sgl_bc_function *fns; /* every fn of every loaded module, then main */
    uint32_t n_fns;
    int32_t entry;              /* index of main in fns, or -1 when there is none */
    const char *const *files;   /* source file display paths (sgl_program.files order) */
    uint32_t n_files;
    int opt_level;              /* what it was compiled with */
    void *priv;                 /* the compiler's storage; do not touch */
} sgl_module;

/* Returns the index of the function named name (first match), or -1. */
int sgl_module_find_fn(const sgl_module *m, const char *name);
/* Finds the line entry for pc in f (NULL if f has no line table). */
const sgl_bc_line *sgl_bc_line_at(const sgl_bc_function *f, uint32_t pc);

#endif
