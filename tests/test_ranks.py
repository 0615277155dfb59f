"""tests/ranks.py reruns a multi-process run once when a rank was killed by a signal, and only then."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ranks import run_ranks

CRASH_ONCE = """
import os, signal, sys
marker = sys.argv[1]
if not os.path.exists(marker):
    open(marker, "w").close()
    {crash}
"""


def crash_once(tmp_path: Path, crash: str) -> list[str]:
    script = tmp_path / "crash_once.py"
    script.write_text(CRASH_ONCE.format(crash=crash))
    return [sys.executable, str(script), str(tmp_path / "crashed")]


@pytest.mark.parametrize("crash", [
    "os.kill(os.getpid(), signal.SIGABRT)",  # the process itself dies by the signal
    "sys.exit('process 0 terminated with signal SIGABRT')",  # torch's spawn reports a rank that did
])
def test_a_run_killed_by_a_signal_is_rerun_once_with_a_warning(tmp_path: Path, crash: str) -> None:
    with pytest.warns(UserWarning, match="killed by a signal, the rerun passed"):
        run_ranks(lambda port: crash_once(tmp_path, crash), timeout=60)


def test_a_python_error_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="a rank raised"):
        run_ranks(lambda port: crash_once(tmp_path, "sys.exit('a rank raised')"), timeout=60)
    with pytest.raises(AssertionError, match="a rank raised"):  # the marker exists now: a rerun would have passed
        run_ranks(lambda port: [sys.executable, "-c", "import sys; sys.exit('a rank raised')"], timeout=60)


def test_a_second_crash_fails_with_both_outputs(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import sys; sys.exit('process 1 terminated with signal SIGSEGV')"]
    with pytest.raises(AssertionError, match="failed twice"):
        run_ranks(lambda port: command, timeout=60)
