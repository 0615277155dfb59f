"""Ctrl-C at the very end of a command, and a Hub download cut short (issue 21, item 6)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

VECTOR = Path(__file__).resolve().parent.parent / "spec" / "vectors" / "raw.smask"

# The submask command, with an object whose finalizer sends it SIGINT while the interpreter shuts down: after the
# command has printed its result, where Python has put the default handlers back.
LATE = textwrap.dedent("""
    import os, signal, sys, time
    sys.argv = ["submask", *sys.argv[1:]]

    class Late:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)

    holder = type(sys)("late_holder")
    holder.late = Late()
    sys.modules["late_holder"] = holder
    from submask.cli import main
    main()
""")


def assert_clean_end(result: subprocess.CompletedProcess[str]) -> None:
    """Done (0, the full output, nothing on stderr) or interrupted (130 and one line); nothing else."""
    if result.returncode == 130:
        assert result.stderr.strip() == "error: interrupted (SIGINT)", result.stderr
    else:
        assert result.returncode == 0, (result.returncode, result.stderr)
        assert result.stderr == "" and "raw.smask" in result.stdout


def test_sigint_while_the_interpreter_shuts_down_is_not_a_silent_kill() -> None:
    for _ in range(3):
        result = subprocess.run([sys.executable, "-c", LATE, "info", str(VECTOR)], capture_output=True, text=True,
                                timeout=120)
        assert_clean_end(result)


@pytest.mark.slow
def test_sigint_at_any_moment_near_the_end_is_130_and_one_line_or_a_finished_command() -> None:
    command = [sys.executable, "-m", "submask", "info", str(VECTOR)]
    start = time.monotonic()
    subprocess.run(command, capture_output=True, timeout=120, check=True)
    runtime = time.monotonic() - start
    outcomes = set()
    for step in range(6):
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(runtime * (0.6 + 0.1 * step))  # from the middle of the run to past its end
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
        assert_clean_end(subprocess.CompletedProcess(command, process.returncode, stdout, stderr))
        outcomes.add(process.returncode)
    assert outcomes <= {0, 130}


# -- a download cut short ----------------------------------------------------------------------------------------

COMMIT = "a" * 40


class CutShort(BaseHTTPRequestHandler):
    """Says a file has 100,000 bytes, sends 1,000 and closes the connection."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep test output quiet
        pass

    def do_HEAD(self) -> None:
        self.answer(body=False)

    def do_GET(self) -> None:
        self.answer(body=True)

    def answer(self, body: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", '"0123"')
        self.end_headers()
        if body:
            self.wfile.write(b"\0" * 1000)
            self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def cutting_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), CutShort)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_download_cut_short_says_so_and_what_to_do(cutting_server: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("huggingface_hub")
    from submask import HubError
    from submask.hub.remote import Remote

    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    remote = Remote("org/masks", endpoint=cutting_server, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(HubError) as info:
        remote.download("rl.smask", COMMIT)
    message = str(info.value)
    assert "download of 'rl.smask'" in message and "was incomplete" in message and "run the command again" in message
    assert "cannot reach" not in message and "check the network" not in message
    assert not os.path.exists(tmp_path / "cache" / "models--org--masks" / "snapshots" / COMMIT / "rl.smask")
