/* parser.y: the SGL grammar (pure bison parser, prefix lang_yy).
 *
 * Actions are one-line builder calls (ast.c). Statements end with SEP: an
 * explicit ';' or a newline that lang_lex (below) keeps because the line
 * could end there (Go's rule: after an identifier, literal, ')', ']', '}',
 * break, continue or return). lang_lex also inserts a SEP before a '}' that
 * closes a block and at end of file, and drops a newline in front of
 * `else`/`elif`, so `}\nelse {` works.
 *
 * Syntax errors are reported by yyreport_syntax_error in Lua's style
 * ("expected ')' to close '(' at line 3"); statement-level `error` rules
 * resynchronise at the next separator or '}' so one run reports several.
 * AST nodes live in the program arena, so no %destructor is needed.
 */
%define api.pure full
%define api.prefix {lang_yy}
%define api.location.type {lang_loc}
%define parse.error custom
%locations
%expect 0
%param {lang_parser *P}

%code requires {
#include "lang/lang_int.h"
}

%code provides {
int lang_lex(LANG_YYSTYPE *lval, lang_loc *lloc, lang_parser *P);
int lang_lex_init(lang_parser *p);
void lang_lex_free(lang_parser *p);
int lang_yylex(LANG_YYSTYPE *lval, lang_loc *lloc, void *scanner);
}

%code top {
#include <assert.h>
#include <string.h>
}

%code {
#define lang_yylex(lval, lloc, P) lang_lex(lval, lloc, P)
#define YYLLOC_DEFAULT(Cur, Rhs, N)                                                \
    do {                                                                           \
        if (N) {                                                                   \
            (Cur).start = YYRHSLOC(Rhs, 1).start;                                  \
            (Cur).end = YYRHSLOC(Rhs, N).end;                                      \
        } else {                                                                   \
            (Cur).start = (Cur).end = YYRHSLOC(Rhs, 0).end;                        \
        }                                                                          \
    } while (0)
static void lang_yyerror(lang_loc *l, lang_parser *P, const char *msg);
}

%union {
    sgl_node *node;
    sgl_node_list list;
    const char *str;
    sgl_op op;
}

%token END 0           "end of file"
%token NEWLINE         "raw newline"
%token SEP             "newline or ';'"
%token <str> IDENT     "name"
%token <str> ANNOT     "annotation"
%token <node> INT      "integer"
%token <node> FLOAT    "float"
%token <node> STRING   "string"
%token FSTR_BEGIN      "f-string"
%token <node> FSTR_TEXT "f-string text"
%token FSTR_OPEN       "'{' in an f-string"
%token FSTR_CLOSE      "'}' ending an f-string expression"
%token FSTR_END        "end of the f-string"
%token <str> FSTR_CONV "conversion (!r, !s, !a)"
%token <node> FSTR_SPEC "format spec"
%token BLOCK_OPEN      "'{'"
%token MAP_OPEN        "'{' starting a map"
%token FN "'fn'" LET "'let'" CONST "'const'" IF "'if'" ELIF "'elif'" ELSE "'else'"
%token FOR "'for'" IN "'in'" WHILE "'while'" BREAK "'break'" CONTINUE "'continue'"
%token RETURN "'return'" IMPORT "'import'" MAIN "'main'" WITH "'with'" ASSERT "'assert'"
%token TRUE "'true'" FALSE "'false'" NONE "'none'" AND "'and'" OR "'or'" NOT "'not'"
%token ADD_EQ "'+='" SUB_EQ "'-='" MUL_EQ "'*='" DIV_EQ "'/='"
%token EQ "'=='" NE "'!='" LE "'<='" GE "'>='"

%left OR
%left AND
%right NOT
%nonassoc EQ NE '<' LE '>' GE IN
%left '+' '-'
%left '*' '/' '%'
%precedence NEG

%type <node> item block stmt else_part expr postfix primary fstring arg pair opt_expr fspec comp_if
%type <str> fconv
%type <list> annots params param_list stmts args arg_list exprs expr_list pairs pair_list fparts
%type <op> assign_op

%%

program:
    %empty
  | program item SEP            { if ($2) ast_list_push(P, &P->module->module.items, $2); }
  | program SEP
  | program error SEP           { yyerrok; }
  ;

