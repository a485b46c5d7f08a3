"""The one atomic writer: a file appears whole or not at all, and no temporary file stays."""

import json
import os
import stat

import numpy as np
import pytest

from ferlab.common.arrays import read_npz, write_npz
from ferlab.common.files import (
    atomic_path,
    file_mode,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)


def test_writes_bytes_text_and_json_with_the_ordinary_file_mode(tmp_path):
    write_bytes_atomic(tmp_path / "a" / "b.bin", b"\x00\x01")
    write_text_atomic(tmp_path / "c.md", "é\n")
    path = write_json_atomic(tmp_path / "d.json", {"x": [1, 2]})
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "c.md").read_text(encoding="utf-8") == "é\n"
    assert path.read_text() == '{\n  "x": [\n    1,\n    2\n  ]\n}\n'
    assert stat.S_IMODE(os.stat(path).st_mode) == file_mode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c.md", "d.json"]


def test_a_payload_json_cannot_hold_leaves_neither_file_nor_temporary(tmp_path):
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "run.json", {"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_a_failing_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = write_json_atomic(tmp_path / "summary.json", {"old": True})
    with pytest.raises(OSError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_bytes(b'{"new": tr')  # half written, then the disk fills
        raise OSError("disk full")
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_ctrl_c_inside_a_write_leaves_no_temporary(tmp_path):
    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "model.npz") as tmp:
        tmp.write_bytes(b"PK")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_a_failing_array_file_write_leaves_no_temporary(tmp_path):
    write_npz(tmp_path / "m.npz", {"format": "x"}, {"w": np.ones(3)})
    with pytest.raises(TypeError, match="dtype object"):
        write_npz(tmp_path / "m.npz", {"format": "x"}, {"w": np.array([None])})
    with pytest.raises(TypeError):
        write_npz(tmp_path / "m.npz", {"format": object()}, {"w": np.ones(2)})
    meta, arrays = read_npz(tmp_path / "m.npz")
    assert meta == {"format": "x"} and arrays["w"].tolist() == [1.0, 1.0, 1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


def test_a_failing_tensor_file_write_leaves_no_temporary(tmp_path, monkeypatch):
    """safetensors failing half way (here: a full disk) used to leave ``model.safetensors.tmp``."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from ferlab.deep import tensors

    def half_written(cpu, name, metadata):
        with open(name, "wb") as handle:
            handle.write(b"\x10\x00")
        raise OSError("No space left on device")

    meta = {"format": tensors.MODEL_FORMAT}
    tensors.write_tensors(tmp_path / "model.safetensors", meta, {"w": torch.ones(2)})
    monkeypatch.setattr(tensors, "save_file", half_written)
    with pytest.raises(OSError, match="No space"):
        tensors.write_tensors(tmp_path / "model.safetensors", meta, {"w": torch.zeros(2)})
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
    _, kept = tensors.read_tensors(tmp_path / "model.safetensors", tensors.MODEL_FORMAT)
    assert kept["w"].tolist() == [1.0, 1.0]
