"""validate_schema.py: checks the outputs of test_schema_random with the
`jsonschema` package (draft 2020-12, formats checked).

Input: a JSON-lines file, one {"schema": {...}, "text": "...", "kind": k}
per line; k "complete" (ended by EOS) or "cut" (stopped by length, then
completed along the constraint: the completion proves the cut text is a
prefix of a valid one). Every text must parse as JSON and validate. Prints
each failure and exits 1 if there is any.
"""
import datetime
import json
import sys
import urllib.parse

import jsonschema

fc = jsonschema.FormatChecker()


@fc.checks("time", raises=ValueError)
def _time(s):
    # RFC 3339 full-time: a zone is required
    if not (s.endswith("Z") or s[-6] in "+-"):
        raise ValueError("no zone")
    datetime.time.fromisoformat(s.replace("Z", "+00:00"))
    return True


@fc.checks("date-time", raises=ValueError)
def _date_time(s):
    if "T" not in s or not (s.endswith("Z") or s[-6] in "+-"):
        raise ValueError("not RFC 3339")
    datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
    return True


@fc.checks("uri", raises=ValueError)
def _uri(s):
    u = urllib.parse.urlsplit(s)
    if not u.scheme or not u.netloc or any(c in s for c in ' "<>{}|\\^`'):
        raise ValueError("not a URI")
    return True


def main(path):
    bad = n = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            case = json.loads(line)
            n += 1
            try:
                value = json.loads(case["text"])
                jsonschema.Draft202012Validator(case["schema"], format_checker=fc).validate(value)
            except Exception as e:  # any parse or validation error is a failure
                bad += 1
                msg = str(e).splitlines()[0]
                print(f"INVALID ({case['kind']}): {case['text']!r}\n  schema: "
                      f"{json.dumps(case['schema'])}\n  error: {msg}")
    print(f"validate_schema: {n} outputs, {bad} invalid")
    return 1 if bad or n == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