item:
    annots FN IDENT '(' params ')' block  {
        /* without annotations the item starts at `fn`, not where the
         * empty annots rule placed it (the end of the previous token) */
        lang_loc at = @$;
        if ($1.len == 0) at.start = @2.start;
        $$ = ast_fn(P, at, $1, $3, @3, $5, $7);
    }
  | CONST IDENT '=' expr                  { $$ = ast_const(P, @$, $2, @2, $4); }
  | IMPORT STRING                         { $$ = ast_import(P, @$, $2); }
  | MAIN block                            { $$ = ast_main(P, @$, $2); }
  ;

annots:
    %empty                      { $$ = (sgl_node_list){0}; }
  | annots ANNOT                { $$ = $1; ast_list_push(P, &$$, ast_annot(P, @2, $2)); }
  ;

params:
    %empty                      { $$ = (sgl_node_list){0}; }
  | param_list
  | param_list ','
  ;

param_list:
    IDENT                       { $$ = ast_list1(P, ast_param(P, @1, $1)); }
  | param_list ',' IDENT        { $$ = $1; ast_list_push(P, &$$, ast_param(P, @3, $3)); }
  ;

block:
    BLOCK_OPEN stmts '}'        { $$ = ast_block(P, @$, $2); }
  ;

stmts:
    %empty                      { $$ = (sgl_node_list){0}; }
  | stmts stmt SEP              { $$ = $1; if ($2) ast_list_push(P, &$$, $2); }
  | stmts SEP
  | stmts error SEP             { $$ = $1; yyerrok; }
  ;

stmt:
    LET IDENT '=' expr          { $$ = ast_let(P, @$, $2, @2, $4); }
  | expr assign_op expr         { $$ = ast_assign(P, @$, $2, $1, $3); }
  | expr                        { $$ = ast_expr_stmt(P, @$, $1); }
  | IF expr block else_part     { $$ = ast_if(P, @$, $2, $3, $4); }
  | FOR IDENT IN expr block     { $$ = ast_for(P, @$, $2, @2, $4, $5); }
  | WHILE expr block            { $$ = ast_while(P, @$, $2, $3); }
  | BREAK                       { $$ = ast_jump(P, @$, SGL_AST_BREAK); }
  | CONTINUE                    { $$ = ast_jump(P, @$, SGL_AST_CONTINUE); }
  | RETURN                      { $$ = ast_return(P, @$, NULL); }
  | RETURN expr                 { $$ = ast_return(P, @$, $2); }
  | ASSERT expr                 { $$ = ast_assert(P, @$, $2, NULL); }
  | ASSERT expr ',' expr        { $$ = ast_assert(P, @$, $2, $4); }
  | WITH expr block             { $$ = ast_with(P, @$, $2, $3); }
  ;

assign_op:
    '='                         { $$ = SGL_OP_NONE; }
  | ADD_EQ                      { $$ = SGL_OP_ADD; }
  | SUB_EQ                      { $$ = SGL_OP_SUB; }
  | MUL_EQ                      { $$ = SGL_OP_MUL; }
  | DIV_EQ                      { $$ = SGL_OP_DIV; }
  ;

else_part:
    %empty                      { $$ = NULL; }
  | ELSE block                  { $$ = $2; }
  | ELIF expr block else_part   { $$ = ast_if(P, @$, $2, $3, $4); $$->if_.is_elif = true; }
  ;

expr:
    postfix
  | expr OR expr                { $$ = ast_binary(P, @$, SGL_OP_OR, $1, $3); }
  | expr AND expr               { $$ = ast_binary(P, @$, SGL_OP_AND, $1, $3); }
  | NOT expr                    { $$ = ast_unary(P, @$, SGL_OP_NOT, $2); }
  | expr EQ expr                { $$ = ast_binary(P, @$, SGL_OP_EQ, $1, $3); }
  | expr NE expr                { $$ = ast_binary(P, @$, SGL_OP_NE, $1, $3); }
  | expr '<' expr               { $$ = ast_binary(P, @$, SGL_OP_LT, $1, $3); }
  | expr LE expr                { $$ = ast_binary(P, @$, SGL_OP_LE, $1, $3); }
  | expr '>' expr               { $$ = ast_binary(P, @$, SGL_OP_GT, $1, $3); }
  | expr GE expr                { $$ = ast_binary(P, @$, SGL_OP_GE, $1, $3); }
  | expr IN expr                { $$ = ast_binary(P, @$, SGL_OP_IN, $1, $3); }
  | expr NOT IN expr %prec IN   { $$ = ast_binary(P, @$, SGL_OP_NOT_IN, $1, $4); }
  | expr '+' expr               { $$ = ast_binary(P, @$, SGL_OP_ADD, $1, $3); }
  | expr '-' expr               { $$ = ast_binary(P, @$, SGL_OP_SUB, $1, $3); }
  | expr '*' expr               { $$ = ast_binary(P, @$, SGL_OP_MUL, $1, $3); }
  | expr '/' expr               { $$ = ast_binary(P, @$, SGL_OP_DIV, $1, $3); }
  | expr '%' expr               { $$ = ast_binary(P, @$, SGL_OP_MOD, $1, $3); }
  | '-' expr %prec NEG          { $$ = ast_unary(P, @$, SGL_OP_NEG, $2); }
  ;

