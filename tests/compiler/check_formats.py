#!/usr/bin/env python3
"""check_formats.py: the machine-readable graph dumps are well formed.

For every .sgl in GROUP_DIR, at -O0 and -O1:
  --format json  parses as JSON and follows the schema in docs/compiler.md
                 (every input and chain names a node of the same function,
                 every region's nodes exist and name that region);
  --format dot   renders with Graphviz (`dot -Tsvg`), when dot is installed.

usage: check_formats.py SGLC GROUP_DIR
Prints "N passed, N failed"; exit status 1 if any check failed.
"""
import json
import os
import shutil
import subprocess
import sys


def check_json(doc):
    assert doc["schema"] == "sglc-graph-1", "schema tag"
    for fn in doc["functions"]:
        for key in ("name", "params", "slots", "stream", "reorder", "main", "opt_level", "prefix", "moves",
                    "regions", "nodes"):
            assert key in fn, f"function lacks '{key}'"
        ids = {n["id"]: n for n in fn["nodes"]}
        for n in fn["nodes"]:
            for key in ("id", "op", "region", "kind", "inputs", "chain", "line", "col"):
                assert key in n, f"node lacks '{key}'"
            for i in n["inputs"]:
                assert i in ids, f"node {n['id']} input {i} is not a node"
            assert n["chain"] is None or n["chain"] in ids, f"node {n['id']} chain"
            assert n["kind"] in ("value", "effect", "stream", "region")
        for r in fn["regions"]:
            for i in r["nodes"]:
                assert i in ids and ids[i]["region"] == r["id"], f"region {r['id']} lists node {i}"
        for p in fn["prefix"]:
            assert p["kind"] in ("text", "role_begin", "role_end")


def main():
    sglc = os.path.abspath(sys.argv[1])
    group = sys.argv[2]
    dot = shutil.which("dot")
    passed = failed = 0
    for name in sorted(f for f in os.listdir(group) if f.endswith(".sgl")):
        ok = True
        for level in ("-O0", "-O1"):
            base = [sglc, "dump", "--graph", level, "--verify", name]
            p = subprocess.run(base + ["--format", "json"], cwd=group, capture_output=True, timeout=60)
            try:
                assert p.returncode == 0, p.stderr.decode()
                check_json(json.loads(p.stdout))
            except (AssertionError, ValueError, KeyError) as e:
                print(f"FAIL {name} {level} json: {e}")
                ok = False
            if dot:
                p = subprocess.run(base + ["--format", "dot"], cwd=group, capture_output=True, timeout=60)
                r = subprocess.run([dot, "-Tsvg"], input=p.stdout, capture_output=True, timeout=60)
                if p.returncode or r.returncode or b"<svg" not in r.stdout:
                    print(f"FAIL {name} {level} dot: {r.stderr.decode()}")
                    ok = False
        passed += ok
        failed += not ok
    if not dot:
        print("note: Graphviz 'dot' not found; DOT rendering not checked")
    print(f"check_formats: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
