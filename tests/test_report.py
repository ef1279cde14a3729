"""Export for a thesis: figures as PNG / SVG / PDF (mmgenre.figure_export, kaleido 0.2.1's own
Chromium, with a watchdog), and one movie's report as HTML + PDF (mmgenre.report, `python -m
mmgenre report`), on the tiny generated data and the session's tiny checkpoints."""
from __future__ import annotations

import io
import json
import os
import shutil
import time
from pathlib import Path

import plotly.graph_objects as go
import pytest
from pypdf import PdfReader

from mmgenre import figure_export as FE
from mmgenre.errors import InputError
from mmgenre.figure_export import FigureExportError, figure_bytes, figures_pdf

HOSTILE = "<script>alert(1)</script>"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _bar() -> go.Figure:
    return go.Figure(go.Bar(x=["a &amp; b", "&lt;i&gt;"], y=[1, 2]), layout={"title": "two bars", "width": 400,
                                                                             "height": 300})


# ------------------------------------------------------------------------------ figure export
def test_each_format_is_what_it_says():
    fig = _bar()
    png = figure_bytes(fig, "png")
    assert png.startswith(PNG_MAGIC)
    assert int.from_bytes(png[16:20], "big") == 800  # width: 400 layout px at PNG_SCALE 2
    svg = figure_bytes(fig, "SVG")
    assert svg.lstrip().startswith((b"<svg", b"<?xml")) and b"two bars" in svg
    pdf = figure_bytes(fig, "pdf")
    assert pdf.startswith(b"%PDF") and len(PdfReader(io.BytesIO(pdf)).pages) == 1
    merged = figures_pdf([fig, _bar()], title="t")
    assert merged.startswith(b"%PDF") and len(PdfReader(io.BytesIO(merged)).pages) == 2


def test_unknown_format_is_a_clear_error():
    with pytest.raises(InputError, match=r"png, svg, pdf.*'jpeg'"):
        figure_bytes(_bar(), "jpeg")
    with pytest.raises(InputError, match="no figures"):
        figures_pdf([])