postfix:
    primary
  | postfix '[' expr ']'        { $$ = ast_index(P, @$, $1, $3); }
  | postfix '[' opt_expr ':' opt_expr ']' { $$ = ast_slice(P, @$, $1, $3, $5); }
  | postfix '(' args ')'        { $$ = ast_call(P, @$, $1, $3); }
  ;

primary:
    IDENT                       { $$ = ast_name(P, @$, $1); }
  | INT
  | FLOAT
  | STRING
  | fstring
  | TRUE                        { $$ = ast_literal(P, @$, SGL_AST_BOOL, true); }
  | FALSE                       { $$ = ast_literal(P, @$, SGL_AST_BOOL, false); }
  | NONE                        { $$ = ast_literal(P, @$, SGL_AST_NONE, false); }
  | '(' expr ')'                { $$ = $2; }
  | '[' exprs ']'               { $$ = ast_list(P, @$, SGL_AST_LIST, $2); }
  | '[' expr FOR IDENT IN expr comp_if ']'
                                { $$ = ast_comp(P, @$, NULL, $2, $4, @4, $6, $7); }
  | MAP_OPEN pairs '}'          { $$ = ast_list(P, @$, SGL_AST_MAP, $2); }
  | MAP_OPEN expr ':' expr FOR IDENT IN expr comp_if '}'
                                { $$ = ast_comp(P, @$, $2, $4, $6, @6, $8, $9); }
  | '(' error ')'               { $$ = ast_error(P, @$); }
  ;

fstring:
    FSTR_BEGIN fparts FSTR_END  { $$ = ast_fstring(P, @$, $2); }
  ;

fparts:
    %empty                      { $$ = (sgl_node_list){0}; }
  | fparts FSTR_TEXT            { $$ = $1; ast_list_push(P, &$$, $2); }
  | fparts FSTR_OPEN expr fconv fspec FSTR_CLOSE
                                { $$ = $1; ast_list_push(P, &$$, ast_fmt(P, @3, $3, $4, $5)); }
  ;

fconv:
    %empty                      { $$ = NULL; }
  | FSTR_CONV
  ;

fspec:
    %empty                      { $$ = NULL; }
  | FSTR_SPEC
  ;

opt_expr:
    %empty                      { $$ = NULL; }
  | expr
  ;

comp_if:
    %empty                      { $$ = NULL; }
  | IF expr                     { $$ = $2; }
  ;

args:
    %empty                      { $$ = (sgl_node_list){0}; }
  | arg_list
  | arg_list ','
  ;

arg_list:
    arg                         { $$ = ast_list1(P, $1); }
  | arg_list ',' arg            { $$ = $1; ast_list_push(P, &$$, $3); }
  ;

arg:
    expr
  | IDENT '=' expr              { $$ = ast_kwarg(P, @$, $1, @1, $3); }
  ;

exprs:
    %empty                      { $$ = (sgl_node_list){0}; }
  | expr_list
  | expr_list ','
  ;

expr_list:
    expr                        { $$ = ast_list1(P, $1); }
  | expr_list ',' expr          { $$ = $1; ast_list_push(P, &$$, $3); }
  ;

pairs:
    %empty                      { $$ = (sgl_node_list){0}; }
  | pair_list
  | pair_list ','
  ;

pair_list:
    pair                        { $$ = ast_list1(P, $1); }
  | pair_list ',' pair          { $$ = $1; ast_list_push(P, &$$, $3); }
  ;

pair:
    expr ':' expr               { $$ = ast_pair(P, @$, $1, $3); }
  ;

%%

static_assert(sizeof(LANG_YYSTYPE) <= sizeof(((lang_parser *)0)->q_val_buf), "q_val_buf too small");

/* Tokens after which a newline ends the statement. */
static bool lex_can_end(int t) {
    switch (t) {
    case IDENT: case INT: case FLOAT: case STRING: case FSTR_END: case TRUE: case FALSE:
    case NONE: case BREAK: case CONTINUE: case RETURN: case ')': case ']': case '}':
        return true;
    default:
        return false;
    }
}

