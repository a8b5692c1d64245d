#!/usr/bin/env python3
"""install_test.py: `meson install` into a DESTDIR, then use what was
installed as a user would, away from the checkout:

  * the installed sglc runs an example (fake engine) from a folder outside
    the source tree, and finds the model by itself: in the prefix's
    share/sglc/models (relative to the installed binary, since the DESTDIR
    tree is not at the configured prefix), and in $XDG_DATA_HOME/sglc/models
    before it; with $SGL_MODEL set to the tiny model it runs the example on
    the real engine;
  * no path of the source tree is compiled into the installed binaries, and
    no build-folder marker was installed;
  * the man page, the bash and zsh completions and the header are there;
  * embed.c, compiled against the installed libsglc through pkg-config (the
    shared library, then the static one), loads a program, runs functions
    with JSON arguments on the fake engine and the tiny model and prints
    the results as JSON, which are checked here.

Usage: install_test.py MESON BUILD_DIR SOURCE_DIR TINY_MODEL EXAMPLE.sgl EMBED.c SANITIZE
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

meson, build, src, tiny, example, embed_c, sanitize = sys.argv[1:8]
tiny = os.path.abspath(tiny)
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def run(cmd, env=None, cwd=None, check_rc=True):
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    if check_rc and r.returncode != 0:
        print("command failed:", " ".join(cmd), "rc", r.returncode)
        print(r.stdout[-3000:])
        print(r.stderr[-3000:])
        sys.exit(1)
    return r


tmp = tempfile.mkdtemp(prefix="sglc-install-")
try:
    dest = os.path.join(tmp, "dest")
    run([meson, "install", "-C", build, "--no-rebuild", "--quiet", "--destdir", dest])
    opts = {o["name"]: o["value"] for o in json.loads(
        run([meson, "introspect", build, "--buildoptions"]).stdout)}
    prefix = dest + opts["prefix"]
    bindir = os.path.join(prefix, opts["bindir"])
    libdir = os.path.join(prefix, opts["libdir"])
    datadir = os.path.join(prefix, opts["datadir"])
    sglc = os.path.join(bindir, "sglc")
    check(os.access(sglc, os.X_OK), "bin/sglc installed")

    # What else the install brings.
    for rel in ["include/sglc/sglc.h"]:
        check(os.path.isfile(os.path.join(prefix, rel)), rel + " installed")
    for path in [os.path.join(opts["mandir"], "man1", "sglc.1"),
                 os.path.join(opts["datadir"], "bash-completion", "completions", "sglc"),
                 os.path.join(opts["datadir"], "zsh", "site-functions", "_sglc"),
                 os.path.join(opts["datadir"], "sglc", "bench", "workloads", "mmlu.sgl")]:
        check(os.path.isfile(os.path.join(prefix, path)), path + " installed")
    for lib in ["libsglc.so", "libsglc.a", "pkgconfig/sglc.pc"]:
        check(os.path.exists(os.path.join(libdir, lib)), opts["libdir"] + "/" + lib + " installed")
    markers = [p for p in glob.glob(dest + "/**", recursive=True) if "uninstalled" in os.path.basename(p)]
    check(not markers, "no build-folder marker installed: %s" % markers)

    # No path of the source tree inside the installed binaries.
    for f in [sglc] + glob.glob(os.path.join(libdir, "libsglc.*")):
        if os.path.isfile(f) and not os.path.islink(f):
            data = open(f, "rb").read()
            for sub in ["models", "stdlib", "bench/workloads"]:
                needle = os.path.join(os.path.realpath(src), sub).encode()
                check(needle not in data, "%s holds the source path %s" % (os.path.basename(f), needle.decode()))

    # The installed binary, run from a folder outside the checkout with an
    # empty home: no model there, so it must say where it looked.
    work = os.path.join(tmp, "work")
    home = os.path.join(tmp, "home")
    os.makedirs(work)
    os.makedirs(home)
    shutil.copy(example, work)
    ex = os.path.basename(example)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "LANG": "C.UTF-8"}
    r = run([sglc, "run", ex, "--fake"], env=env, cwd=work)
    check("A:ok" in r.stdout, "installed sglc runs %s on the fake engine: %r" % (ex, r.stdout))
    r = run([sglc, "bench", "mmlu", "--fake", "--quick", "--modes", "full"], env=env, cwd=work)
    check("mmlu" in r.stdout and "full" in r.stdout,
          "installed sglc bench finds the installed workloads: %r" % r.stdout[-300:])
    r = run([sglc, "--version"], env=env, cwd=work)
    check(r.stdout.strip() != "", "sglc --version prints")
    r = run([sglc, "run", ex], env=env, cwd=work, check_rc=False)
    check(r.returncode == 2 and "no model found" in r.stderr and
          os.path.join(home, ".local/share/sglc/models") in r.stderr,
          "without a model: exit 2 naming the places searched: rc %d %r" % (r.returncode, r.stderr))
    check(os.path.realpath(src) + "/models" not in r.stderr, "installed sglc does not look in the source tree")

    model_name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    # The prefix's share/sglc/models, found relative to the moved binary.
    os.makedirs(os.path.join(datadir, "sglc", "models"))
    shutil.copy(tiny, os.path.join(datadir, "sglc", "models", model_name))
    r = run([sglc, "model-info", "--no-tensors"], env=env, cwd=work)
    check(os.path.join(datadir, "sglc", "models", model_name) in r.stdout,
          "model found in the DESTDIR prefix's share/sglc/models: %r" % r.stdout[:200])
    # $XDG_DATA_HOME/sglc/models comes first.
    xdg = os.path.join(tmp, "xdg")
    os.makedirs(os.path.join(xdg, "sglc", "models"))
    shutil.copy(tiny, os.path.join(xdg, "sglc", "models", model_name))
    r = run([sglc, "model-info", "--no-tensors"], env=dict(env, XDG_DATA_HOME=xdg), cwd=work)
    check(os.path.join(xdg, "sglc", "models", model_name) in r.stdout,
          "model found in $XDG_DATA_HOME/sglc/models first: %r" % r.stdout[:200])
    # $SGL_MODEL before both; the example on the real engine (tiny model).
    r = run([sglc, "run", ex, "--threads", "1", "--max-tokens", "4"],
            env=dict(env, SGL_MODEL=tiny, XDG_DATA_HOME=xdg), cwd=work)
    check("A:" in r.stdout and "generated" in r.stdout, "example on the tiny model: %r" % r.stdout)

    # A C program linked through pkg-config against the installed library.
    pcdir = os.path.join(libdir, "pkgconfig")
    pcenv = dict(os.environ, PKG_CONFIG_PATH=pcdir)
    # A relocatable sglc.pc (pkgconfig.relocatable, the project default)
    # finds the tree from its own place; one configured before that names
    # the configured prefix, which is pointed at the DESTDIR tree.
    pc = ["pkg-config"]
    if "${pcfiledir}" not in open(os.path.join(pcdir, "sglc.pc")).read():
        pc.append("--define-variable=prefix=" + prefix)
    cflags = run(pc + ["--cflags", "sglc"], env=pcenv).stdout.split()
    libs = run(pc + ["--libs", "sglc"], env=pcenv).stdout.split()
    static_libs = run(pc + ["--static", "--libs", "sglc"], env=pcenv).stdout.split()
    check(any(f.startswith("-I") and os.path.realpath(f[2:]).startswith(os.path.realpath(dest)) for f in cflags),
          "pkg-config --cflags points into the DESTDIR tree: %s" % cflags)
    cc = os.environ.get("CC", "cc").split()
    extra = ["-fsanitize=" + sanitize] if sanitize not in ("", "none") else []
    shared_exe = os.path.join(tmp, "embed-shared")
    static_exe = os.path.join(tmp, "embed-static")
    run(cc + ["-std=c11", "-Wall", "-Wextra", "-Werror", embed_c, "-o", shared_exe] + cflags + libs + extra)
    st = [("-Wl,-Bstatic -lsglc -Wl,-Bdynamic".split() if l == "-lsglc" else [l]) for l in static_libs]
    run(cc + ["-std=c11", "-Wall", "-Wextra", "-Werror", embed_c, "-o", static_exe] + cflags +
        [x for l in st for x in l] + extra)
    nd = run(["nm", "-D", "--defined-only", os.path.join(libdir, "libsglc.so")]).stdout.split("\n")
    exported = sorted(l.split()[-1] for l in nd if l.strip() and l.split()[1] in "TDBR")
    check(exported and all(s.startswith("sglc_") for s in exported),
          "libsglc.so exports only sglc_* symbols: %s" % [s for s in exported if not s.startswith("sglc_")][:10])

    def results(exe, engine, env_extra):
        r = run([exe, engine], env=dict(env, **env_extra), cwd=work, check_rc=False)
        check(r.returncode == 0, "%s %s exit 0 (got %d): %s" % (os.path.basename(exe), engine, r.returncode, r.stderr[-500:]))
        out = {}
        for line in r.stdout.splitlines():
            label, _, rest = line.partition(": ")
            out[label] = json.loads(rest)
        return out

    libenv = {"LD_LIBRARY_PATH": libdir}
    for exe, engine, env_extra in [(shared_exe, "fake", libenv), (static_exe, "fake", {}),
                                   (shared_exe, tiny, libenv)]:
        tag = "%s on %s" % (os.path.basename(exe), "fake" if engine == "fake" else "tiny")
        o = results(exe, engine, env_extra)
        check(o.get("engine") == ("fake" if engine == "fake" else "local"), tag + ": engine " + str(o.get("engine")))
        names = [f["name"] for f in o.get("functions", [])]
        check(names == ["greet", "ask", "boom", "main"], tag + ": functions " + str(names))
        g = o.get("greet", {})
        check(g.get("status") == "ok" and g.get("result") == "hello Ada x42", tag + ": greet " + str(g))
        a = o.get("ask", {})
        want_a = "ok" if engine == "fake" else None
        check(a.get("status") == "ok" and "a" in a.get("variables", {}) and a.get("completion_tokens", 0) > 0
              and (want_a is None or a["variables"]["a"] == want_a), tag + ": ask " + str(a))
        check(o.get("main", {}).get("output") == "hello main x2\n", tag + ": main " + str(o.get("main")))
        b = o.get("boom", {})
        e = o.get("error", {}).get("error", {})
        check(b.get("status") == "error" and e.get("kind") == "runtime" and e.get("line") == 8
              and e.get("file") == "embedded.sgl" and "out of range" in e.get("message", ""),
              tag + ": runtime error " + str(e))
        check(o.get("unknown-fn", {}).get("error", {}).get("kind") == "usage", tag + ": unknown function")
        c = o.get("compile", {}).get("error", {})
        check(c.get("kind") == "compile" and c.get("line") == 3 and c.get("col") == 11 and "'y'" in c.get("message", ""),
              tag + ": compile error " + str(c))
        levels = [d["level"] for d in o.get("diagnostics", [])]
        check(levels == ["error", "warning"], tag + ": diagnostics " + str(levels))
        gen = o.get("generate", {})
        check(gen.get("completion_tokens", 0) > 0 and isinstance(gen.get("text"), str)
              and (engine != "fake" or gen.get("text") == "ok"), tag + ": generate " + str(gen))
finally:
    shutil.rmtree(tmp, ignore_errors=True)

if failures:
    print("%d failures" % len(failures))
    sys.exit(1)
print("install: ok")
