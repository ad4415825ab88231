"""Checkpoints: atomic save, weights_only load, clear errors for truncated or foreign files."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from badblock.errors import BadInputError
from badblock.utils.checkpoint import load_checkpoint, save_checkpoint


def _state():
    return {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "model_config": {"width": 4},
            "data": {"context": 2}, "epoch": 3, "step": 17, "metrics": {"history": [{"a": 1.5}]}}


def test_round_trip_with_weights_only(tmp_path):
    path = save_checkpoint(tmp_path / "ck.pt", _state())
    raw = torch.load(path, weights_only=True)  # loadable without unpickling objects
    assert raw["step"] == 17
    back = load_checkpoint(path)
    assert torch.equal(back["model"]["w"], torch.arange(6.0).reshape(2, 3))
    assert back["metrics"]["history"][0]["a"] == 1.5
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary left behind


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = save_checkpoint(tmp_path / "ck.pt", _state())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInputError, match="truncated") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)
    path.write_bytes(b"")
    with pytest.raises(BadInputError, match="empty"):
        load_checkpoint(path)


@pytest.mark.parametrize("junk", [b"junk", b"\x80\x02", b"PK\x03\x04", bytes(range(256)) * 3,
                                  np.random.default_rng(0).bytes(4096)])
def test_bytes_that_are_no_checkpoint_are_a_clear_error(tmp_path, junk):
    """A 4-byte text file was a struct.error traceback from torch's unpickler (random bytes
    may also read as a pickle the weights-only loader refuses)."""
    path = tmp_path / "junk.pt"
    path.write_bytes(junk)
    with pytest.raises(BadInputError, match="not a torch checkpoint|refusing to load") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(BadInputError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(BadInputError, match="missing model"):
        load_checkpoint(tmp_path / "other.pt")


class Payload:  # a class pickled into a file: weights_only must refuse to build it
    pass


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({**_state(), "extra": Payload()}, path)
    with pytest.raises(BadInputError, match="weights_only|pickled"):
        load_checkpoint(path)
    with open(tmp_path / "plain.pkl", "wb") as fh:
        pickle.dump({"a": 1}, fh)
    with pytest.raises(BadInputError):
        load_checkpoint(tmp_path / "plain.pkl")


def test_weights_that_do_not_fit_are_one_line_that_counts_them():
    from badblock.utils.checkpoint import load_weights

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 2, 1))
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(2, 2),
                                torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    with pytest.raises(BadInputError) as err:
        load_weights(model, other.state_dict(), "ck.pt", "hint")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("ck.pt: checkpoint does not fit the model")
    # hand count: Conv2d(4, 2, 1) = "1.weight" [2, 4, 1, 1] and "1.bias" [2]; the file's "1."
    # is Linear(2, 2): weight [2, 2], bias [2]; "2.*", "3.*" are unexpected; 0.* differ (8 vs 4)
    assert "4 unexpected keys (2.weight, 2.bias, ... 2 more)" in msg
    assert "3 tensors of another shape (0.weight [8, 3, 3, 3] in the file, [4, 3, 3, 3] in " \
           "the model" in msg
    assert "missing" not in msg and msg.endswith("; hint")
    load_weights(model, model.state_dict(), "ck.pt", "hint")  # a fitting one loads