int lang_lex(LANG_YYSTYPE *lval, lang_loc *lloc, lang_parser *P) {
    if (P->queued) {
        P->queued = false;
        memcpy(lval, P->q_val_buf, sizeof *lval);
        *lloc = P->q_loc;
        P->prev_tok = P->last_tok;
        P->last_tok = P->q_tok;
        return P->q_tok;
    }
    for (;;) {
        P->closed_block = false;
        P->has_unclosed = false;
        P->stray_closer = false;
        int t = (lang_yylex)(lval, lloc, P->scanner); /* the flex scanner, not the macro */
        if (t == END) { /* at the end of the last line, not on a line of its own */
            uint32_t e = P->len > 0 && P->src[P->len - 1] == '\n' ? P->len - 1 : P->len;
            *lloc = (lang_loc){e, e};
        }
        if (t == NEWLINE) {
            if (!P->pending_nl && lex_can_end(P->last_tok)) {
                P->pending_nl = true;
                P->nl_loc = *lloc;
            }
            continue;
        }
        bool sep = false;
        lang_loc sep_loc = {lloc->start, lloc->start};
        if (P->pending_nl) {
            P->pending_nl = false;
            sep_loc = P->nl_loc;
            sep = t != ELSE && t != ELIF;
        } else if (t == END && lex_can_end(P->last_tok)) {
            sep = true;
        } else if (t == '}' && P->closed_block && P->last_tok != SEP && P->last_tok != BLOCK_OPEN) {
            /* Even after an operator: the statement must end before its block
             * does, and a separator here keeps error recovery inside the block. */
            sep = true;
        }
        if (sep) {
            P->queued = true;
            P->q_tok = t;
            P->q_loc = *lloc;
            memcpy(P->q_val_buf, lval, sizeof *lval);
            *lloc = sep_loc;
            P->prev_tok = P->last_tok;
            P->last_tok = SEP;
            return SEP;
        }
        P->prev_tok = P->last_tok;
        P->last_tok = t;
        return t;
    }
}

static void lang_yyerror(lang_loc *l, lang_parser *P, const char *msg) {
    lang_error(P, *l, "%s", msg);
}

/* Describes the token at l for "found X" (its text, or a class name). */
static void describe_token(lang_parser *P, yysymbol_kind_t sym, lang_loc l, char *buf, size_t n) {
    if (sym == YYSYMBOL_YYEOF) {
        snprintf(buf, n, "end of file");
    } else if (sym == YYSYMBOL_SEP) {
        if (l.start >= P->len)
            snprintf(buf, n, "end of file");
        else if (P->src[l.start] == ';')
            snprintf(buf, n, "';'");
        else if (P->src[l.start] == '}') /* the separator inserted before a block's '}' */
            snprintf(buf, n, "'}'");
        else
            snprintf(buf, n, "end of line");
    } else if (sym == YYSYMBOL_STRING || sym == YYSYMBOL_FSTR_TEXT) {
        snprintf(buf, n, "a string");
    } else if (sym == YYSYMBOL_FSTR_BEGIN) {
        snprintf(buf, n, "an f-string");
    } else if (sym == YYSYMBOL_FSTR_END) {
        snprintf(buf, n, "the end of the f-string");
    } else {
        uint32_t len = l.end > l.start ? l.end - l.start : 0;
        if (len > 30) len = 30;
        if (len == 0 || l.start >= P->len) {
            snprintf(buf, n, "%s", yysymbol_name(sym));
        } else {
            snprintf(buf, n, "'%.*s'", (int)len, P->src + l.start);
        }
    }
}

static const char *closer_of(char kind) {
    switch (kind) {
    case '(': return "')'";
    case '[': return "']'";
    default: return "'}'";
    }
}

static const char *opener_name(char kind) {
    switch (kind) {
    case '(': return "'('";
    case '[': return "'['";
    case 'i': return "'{' of the f-string expression";
    default: return "'{'";
    }
}

static bool expects_closer(yysymbol_kind_t *exp, int n, char kind) {
    for (int i = 0; i < n; i++) {
        yysymbol_kind_t s = exp[i];
        if ((kind == '(' && s == YYTRANSLATE(')')) || (kind == '[' && s == YYTRANSLATE(']')) ||
            ((kind == 'b' || kind == 'm') && s == YYTRANSLATE('}')) ||
            (kind == 'i' && s == YYSYMBOL_FSTR_CLOSE))
            return true;
    }
    return false;
}

