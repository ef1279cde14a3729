"""Heavy and hostile requests (issue 13): bounded posters through Predictor.explain, a bounded
Gradio queue that answers "busy" when full, time-budgeted explanations, error messages without
server paths or HTML entities (through gradio_client), nginx's per-client limits, and memory
given back after heavy requests. Nothing here is timed; speed is in dashboard/benchmarks/hostile.py.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

import hostile as H
from dashboard import gradio_app
from dashboard.memory import Releaser, release_memory
from dashboard.messages import display_name, has_server_path, public_message
from dashboard.serve import find_nginx, free_port, prepare_nginx, render_nginx_conf
from mmgenre.errors import InputError
from mmgenre.poster import MAX_POSTER_SIDE
from mmgenre.predict import Predictor

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints"
PLOT = "A retired detective hunts a killer through a haunted town."


def _launch(demo):
    _, url, _ = demo.launch(**gradio_app.launch_kwargs(prevent_thread_lock=True, server_name="127.0.0.1",
                                                       server_port=free_port(), quiet=True))
    return url


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> Path:
    """Two shipped checkpoints (a poster model and the plot baseline) and a broken copy."""
    out = tmp_path_factory.mktemp("hostile_request_ckpts")
    for name in ("image_only", "tfidf_logreg"):
        shutil.copytree(SHIPPED / name, out / name)
    shutil.copytree(SHIPPED / "image_only", out / "broken")
    cfg_path = out / "broken" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["head"]["hparams"]["hidden"] = 128          # the weights file holds a 256-wide layer
    cfg_path.write_text(json.dumps(cfg))
    return out


@pytest.fixture(scope="module")
def poster(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hostile_request_poster") / "poster.jpeg"
    path.write_bytes(H.BY_NAME["plain_jpeg"].poster_bytes())
    return path


@pytest.fixture(scope="module")
def server(ckpts, tmp_path_factory):
    """The Gradio demo on a free loopback port, uploads in a temp folder of its own."""
    temp = tmp_path_factory.mktemp("hostile_request_uploads")
    mp = pytest.MonkeyPatch()
    mp.setenv("GRADIO_TEMP_DIR", str(temp))
    demo = gradio_app.build_demo(ckpts, None)
    try:
        yield _launch(demo), temp
    finally:
        demo.close()
        mp.undo()


# ------------------------------------------------------------------------------ bounded posters
def test_big_poster_is_explained_at_a_bounded_size():
    """The 36-Mpx 1-bit PNG through Predictor.explain: the explained poster, its Grad-CAM and the
    deletion test work on the poster reduced at load, not on 6000 x 6000 pixels."""
    p = Predictor.from_checkpoint(SHIPPED / "image_only")
    exp = p.explain(poster=H.png_one_bit(6000), genres=["Drama"])
    assert exp.poster.shape == (MAX_POSTER_SIDE, MAX_POSTER_SIDE, 3)
    assert exp.poster_cam["Drama"].shape == (MAX_POSTER_SIDE, MAX_POSTER_SIDE)
    assert "deletion" in exp.faithfulness and exp.to_dict()["poster_size"] == [MAX_POSTER_SIDE] * 2
    assert set(exp.probabilities) and np.isfinite(list(exp.probabilities.values())).all()


# ------------------------------------------------------------------------------ messages
def test_display_names_and_public_messages():
    assert display_name("/tmp/x/gradio/ab12/empty.jpg") == "empty.jpg"
    assert display_name("..\\..\\evil<script>.jpg") == "evil_script_.jpg"
    assert display_name("a\x00b\u202e.png") == "a_b_.png" and display_name("") == "the poster"
    assert len(display_name("x" * 500 + ".jpg")) == 80
    msg = public_message("checkpoint /srv/app/checkpoints/gmu: weights do not match ('head.w')")
    assert msg == "checkpoint gmu: weights do not match ('head.w')"
    kept = "see https://archive.org/download/mmimdb/mmimdb.tar.gz, 1/8 scale, --out checkpoints/"
    assert public_message(kept) == kept and not has_server_path(kept)
    assert has_server_path("/tmp/mmgenre-serve-x/gradio/abc/empty.jpg: zero-byte")


def _call(url: str, poster: Path | None, model: str, plot: str = "") -> str:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(url, verbose=False, download_files=False)
    with pytest.raises(AppError) as info:
        client.predict(handle_file(str(poster)) if poster else None, plot, model, gradio_app.TOP_GENRE,
                       api_name="/predict")
    return str(info.value)


def test_upload_errors_name_the_file_as_the_visitor_named_it(server, tmp_path):
    url, temp = server
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert _call(url, empty, "image_only") == "empty.jpg: zero-byte file, not an image"
    odd = tmp_path / "<b>my & poster.jpg"
    odd.write_bytes(b"this is not a poster\n" * 10)
    msg = _call(url, odd, "image_only")
    # (gradio drops "<" and ">" from upload names itself; "&" would start an HTML entity)
    assert "my _ poster.jpg: not a readable image" in msg, msg
    assert str(temp) not in msg and tempfile.gettempdir() not in msg and not set("<>&") & set(msg)


def test_error_messages_are_plain_text_without_server_paths(server, ckpts):
    url, _ = server
    msg = _call(url, None, "broken", PLOT)
    assert msg.startswith("checkpoint broken:"), msg
    assert str(ckpts) not in msg and not has_server_path(msg)
    assert "'" in msg and "&#x27;" not in msg and "&lt;" not in msg   # verbatim, not HTML-escaped
    assert "too long" in _call(url, None, "tfidf_logreg", "x" * (gradio_app.MAX_PLOT_INPUT + 1))


def test_rest_routes_that_skip_the_queue_are_closed(server):
    import httpx

    url, _ = server
    r = httpx.post(f"{url}gradio_api/run/predict", json={"data": [None, PLOT, "tfidf_logreg", "Drama"]},
                   timeout=30)
    assert r.status_code == 404, r.text[:300]


# ------------------------------------------------------------------------------ bounded queue
def test_a_full_queue_answers_busy_and_the_app_keeps_serving(ckpts, tmp_path, monkeypatch):
    """One running, one waiting (queue_size=1): a third request is told the queue is full, and
    once the slow one is released every accepted request finishes and new ones are taken."""
    import httpx
    from gradio_client import Client
    from gradio_client.exceptions import AppError
    from gradio_client.utils import QueueError, Status

    started, release = threading.Event(), threading.Event()

    class Slow:
        def predict(self, poster=None, plot=None):
            started.set()
            release.wait(120)          # a safety net only: the test sets it
            raise InputError("slow fake: done")

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    monkeypatch.setattr(gradio_app, "load_predictor", lambda checkpoints, name: Slow())
    demo = gradio_app.build_demo(ckpts, None, queue_size=1, concurrency=1)
    url = _launch(demo)
    try:
        client = Client(url, verbose=False, download_files=False)
        args = (None, PLOT, "tfidf_logreg", gradio_app.TOP_GENRE)
        running = client.submit(*args, api_name="/predict")
        assert started.wait(60), "the first request never started"
        waiting = client.submit(*args, api_name="/predict")
        for _ in range(600):
            if waiting.status().code == Status.IN_QUEUE:
                break
            threading.Event().wait(0.1)
        assert waiting.status().code == Status.IN_QUEUE
        with pytest.raises(QueueError, match="full"):
            client.submit(*args, api_name="/predict").result(timeout=60)
        r = httpx.post(f"{url}gradio_api/call/predict", json={"data": list(args)}, timeout=30)
        assert r.status_code == 503 and "Queue is full" in r.text, r.text[:300]
        release.set()
        for job in (running, waiting):
            with pytest.raises(AppError, match="slow fake: done"):
                job.result(timeout=120)
        with pytest.raises(AppError, match="slow fake: done"):
            client.predict(*args, api_name="/predict")
    finally:
        release.set()
        demo.close()


# ------------------------------------------------------------------------------ time budget
def test_an_expired_budget_returns_probabilities_and_says_the_explanation_was_cut(ckpts, poster):
    updates = list(gradio_app.predict(str(poster), PLOT, "image_only", "Drama", ckpts, budget=0))
    assert len(updates) == 2
    (first, *_), (probs, overlay, words, notes) = updates
    assert first == probs and len(probs) == 23
    assert "Explanation cut short" in notes and "budget" in notes
    full = list(gradio_app.predict(str(poster), PLOT, "image_only", "Drama", ckpts, budget=600))
    assert "cut short" not in full[-1][3] and full[-1][1] is not None


# ------------------------------------------------------------------------------ nginx limits
def test_nginx_config_limits_each_client(tmp_path):
    conf = render_nginx_conf(tmp_path, host="127.0.0.1", port=8000, streamlit_port=8001, gradio_port=8002)
    for line in ("limit_req_zone $mmgenre_work_key zone=mmgenre_predict", "POST    $binary_remote_addr;", "limit_conn_zone $binary_remote_addr",
                 "limit_conn mmgenre_conn", "limit_req zone=mmgenre_pages", "limit_req zone=mmgenre_predict",
                 "limit_req_status 429;", "limit_conn_status 429;", "error_page 503 = @busy;",
                 "location ~ ^/gradio/gradio_api/(queue/join|call/|run/|api/|upload)"):
        assert line in conf, line
    assert "{{" not in conf
    nginx = find_nginx()
    if nginx is None:
        pytest.skip("nginx is not installed: the config was checked as text only")
    path = prepare_nginx(tmp_path, host="127.0.0.1", port=free_port(), streamlit_port=8001, gradio_port=8002)
    r = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------------------ memory
def test_memory_is_released_after_a_heavy_request():
    assert release_memory() in (True, False)
    releaser = Releaser(grown=64 * 2**20)
    assert releaser.after_request()                 # the first call always measures a floor
    assert releaser.wait(1, timeout=60)
    assert not releaser.after_request()             # nothing grew since
    big = np.ones(256 * 2**20 // 8)                 # a heavy request's array, still held
    assert releaser.after_request()
    del big
    assert releaser.wait(2, timeout=60)
