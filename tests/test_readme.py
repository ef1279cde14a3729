"""README.md says what the code does: the default protocol comes from the training config (as
``python -m train --help`` does), every command it shows exists, and every picture it shows is
in assets/ (small) and every picture there is shown."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from train.__main__ import build_parser
from train.config import PROTOCOLS, TrainConfig

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
MAX_ASSET_BYTES = 150 * 1024


def test_default_protocol_is_said_once_and_from_the_config():
    default = TrainConfig().protocol
    names = "|".join(map(re.escape, PROTOCOLS))
    said = re.findall(rf"[Dd]efault(?:\s+protocol)?,?\s+`({names})`", README)
    assert said == [default], said
    assert all(f"`{name}`" in README for name in PROTOCOLS)
    help_text = " ".join(build_parser().format_help().split())
    assert f"(default: {default})" in help_text


def test_every_python_module_command_in_the_readme_exists():
    modules = set(re.findall(r"python -m ([\w.]+)", README))
    assert {"dashboard.serve", "train", "train.benchmarks.features", "dashboard.benchmarks.pages"} <= modules
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    assert not missing, missing


def test_readme_pictures_are_in_assets_small_and_all_shown():
    shown = set(re.findall(r"\]\((assets/[^)\s]+)\)", README))
    present = {f"assets/{p.name}" for p in (REPO / "assets").glob("*.png")}
    assert shown and shown == present, (shown, present)
    big = {p: (REPO / p).stat().st_size for p in present if (REPO / p).stat().st_size > MAX_ASSET_BYTES}
    assert not big, big
    assert not (REPO / "dashboard" / "README_SPACE.md").exists()