static bool expects(yysymbol_kind_t *exp, int n, yysymbol_kind_t s) {
    for (int i = 0; i < n; i++)
        if (exp[i] == s) return true;
    return false;
}

static int yyreport_syntax_error(const yypcontext_t *ctx, lang_parser *P) {
    P->n_syntax_errors++;
    yysymbol_kind_t tok = yypcontext_token(ctx);
    lang_loc l = *yypcontext_location(ctx);
    char found[64];
    describe_token(P, tok, l, found, sizeof found);
    yysymbol_kind_t exp[YYNTOKENS];
    int n = yypcontext_expected_tokens(ctx, exp, YYNTOKENS);
    if (n < 0) n = 0;

    /* The innermost open bracket, or the one the current closer skipped. */
    bool have_open = false;
    lang_bracket open = {0, 0};
    if (P->has_unclosed) {
        open = P->unclosed;
        have_open = true;
    } else if (P->depth > 0) {
        /* The lookahead may itself be an opener (already pushed): look below it. */
        int i = P->depth - 1;
        if ((tok == YYTRANSLATE('(') || tok == YYTRANSLATE('[') || tok == YYSYMBOL_BLOCK_OPEN ||
             tok == YYSYMBOL_MAP_OPEN || tok == YYSYMBOL_FSTR_OPEN) &&
            P->brackets[i].start == l.start)
            i--;
        if (i >= 0) {
            open = P->brackets[i];
            have_open = true;
        }
    }
    sgl_diag *d;
    if (P->stray_closer && (tok == YYTRANSLATE(')') || tok == YYTRANSLATE(']') || tok == YYTRANSLATE('}'))) {
        d = lang_error(P, l, "unmatched %s", found);
    } else if ((tok == YYSYMBOL_EQ || tok == YYSYMBOL_NE || tok == YYTRANSLATE('<') || tok == YYSYMBOL_LE ||
                tok == YYTRANSLATE('>') || tok == YYSYMBOL_GE || tok == YYSYMBOL_IN) &&
               lex_can_end(P->prev_tok)) {
        d = lang_error(P, l, "comparisons do not chain: write (a < b) and (b < c) instead of a < b < c");
    } else if (tok == YYSYMBOL_IF && P->prev_tok == ELSE) {
        d = lang_error(P, l, "write 'elif' instead of 'else if'");
    } else if (tok == YYSYMBOL_FN && P->depth > 0) {
        d = lang_error(P, l, "unexpected 'fn' (functions are defined at top level only)");
    } else if (P->depth == 0 && !have_open && expects(exp, n, YYSYMBOL_FN) &&
               (tok == YYSYMBOL_LET || tok == YYSYMBOL_IDENT || tok == YYSYMBOL_IF || tok == YYSYMBOL_FOR ||
                tok == YYSYMBOL_WHILE || tok == YYSYMBOL_RETURN || tok == YYSYMBOL_WITH ||
                tok == YYSYMBOL_ASSERT || tok == YYSYMBOL_BREAK || tok == YYSYMBOL_CONTINUE)) {
        d = lang_error(P, l, "unexpected %s at top level (statements belong inside a fn or the main block)", found);
    } else if (have_open && ((expects_closer(exp, n, open.kind) &&
                              (n <= 2 || tok == YYSYMBOL_YYEOF || tok == YYSYMBOL_SEP || tok == YYTRANSLATE(')') ||
                               tok == YYTRANSLATE(']') || tok == YYTRANSLATE('}') || open.kind == '(' ||
                               open.kind == '[')) ||
                             P->has_unclosed)) {
        uint32_t line, col;
        sgl_source_line_col(&P->prog->files[P->file], open.start, &line, &col);
        d = lang_error(P, l, "expected %s to close %s at line %u, found %s", closer_of(open.kind),
                       opener_name(open.kind), line, found);
    } else if (n == 1) {
        d = lang_error(P, l, "expected %s, found %s", yysymbol_name(exp[0]), found);
    } else if (n == 2) {
        d = lang_error(P, l, "expected %s or %s, found %s", yysymbol_name(exp[0]), yysymbol_name(exp[1]),
                       found);
    } else {
        d = lang_error(P, l, "unexpected %s", found);
    }
    (void)d;
    return 0;
}

int lang_parse(lang_parser *P) {
    if (lang_lex_init(P)) return -1;
    int rc = lang_yyparse(P);
    lang_lex_free(P);
    return rc == 0 && P->n_syntax_errors == 0 ? 0 : -1;
}
