"""The build-once cache: complete or absent, built by one process, never half an entry."""

import multiprocessing
import pathlib
import time

import pytest

from minift.cache import build_once, partial_paths


def write_folder(tmp: pathlib.Path, text: str = "weights") -> None:
    tmp.mkdir()
    (tmp / "model.bin").write_text(text)
    (tmp / "report.json").write_text("{}")


def test_builds_once_then_returns_the_entry(tmp_path):
    path = tmp_path / "entry"
    calls = []

    def build(tmp):
        calls.append(tmp)
        write_folder(tmp)

    assert build_once(path, build, ("model.bin", "report.json")) == path
    assert build_once(path, build, ("model.bin", "report.json")) == path
    assert len(calls) == 1 and calls[0] != path  # built beside the entry, then renamed
    assert (path / "model.bin").read_text() == "weights"
    assert partial_paths(path) == []


def test_a_build_that_raises_leaves_nothing(tmp_path):
    path = tmp_path / "entry"

    def build(tmp):
        tmp.mkdir()
        (tmp / "model.bin").write_text("half")
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError, match="killed mid-build"):
        build_once(path, build, ("model.bin", "report.json"))
    assert not path.exists() and partial_paths(path) == []
    build_once(path, write_folder, ("model.bin", "report.json"))  # the next build succeeds
    assert (path / "report.json").exists()


def test_a_build_that_forgets_a_file_is_refused(tmp_path):
    path = tmp_path / "entry"

    def build(tmp):
        tmp.mkdir()
        (tmp / "model.bin").write_text("no report")

    with pytest.raises(RuntimeError, match="report.json"):
        build_once(path, build, ("model.bin", "report.json"))
    assert not path.exists() and partial_paths(path) == []


def test_a_leftover_partial_build_is_removed_and_ignored(tmp_path):
    path = tmp_path / "entry.json"
    leftover = tmp_path / ".entry.json.partial-99999999"  # a process killed mid-build
    leftover.mkdir()
    (leftover / "junk").write_text("half")
    build_once(path, lambda tmp: tmp.write_text('{"ok": 1}'))
    assert path.read_text() == '{"ok": 1}'
    assert not leftover.exists()


def test_an_incomplete_folder_left_in_place_is_built_again(tmp_path):
    """An older minift wrote entries where they stand: a kill between the model and its
    report left a folder with the model alone (issue 11)."""
    path = tmp_path / "entry"
    path.mkdir()
    (path / "model.bin").write_text("stale")
    build_once(path, write_folder, ("model.bin", "report.json"))
    assert (path / "model.bin").read_text() == "weights" and (path / "report.json").exists()


def _build_in_process(path: str, log: str) -> None:
    def build(tmp):
        with open(log, "a") as f:
            f.write("built\n")
        time.sleep(0.5)  # long enough for the other process to reach the lock
        write_folder(tmp)

    build_once(path, build, ("model.bin", "report.json"))


def test_two_processes_build_once(tmp_path):
    path, log = tmp_path / "entry", tmp_path / "log.txt"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_build_in_process, args=(str(path), str(log))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert log.read_text() == "built\n"
    assert (path / "model.bin").read_text() == "weights" and partial_paths(path) == []
