#!/usr/bin/env python3
"""man_test.py: the manual page and the bash completion follow the binary.

Every option that `sglc COMMAND --help` lists (a -X or --name at a word
start) must be described in docs/sglc.1, in that command's `.SS sglc
COMMAND` section or in one of the shared sections (COMMON OPTIONS, REMOTE
BACKEND OPTIONS, RESOURCE LIMIT OPTIONS, DEVICE); every command must have its section. The bash
completion must offer the commands and a command's options.

Usage: man_test.py SGLC docs/sglc.1 completions/sglc.bash
"""
import re
import shutil
import subprocess
import sys

sglc, man_path, bash_path = sys.argv[1:4]
OPT = re.compile(r"(?:^|(?<=[\[\] ,(|]))(--?[A-Za-z][A-Za-z0-9-]*)")
SHARED = ("COMMON OPTIONS", "REMOTE BACKEND OPTIONS", "RESOURCE LIMIT OPTIONS", "DEVICE")
failures = []


def help_text(*args):
    r = subprocess.run([sglc, *args, "--help"], capture_output=True, text=True, timeout=30)
    return r.stdout + r.stderr


def commands():
    out, cmds, on = help_text(), [], False
    for line in out.splitlines():
        if line.startswith("commands:"):
            on = True
        elif on and re.match(r"^  [a-z]", line):
            cmds.append(line.split()[0])
        elif on and not line.strip():
            on = False
    return cmds


# The man page, split into sections, with roff escapes removed.
text = open(man_path, encoding="utf-8").read()
text = re.sub(r"\\f[BIRP]", "", text).replace("\\-", "-").replace("\\(em", "-")
sections, name = {}, ""
for line in text.splitlines():
    m = re.match(r"^\.(SH|SS)\s+(.*)$", line)
    if m:
        name = m.group(2).strip().strip('"')
        sections[name] = ""
        continue
    sections[name] = sections.get(name, "") + line + "\n"
shared = "".join(sections.get(s, "") for s in SHARED)


def mentions(body, opt):
    return re.search(r"(?<![A-Za-z0-9-])" + re.escape(opt) + r"(?![A-Za-z0-9-])", body) is not None


cmds = commands()
if len(cmds) < 5:
    failures.append("could not read the command list of sglc --help: %s" % cmds)
for cmd in cmds:
    sec = next((body for title, body in sections.items() if re.match(r"^sglc %s(\s|$)" % re.escape(cmd), title)), None)
    if sec is None:
        failures.append("docs/sglc.1 has no '.SS sglc %s' section" % cmd)
        continue
    title = next(t for t in sections if re.match(r"^sglc %s(\s|$)" % re.escape(cmd), t))
    opts = sorted(set(OPT.findall(help_text(cmd))) - {"--help", "-h"})
    if not opts:
        failures.append("sglc %s --help lists no options" % cmd)
    for opt in opts:
        if not (mentions(title + "\n" + sec, opt) or mentions(shared, opt)):
            failures.append("sglc %s: option %s (in --help) is not in docs/sglc.1" % (cmd, opt))

# The bash completion, driven as bash does.
if shutil.which("bash"):
    def complete(*words):
        script = ('source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _sglc; '
                  'printf "%s\\n" "${COMPREPLY[@]}"')
        r = subprocess.run(["bash", "-c", script, "bash", bash_path, sglc, *words],
                           capture_output=True, text=True, timeout=30)
        return r.stdout.split()
    got = complete("gen")
    if got != ["generate"]:
        failures.append("bash completion of 'sglc gen': %s" % got)
    got = complete("run", "--js")
    if "--json" not in got:
        failures.append("bash completion of 'sglc run --js': %s" % got)
    got = complete("dump", "--format", "")
    if sorted(got) != ["dot", "json", "text"]:
        failures.append("bash completion of 'sglc dump --format': %s" % got)
if shutil.which("zsh"):
    r = subprocess.run(["zsh", "-n", bash_path.replace("sglc.bash", "_sglc")], capture_output=True, text=True)
    if r.returncode:
        failures.append("completions/_sglc: " + r.stderr)

for f in failures:
    print("FAIL:", f)
print("%d commands checked, %d failures" % (len(cmds), len(failures)))
sys.exit(1 if failures else 0)