def _live_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that still run (zombies waiting for init do not count)."""
    import psutil
    live = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                live.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            pass
    return live


def test_a_hung_exporter_is_killed_and_started_again(monkeypatch, tmp_path):
    """kaleido 0.2.1 sometimes never finishes starting: the exporter gives up on a start after
    START_TIMEOUT_S, kills the whole process group and starts afresh."""
    monkeypatch.setattr(FE, "START_TIMEOUT_S", 0.5)
    hung = FE._Exporter()
    monkeypatch.setattr(hung, "_command", lambda: ["bash", "-c", "sleep 60 & wait"])
    t = time.monotonic()
    with pytest.raises(FigureExportError, match="3 times"):
        hung.render(b"{}")
    assert time.monotonic() - t < 10 and hung._proc is None
    # Hangs on its first start only, then runs the real exporter: one answer, after a restart.
    flag = tmp_path / "started-once"
    real = " ".join(f"'{a}'" for a in FE._Exporter()._command())
    flaky = FE._Exporter()
    monkeypatch.setattr(flaky, "_command", lambda: [
        "bash", "-c", f"if [ ! -e '{flag}' ]; then touch '{flag}'; sleep 60; fi; exec {real}"])
    monkeypatch.setattr(FE, "START_TIMEOUT_S", 3.0)  # a real start takes 1-2 s on two busy cores
    spec = json.dumps({"format": "svg", "width": 300, "height": 200, "scale": 1, "data": _bar().to_dict()})
    answer = flaky.render(spec.encode())
    assert flag.is_file() and answer["code"] == 0 and answer["result"].startswith("<svg")
    pgid = flaky._proc.pid
    assert _live_members(pgid)
    flaky.stop()
    time.sleep(0.2)
    assert not _live_members(pgid)


# ------------------------------------------------------------------------------ one movie's report
@pytest.fixture(scope="module")
def hostile_data(tiny_data, tmp_path_factory) -> tuple[Path, str]:
    """A copy of the tiny data whose first test movie with a poster has a hostile title and plot."""
    root = tmp_path_factory.mktemp("report_data") / "mmimdb"
    shutil.copytree(tiny_data, root)
    split = json.loads((root / "split.json").read_text())
    imdb_id = next(i for i in split["test"] if (root / "dataset" / f"{i}.jpeg").is_file())
    path = root / "dataset" / f"{imdb_id}.json"
    rec = json.loads(path.read_text())
    rec["title"] = f"Fast & {HOSTILE}"
    rec["plot"] = [f"A detective finds a ghost. {HOSTILE} Tom & Jerry meet the <b>end</b>."]
    path.write_text(json.dumps(rec))
    return root, imdb_id


def _report(args: list[str], capsys) -> tuple[int, str, str]:
    from mmgenre.__main__ import main
    rc = main(["report", *args])
    got = capsys.readouterr()
    return rc, got.out, got.err


def test_report_cli_writes_a_self_contained_html_and_a_pdf(tiny_checkpoints, hostile_data, tmp_path, capsys):
    root, imdb_id = hostile_data
    out = tmp_path / "reports"
    rc, stdout, err = _report(["--checkpoint", str(tiny_checkpoints / "cross_attention"), "--data", str(root),
                               "--id", imdb_id, "--out", str(out), "--genres", "Drama,comedy"], capsys)
    assert rc == 0, err
    summary = json.loads(stdout)
    assert summary["genres"] == ["Drama", "Comedy"] and summary["text_method"] == "fast"
    assert set(summary["faithfulness"]) == {"deletion", "ig_completeness"}
    html_path, pdf_path = Path(summary["files"]["html"]), Path(summary["files"]["pdf"])
    assert html_path == out / f"{imdb_id}_cross_attention.html" and sorted(out.iterdir()) == [html_path, pdf_path]
    page = html_path.read_text(encoding="utf-8")
    # Escaped everywhere; no script, no external resource: pictures and charts are data URIs.
    assert HOSTILE not in page and "<b>end</b>" not in page and "<script" not in page
    assert "Fast &amp; &lt;script&gt;alert(1)&lt;/script&gt;" in page  # the title
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&amp;" in page
    assert "http://" not in page and "https://" not in page
    assert page.count('src="data:image/png;base64,') == 3  # poster + Grad-CAM of both genres
    assert page.count('src="data:image/svg+xml;base64,') >= 4  # 2 word charts, probabilities, modality
    assert "deletion: top-20% drop" in page and "Integrated Gradients at the text encoder" in page
    pdf = pdf_path.read_bytes()
    assert pdf.startswith(b"%PDF")
    reader = PdfReader(io.BytesIO(pdf))
    # summary, poster, 2 word charts, probabilities, modality, cross-attention
    assert len(reader.pages) == 7
    first = reader.pages[0].extract_text()  # the summary page: method and faithfulness figures
    assert "IG completeness" in first and "text encoder" in first and "beats random" in first


def test_report_of_an_unknown_id_or_bad_input_writes_nothing(tiny_checkpoints, hostile_data, tmp_path, capsys):
    root, imdb_id = hostile_data
    ckpt = str(tiny_checkpoints / "gmu")
    out = tmp_path / "none"
    rc, _, err = _report(["--checkpoint", ckpt, "--data", str(root), "--id", "tt0000000", "--out", str(out)], capsys)
    assert rc == 2 and f"'tt0000000' is not in the data folder {root}" in err
    rc, _, err = _report(["--checkpoint", ckpt, "--data", str(root), "--id", imdb_id, "--out", str(out),
                          "--genres", "Drama,Telenovela"], capsys)
    assert rc == 2 and "Telenovela" in err
    assert not out.exists()
    afile = tmp_path / "a_file"
    afile.write_text("x")
    rc, _, err = _report(["--checkpoint", ckpt, "--data", str(root), "--id", imdb_id, "--out", str(afile)], capsys)
    assert rc == 2 and "not a folder" in err and afile.read_text() == "x"
