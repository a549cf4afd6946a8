"""CTest: scripts/ctest_skips.py (run by scripts/test.sh after ctest) lists every skipped test of a
LastTest.log with the reason from its GTEST_SKIP() message, leaves passed and failed tests out,
and prints nothing, with exit status 0, when there is no log or nothing skipped in it.

    python3 tests/ctest_skips_test.py SCRIPT WORKDIR
"""
import os
import shutil
import subprocess
import sys

script, work = sys.argv[1], sys.argv[2]


def block(n, name, output, skipped):
    note = ("Test Pass Reason:\nSkip regular expression found in output. Regex=[\\[  SKIPPED \\]]\n"
            if skipped else "Test Passed.\n")
    return (f"{n}/9 Testing: {name}\n{n}/9 Test: {name}\nCommand: \"tokemb_tests\"\n"
            f"Directory: /x\n\"{name}\" start time: Dec 04 04:49 UTC\nOutput:\n"
            f"----------------------------------------------------------\n{output}<end of output>\n"
            f"Test time =   0.01 sec\n----------------------------------------------------------\n"
            f"{note}\"{name}\" end time: Dec 04 04:49 UTC\n"
            f"----------------------------------------------------------\n\n")


def gtest_skip(name, message):
    return (f"[ RUN      ] {name}\n/src/tests/test_helpers.hpp:265: Skipped\n{message}\n"
            f"[  SKIPPED ] {name} (0 ms)\n[  SKIPPED ] 1 test, listed below:\n[  SKIPPED ] {name}\n")


def run(build):
    p = subprocess.run([sys.executable, script, build], capture_output=True, text=True)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    assert p.stderr == "", p.stderr
    return p.stdout


shutil.rmtree(work, ignore_errors=True)
tmp = os.path.join(work, "Testing", "Temporary")
os.makedirs(tmp)
# No log at all: nothing.
assert run(work) == ""

no_gpu = "no CUDA device is present on this machine"
log = ("Start testing: Dec 04 04:49 UTC\n----------------------------------------------------------\n"
       + block(1, "Cpu.Passes", "[ RUN      ] Cpu.Passes\n[       OK ] Cpu.Passes (0 ms)\n", False)
       + block(2, "GpuOps.A", gtest_skip("GpuOps.A", no_gpu), True)
       + block(3, "GpuOps.B", gtest_skip("GpuOps.B", no_gpu), True)
       + block(4, "InitPhilox.Other", gtest_skip("InitPhilox.Other", "this build has cuRAND's\nhost generator"), True)
       + block(5, "Odd.NoMessage", "[  SKIPPED ] Odd.NoMessage (0 ms)\n", True)
       + block(6, "Cpu.Fails", "[  FAILED  ] Cpu.Fails\n", False)
       + "End testing: Dec 04 04:49 UTC\n")
with open(os.path.join(tmp, "LastTest.log"), "w") as f:
    f.write(log)
# A newer LastTestsDisabled.log must not be taken for the log.
with open(os.path.join(tmp, "LastTestsDisabled.log"), "w") as f:
    f.write("12:Disabled\n")
out = run(work)
expected = "\n".join([
    "== 4 skipped tests, with the reason (ctest itself prints only ***Skipped):",
    f"  {no_gpu} (2):",
    "    GpuOps.A",
    "    GpuOps.B",
    "  this build has cuRAND's host generator (1):",
    "    InitPhilox.Other",
    "  (no reason in the test's output) (1):",
    "    Odd.NoMessage",
]) + "\n"
assert out == expected, out

# Nothing skipped, or a log that is not CTest's: nothing.
with open(os.path.join(tmp, "LastTest.log"), "w") as f:
    f.write(block(1, "Cpu.Passes", "ok\n", False))
assert run(work) == ""
with open(os.path.join(tmp, "LastTest.log"), "wb") as f:
    f.write(b"\xff\xfe garbage \x00\n***Skipped without a header\n")
assert run(work) == ""
shutil.rmtree(work)
print("ctest_skips.py: reasons listed per skipped test; silent without a log or skips")
