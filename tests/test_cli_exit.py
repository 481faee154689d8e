"""How the command line ends: ``cli.run`` exits as a normal exit would, minus the teardown.

Each case runs a real interpreter (``exit_now`` ends the process it runs in): the command's
status and output arrive whole through a pipe, the exit handlers run, a thread still working is
waited for, and Python's teardown of modules and objects is what is skipped (shown by an
object's finaliser, which the same script run through a normal exit does call).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import write_config

from dicomdrop import cli

_SCRIPT = textwrap.dedent(
    """
    import atexit, sys, threading, time
    from pathlib import Path
    from dicomdrop import cli

    marks = Path(sys.argv[1])
    how, argv = sys.argv[2], sys.argv[3:]

    def mark(word):
        with marks.open("a") as f:
            f.write(word + "\\n")

    class Finaliser:
        def __del__(self):
            mark("teardown")

    atexit.register(mark, "exit handler")
    atexit.register(print, "printed by an exit handler")  # runs first; left in the buffer
    print("printed before the command")  # still in the stream's buffer: a pipe is not a tty
    returned = threading.Event()
    command = cli.main

    def main_then_signal(argv=None):
        try:
            return command(argv)
        finally:
            globals()["kept"] = Finaliser()  # the teardown's witness: an object it finalises
            returned.set()

    cli.main = main_then_signal
    if how == "thread":

        def late():  # still working after the command returned
            returned.wait()
            time.sleep(0.2)
            mark("thread finished")

        threading.Thread(target=late).start()
    sys.argv = ["dicomdrop", *argv]
    if how == "normal":
        sys.exit(cli.main(argv))
    cli.run()
    """
)


# Output to a pipe stays in the stream's buffer until flushed (unless the caller's environment
# says otherwise): the flush at exit is then what delivers it.
_BUFFERED = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


def _run(
    tmp_path: Path, how: str, *argv: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    script = tmp_path / "entry.py"
    script.write_text(_SCRIPT)
    marks = tmp_path / f"marks-{how}.txt"
    done = subprocess.run(
        [sys.executable, str(script), str(marks), how, *argv],
        env=_BUFFERED,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done, marks.read_text().splitlines() if marks.exists() else []


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A set-up site (folders, key, database): ``check-config`` passes on it."""
    path = write_config(tmp_path / "site")
    assert cli.main(["init", "--config", str(path)]) == 0
    assert cli.main(["db", "upgrade", "--config", str(path)]) == 0
    return path


def test_run_keeps_status_output_and_exit_handlers_and_skips_the_teardown(
    tmp_path: Path, config: Path
) -> None:
    done, marks = _run(tmp_path, "run", "--config", str(config), "status", "--json")
    normal, normal_marks = _run(tmp_path, "normal", "--config", str(config), "status", "--json")

    assert done.returncode == normal.returncode == 0, done.stderr
    # Whole through the pipe: it parses, and says what the normal exit's output says.
    first, _, rest = done.stdout.partition("\n")
    assert first == "printed before the command"
    rest, _, last = rest.rstrip("\n").rpartition("\n")
    assert last == "printed by an exit handler"
    report, normal_report = (
        json.loads(rest),
        json.loads(normal.stdout.split("\n", 1)[1].rstrip("\n").rpartition("\n")[0]),
    )
    assert report["schema"] == "dicomdrop.status"
    assert report.keys() == normal_report.keys()
    assert report["jobs"] == normal_report["jobs"]
    assert marks == ["exit handler"]
    # The same script through a normal exit finalises its objects: the check above can fail.
    assert normal_marks == ["exit handler", "teardown"]


def test_run_reports_a_failing_status(tmp_path: Path) -> None:
    missing = tmp_path / "absent" / "config.toml"
    done, marks = _run(tmp_path, "run", "--config", str(missing), "status")
    normal, _ = _run(tmp_path, "normal", "--config", str(missing), "status")

    assert done.returncode == normal.returncode != 0
    assert done.stderr == normal.stderr
    assert marks == ["exit handler"]


def test_run_waits_for_a_thread_still_working(tmp_path: Path, config: Path) -> None:
    done, marks = _run(tmp_path, "thread", "--config", str(config), "check-config")

    assert done.returncode == 0, done.stderr
    assert marks[0] == "thread finished"
    assert "exit handler" in marks


def test_python_dash_m_uses_run(config: Path) -> None:
    text = (Path(__file__).parents[1] / "dicomdrop" / "__main__.py").read_text()
    assert "run()" in text
    done = subprocess.run(
        [sys.executable, "-m", "dicomdrop", "--config", str(config), "check-config"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout


def test_the_collector_is_paused_while_command_modules_load_and_resumed_after(
    monkeypatch: pytest.MonkeyPatch, config: Path
) -> None:
    import gc
    import importlib

    seen: list[bool] = []
    real_import = importlib.import_module

    def recording_import(name: str, package: str | None = None) -> object:
        seen.append(gc.isenabled())
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", recording_import)
    assert gc.isenabled()

    assert cli.main(["--config", str(config), "check-config"]) == 0

    assert seen and not any(seen)
    assert gc.isenabled()


def test_the_collector_is_resumed_when_loading_fails_and_left_off_if_it_was() -> None:
    import gc

    def failing() -> None:
        assert not gc.isenabled()
        raise ImportError("a command module is broken")

    with pytest.raises(ImportError), cli._collector_paused():
        failing()
    assert gc.isenabled()
    gc.disable()
    try:
        with cli._collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
