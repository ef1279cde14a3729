"""Checkpoints load weights only, refuse what does not match their config, name no machine's
paths and can be read by other users."""
from __future__ import annotations

import json
import os
import pickle
import re
import stat
import struct
from pathlib import Path

import numpy as np
import pytest

from mmgenre.checkpoint import load_checkpoint, portable, portable_path, save_checkpoint
from mmgenre.errors import InputError
from mmgenre.explain_store import STORE_FOLDER
from mmgenre.genres import GENRES
from mmgenre.predict import Predictor

CONFIG = {"model": "text_only", "thresholds": [0.5] * 23, "encoders": {"text": {"name": "minilm"}},
          "head": {"name": "text_only", "dims": {"text": 4}, "n_genres": 23, "hparams": {"hidden": 8}}}


def write(tmp_path, config=CONFIG, weights=None):
    weights = weights if weights is not None else {"w": np.zeros((2, 3), dtype=np.float32)}
    return save_checkpoint(tmp_path / "ck", weights=weights, config=config)


def test_round_trip(tmp_path):
    path = write(tmp_path)
    ck = load_checkpoint(path)
    assert ck.model == "text_only" and ck.config["genres"] == list(GENRES)
    assert ck.weights["w"].shape == (2, 3)
    assert not list(tmp_path.glob(".ck*")), "no staging folder is left behind"


def test_overwrite_is_atomic_and_complete(tmp_path):
    write(tmp_path)
    write(tmp_path, weights={"w": np.ones((1,), dtype=np.float32)})
    assert load_checkpoint(tmp_path / "ck").weights["w"].tolist() == [1.0]


@pytest.mark.parametrize("change,message", [
    ({"model": "evil_head"}, "unknown model"),
    ({"thresholds": [0.5] * 3}, "thresholds"),
    ({"thresholds": [2.0] * 23}, "thresholds"),
    ({"encoders": {"text": {"name": "no-such-encoder"}}}, "unknown text encoder"),
    ({"encoders": {"audio": {"name": "x"}}}, "unknown encoder kind"),
    ({"format_version": 99}, "format_version"),
    ({"genres": ["Drama"]}, "genre list"),
])
def test_bad_configs_are_refused(tmp_path, change, message):
    path = write(tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(change)
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match=message):
        load_checkpoint(path)


def test_not_json_and_missing_files(tmp_path):
    with pytest.raises(InputError, match="no config.json"):
        load_checkpoint(tmp_path)
    path = write(tmp_path)
    (path / "config.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(InputError, match="not valid JSON"):
        load_checkpoint(path)


class _Boom:
    def __reduce__(self):
        import os
        return (os.system, ("touch pwned.txt",))


def test_crafted_pickle_is_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path)
    (path / "model.safetensors").unlink()
    (path / "model.pt").write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(InputError, match="pickled weights are not loaded"):
        load_checkpoint(path)
    (path / "model.safetensors").write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(InputError, match="not a readable safetensors"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned.txt").exists()


def test_weights_that_do_not_fit_the_head_are_refused(tmp_path):
    path = write(tmp_path)
    with pytest.raises(InputError, match="do not match"):
        Predictor.from_checkpoint(path)


# ------------------------------------------------------------------------------ portability
SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints"
# An absolute POSIX path of two or more parts, not part of a URL or a fraction.
ABS_PATH = re.compile(r"(?<![\w.:/~-])/[^\s/\"',;:<>()]+/[^\s\"',;:<>()]*")


def _safetensors_header(path: Path) -> str:
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        return fh.read(n).decode("utf-8")


def test_no_shipped_checkpoint_file_holds_an_absolute_path():
    # explanations/ (explain-split stores) is local data, never shipped (.gitignore)
    files = sorted(p for p in SHIPPED.rglob("*") if p.is_file() and STORE_FOLDER not in p.relative_to(SHIPPED).parts)
    assert any(p.name == "config.json" for p in files), "no shipped checkpoints found"
    found = {}
    for f in files:
        text = _safetensors_header(f) if f.suffix == ".safetensors" else f.read_text(encoding="utf-8")
        hits = ABS_PATH.findall(text)
        if hits:
            found[str(f.relative_to(SHIPPED))] = hits[:3]
    assert not found, found


def test_portable_paths(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert portable_path("/srv/venv/lib/python3.11/site-packages/gt_pkg/model") == "site-packages/gt_pkg/model"
    assert portable_path("/usr/lib/python3/dist-packages/cv2/data") == "site-packages/cv2/data"
    assert portable_path(str(tmp_path / "checkpoints" / "gmu")) == "checkpoints/gmu"   # inside cwd
    assert portable_path("/mnt/big/disk/mmimdb") == "mmimdb"                           # elsewhere
    for given in ("../shared/mmimdb-lite", "minilm", "https://host/a/b", "~/data/mmimdb", ""):
        assert portable_path(given) == given
    cfg = portable({"encoders": {"text": {"name": "/models/my-bert", "source": "/models/my-bert/w.bin"}},
                    "train": {"text_encoder": "/models/my-bert", "data": "/data/mmimdb", "n": 3,
                              "sizes": [1, "/a/b"], "none": None}})
    # The names the model is rebuilt from stay as the user gave them.
    assert cfg["encoders"]["text"] == {"name": "/models/my-bert", "source": "w.bin"}
    assert cfg["train"] == {"text_encoder": "/models/my-bert", "data": "mmimdb", "n": 3,
                            "sizes": [1, "b"], "none": None}


def test_saved_config_is_portable(tmp_path):
    config = {**CONFIG, "train": {"data": "/home/someone/mmimdb", "cache": str(Path.home() / ".cache")}}
    ck = load_checkpoint(write(tmp_path, config=config))
    assert ck.config["train"] == {"data": "mmimdb", "cache": ".cache"}


@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)
    old = os.umask(0o022)
    yield set_mask
    os.umask(old)


def _modes(folder: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.iterdir()]}


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700),
                                                       (0o002, 0o664, 0o775)])
def test_checkpoint_files_get_the_umask_modes_not_tempfiles_0600(tmp_path, umask, mask, file_mode, dir_mode):
    # A Space runs as uid 1000 and must read checkpoints written by root at build time.
    umask(mask)
    folder = save_checkpoint(tmp_path / "ck", weights={"w": np.zeros(2, dtype=np.float32)}, config=CONFIG,
                             metrics={"a": 1}, extra_files={"notes.txt": "x"})
    modes = _modes(folder)
    assert modes.pop("ck") == dir_mode
    assert modes == {n: file_mode for n in ("config.json", "model.safetensors", "metrics.json", "notes.txt")}
    save_checkpoint(folder, weights={"w": np.ones(2, dtype=np.float32)}, config=CONFIG)  # the swap path too
    assert set(_modes(folder).values()) == {file_mode, dir_mode}
