"""Atomic writes: the target holds the old content or the whole new one, never a part, and no temporary is left."""
import json
import os

import pytest

from scratchcap.atomic import atomic_path, write_json


def test_write_json_replaces_the_file_whole(tmp_path):
    path = tmp_path / "out" / "scores.json"
    write_json(path, {"Bleu_4": 0.2}, indent=1)
    write_json(path, {"Bleu_4": 0.3})
    assert json.loads(path.read_text()) == {"Bleu_4": 0.3}
    assert os.listdir(path.parent) == ["scores.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, {"epoch": 1})
    with pytest.raises(TypeError):
        write_json(path, {"epoch": object()})  # not serialisable, half-way through the dump
    assert json.loads(path.read_text()) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["summary.json"]


def test_atomic_path_removes_its_temporary_on_interrupt(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "w.h5") as tmp:
            open(tmp, "w").write("partial")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []
