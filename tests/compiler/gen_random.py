#!/usr/bin/env python3
"""gen_random.py: random differential testing of the optimizer.

Writes N random SGL programs (seeded, so a failure can be replayed) that
mix constants, arithmetic, strings, f-strings, lists, maps, ifs, loops,
helper functions and stream appends, then checks with run_same.py's rule:
each prints the same at -O0, -O1 and -O2 on the fake engine.

usage: gen_random.py SGLC [N] [SEED]   (defaults: 200 programs, seed 1)
The golden suite runs 40 programs (seed 1); run it by hand with more (and
other seeds) after changing a pass. Prints "N passed, N failed" and keeps failing programs in
/tmp/sgl_random_fail_*.sgl.
"""
import os
import random
import subprocess
import sys
import tempfile


class Gen:
    def __init__(self, rng):
        self.r = rng
        self.vars = []

    def lit(self):
        c = self.r.randrange(6)
        if c == 0:
            return str(self.r.randrange(-20, 20))
        if c == 1:
            return self.r.choice(['"a"', '"bc"', '""', '"x y"', '"é"'])
        if c == 2:
            return self.r.choice(["true", "false", "none"])
        if c == 3:
            return self.r.choice(["1.5", "0.25", "2.0"])
        if c == 4:
            return "[" + ", ".join(str(self.r.randrange(5)) for _ in range(self.r.randrange(4))) + "]"
        return '{"k": %d, "j": "v"}' % self.r.randrange(9)

    def num(self, d=0):
        c = self.r.randrange(5 if d < 3 else 2)
        if c == 0 or not self.vars:
            return str(self.r.randrange(-9, 10))
        if c == 1:
            return self.r.choice(["K", "n"] + [v for v in self.vars if v.startswith("i")] or ["K"])
        if c == 2:
            return f"({self.num(d + 1)} {self.r.choice(['+', '-', '*', '/', '%'])} {self.num(d + 1)})"
        if c == 3:
            return f"len({self.r.choice(['L', 'S', 'M'])})"
        return f"-{self.num(d + 1)}"

    def text(self, d=0):
        c = self.r.randrange(5 if d < 3 else 2)
        if c == 0:
            return self.r.choice(['"p"', '"q r"', 'S', '"\\n"'])
        if c == 1:
            return f'f"<{{{self.num()}}}>{{S}}"'
        if c == 2:
            return f"{self.text(d + 1)} + {self.text(d + 1)}"
        if c == 3:
            return f"str({self.num(d + 1)})"
        return f'helper({self.num(d + 1)})'

    def cond(self):
        c = self.r.randrange(4)
        if c == 0:
            return f"{self.num()} {self.r.choice(['<', '<=', '==', '!=', '>'])} {self.num()}"
        if c == 1:
            return f"{self.cond()} {self.r.choice(['and', 'or'])} {self.cond()}"
        if c == 2:
            return self.r.choice(["true", "false", "DEBUG", "not DEBUG"])
        return f"{self.num()} in L"

    def stmts(self, depth, stream):
        out = []
        for _ in range(self.r.randrange(1, 5)):
            c = self.r.randrange(7 if depth < 2 else 4)
            if c == 0:
                out.append(f"print({self.num()}, {self.text()}, {self.lit()})")
            elif c == 1 and stream:
                out.append(f"s += {self.text()}")
            elif c == 2:
                out.append(f"n = {self.num()}")
            elif c == 3 and stream:
                k = self.r.randrange(5)
                word = self.r.choice(["A", "B", "Answer: ", "Answer? "])
                if k == 0:
                    out.append(f's += "{word}"')
                elif k == 1:
                    out.append(f's += {self.r.choice(["user", "assistant", "system"])}("{word}" + {self.text()})')
                elif k == 2:
                    out.append(f's += "{word}" + gen("g{self.r.randrange(3)}", max_tokens={self.r.randrange(1, 4)})')
                elif k == 3 and depth < 2:
                    out.append(f"with {self.r.choice(['user', 'assistant'])}(s) {{\n" + self.stmts(depth + 1, stream) + "}")
                else:
                    out.append(f's += select("c", ["{word}", "x"])')
            elif c == 4:
                then = self.stmts(depth + 1, stream)
                els = self.stmts(depth + 1, stream)
                out.append(f"if {self.cond()} {{\n" + then + "} else {\n" + els + "}")
            elif c == 5:
                v = f"i{depth}"
                self.vars.append(v)
                body = self.stmts(depth + 1, stream)
                self.vars.pop()
                out.append(f"for {v} in range({self.r.randrange(4)}) {{\n" + body + "}")
            else:
                out.append(f"print({self.cond()})")
        return "".join(x + "\n" for x in out)

    def program(self):
        self.vars = ["n"]
        body = self.stmts(0, True)
        main = self.stmts(0, False)
        return (
            "const K = %d\nconst S = \"s%d\"\nconst L = [1, 2, 3]\nconst M = {\"a\": 1}\nconst DEBUG = %s\n"
            % (self.r.randrange(10), self.r.randrange(10), self.r.choice(["true", "false"]))
            + "fn helper(x) {\n if x > 3 { return \"big\" }\n return \"small\"\n}\n"
            + "fn build(s, n) {\n" + body + "}\n"
            + "main {\nlet n = 2\n" + main + "let st = build(3)\nprint(text(st))\n}\n"
        )


def run(sglc, level, path):
    p = subprocess.run([sglc, "run", f"-O{level}", "--fake", path], capture_output=True, timeout=60,
                       env=dict(os.environ, NO_COLOR="1"))
    return p.returncode, p.stdout, p.stderr


def main():
    sglc = os.path.abspath(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    rng = random.Random(seed)
    passed = failed = invalid = ran_ok = 0
    with tempfile.TemporaryDirectory() as td:
        for i in range(n):
            src = Gen(rng).program()
            path = os.path.join(td, f"p{i}.sgl")
            with open(path, "w") as fh:
                fh.write(src)
            chk = subprocess.run([sglc, "check", path], capture_output=True, timeout=60)
            if chk.returncode != 0:  # a generator bug: the test would prove nothing
                invalid += 1
                keep = f"/tmp/sgl_random_invalid_{seed}_{i}.sgl"
                with open(keep, "w") as fh:
                    fh.write(src)
                print(f"INVALID program {i} (kept as {keep}): {chk.stderr.decode()[:300]}")
                continue
            res = [run(sglc, lv, path) for lv in (0, 1, 2)]
            ran_ok += res[0][0] == 0
            if res[0] == res[1] == res[2]:
                passed += 1
            else:
                failed += 1
                keep = f"/tmp/sgl_random_fail_{seed}_{i}.sgl"
                with open(keep, "w") as fh:
                    fh.write(src)
                print(f"FAIL program {i} (kept as {keep})")
    print(f"gen_random: {ran_ok} of {passed + failed} valid programs ran to completion; {invalid} invalid")
    print(f"gen_random: {passed} passed, {failed + invalid} failed")
    return 1 if failed or invalid else 0


if __name__ == "__main__":
    sys.exit(main())
