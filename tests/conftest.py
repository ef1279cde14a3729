"""Shared fixtures: a generated tiny MM-IMDb (always there) and the real lite subset (optional)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from mmgenre.testing import make_tiny_mmimdb

TEST_TEXT_ENCODER = "minilm"  # the fast registered text encoder (the default is mpnet)
LITE_DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "mmimdb-lite"


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24/12/12 generated dataset in the official layout. Shared by the whole session: treat
    it as read-only (copy it with shutil.copytree before changing files)."""
    return make_tiny_mmimdb(tmp_path_factory.mktemp("tiny_mmimdb"))


@pytest.fixture(scope="session")
def lite_data() -> Path:
    """The real mmimdb-lite folder ($MMGENRE_DATA, else ../shared/mmimdb-lite); skip if absent."""
    env = os.environ.get("MMGENRE_DATA", "").strip()
    root = Path(env) if env else LITE_DEFAULT
    if not ((root / "split.json").is_file() and (root / "dataset").is_dir()):
        pytest.skip(f"MM-IMDb data not found at {root} (set MMGENRE_DATA)")
    return root


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Feature cache for tiny_data (default encoders), shared by the session."""
    return tmp_path_factory.mktemp("tiny_cache")


@pytest.fixture(scope="session")
def tiny_checkpoints(tiny_data: Path, tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every registered model trained for 2 epochs on tiny_data with the fast encoders (minilm,
    not the default mpnet: same code path, 4x less work for the suite; tests/test_mpnet.py covers
    mpnet), efficientnet-lite0 and haar, plus leaderboard.csv. Read-only for tests."""
    from mmgenre.leaderboard import write_leaderboard
    from mmgenre.models import list_models
    from train.config import TrainConfig
    from train.loop import fit

    out = tmp_path_factory.mktemp("tiny_checkpoints")
    for model in list_models():
        fit(TrainConfig(data=str(tiny_data), model=model, out=str(out), cache=str(tiny_cache), epochs=2,
                        text_encoder=TEST_TEXT_ENCODER,
                        batch_size=16, n_boot=20, progress=False))
    write_leaderboard(out)
    return out


@pytest.fixture(scope="session")
def ui_checkpoints(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The UI tests' checkpoint folder (dashboard.testing.train_tiny_checkpoints), trained once per
    session by whichever test needs it first. Read-only for tests."""
    from dashboard.testing import train_tiny_checkpoints
    return train_tiny_checkpoints(tiny_data, tmp_path_factory.getbasetemp() / "ui_checkpoints")
