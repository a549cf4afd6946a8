#!/usr/bin/env python3
"""Lists the tests the last ctest run skipped, with the reason each one gave.

ctest prints only "***Skipped" for a test that skipped; the reason (GoogleTest's GTEST_SKIP()
message, e.g. "no CUDA device is present on this machine") is in its output, which ctest keeps in
<build>/Testing/Temporary/LastTest.log. scripts/test.sh runs this after ctest.

    scripts/ctest_skips.py BUILD_DIR

Prints one line per reason, then the tests that gave it. Never fails the caller: a missing or
unreadable log, or one in which no skipped test is found, prints nothing, and the exit status is
always 0.
"""
import glob
import os
import re
import sys

# One test's record in LastTest.log starts with "N/M Test: NAME".
TEST_HEADER = re.compile(r"^\d+/\d+ Test: (.+)$", re.M)
# CTest's note on a test that a SKIP_REGULAR_EXPRESSION (or SKIP_RETURN_CODE) marked skipped.
SKIPPED_NOTE = re.compile(r"^Test Pass Reason:\s*\n(Skip regular expression found|.*[Ss]kip)", re.M)
# GoogleTest: "FILE:LINE: Skipped", then the message, up to "[  SKIPPED ] NAME".
GTEST_SKIP = re.compile(r"^.*:\d+: Skipped\s*\n(.*?)^\[  SKIPPED \]", re.M | re.S)


def skipped_tests(log_text):
    """[(name, reason or None)] for every skipped test of a LastTest.log, in the log's order."""
    headers = list(TEST_HEADER.finditer(log_text))
    result = []
    for i, h in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(log_text)
        block = log_text[h.end():end]
        if not SKIPPED_NOTE.search(block) and "***Skipped" not in block:
            continue
        m = GTEST_SKIP.search(block)
        reason = " ".join(m.group(1).split()) if m else None
        result.append((h.group(1).strip(), reason or None))
    return result


def report(skips):
    """The lines to print: a heading, then each reason with the tests that gave it."""
    if not skips:
        return []
    by_reason = {}
    for name, reason in skips:
        by_reason.setdefault(reason or "(no reason in the test's output)", []).append(name)
    lines = [f"== {len(skips)} skipped test{'s' if len(skips) != 1 else ''}, with the reason "
             "(ctest itself prints only ***Skipped):"]
    for reason, names in by_reason.items():
        lines.append(f"  {reason} ({len(names)}):")
        lines.extend(f"    {n}" for n in names)
    return lines


def main(argv):
    if len(argv) != 2:
        print("usage: ctest_skips.py BUILD_DIR", file=sys.stderr)
        return 0
    try:
        tmp = os.path.join(argv[1], "Testing", "Temporary")
        # LastTest.log, or LastTest_<timestamp>.log in dashboard mode; not LastTestsDisabled.log.
        logs = glob.glob(os.path.join(tmp, "LastTest.log")) + glob.glob(os.path.join(tmp, "LastTest_*.log"))
        if not logs:
            return 0
        with open(max(logs, key=os.path.getmtime), encoding="utf-8", errors="replace") as f:
            text = f.read()
        lines = report(skipped_tests(text))
    except Exception:  # never fail the test command over a listing
        return 0
    if lines:
        try:
            print("\n".join(lines), flush=True)
        except OSError:  # a closed pipe (| head) is not an error of the test run
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
