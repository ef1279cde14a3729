"""Every entry point against the hostile corpus of ``tests/hostile.py``: the data reader, the
feature extractor, Predictor.predict / explain, the CLIs, the Gradio handler and upload route,
and the Streamlit pages. Bad input must end as an InputError (a CLI: exit code 2 and one
``error: ...`` line; a UI: a message) naming the problem, never as a traceback, and user text
must never reach HTML unescaped. Crafted checkpoints and weights never run pickled code.

Datasets are built once per module; models are the tiny_checkpoints (2 epochs on tiny_data).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import hostile as H
from dashboard import gradio_app
from mmgenre.__main__ import main as mmgenre_main
from mmgenre.data import MMIMDb, load_poster
from mmgenre.encoders import build_encoder, default_encoder
from mmgenre.errors import EncoderUnavailableError, InputError
from mmgenre.features import extract_features
from mmgenre.genres import GENRES
from mmgenre.predict import Predictor
from train.__main__ import main as train_main

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "dashboard" / "app.py")
UI_MODELS = ("image_only", "text_only", "tfidf_logreg")
POSTERS, PLOTS = H.cases("poster"), H.cases("plot")
INPUTS = POSTERS + PLOTS


def _ids(cases):
    return [c.name for c in cases]


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a busy two-core machine two threads made each forward ~50x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def per_case(tmp_path_factory) -> dict[str, H.Installed]:
    """One dataset per case (a clean 24-movie base holding that case only)."""
    root = tmp_path_factory.mktemp("hostile_cases")
    base = H.make_base(root / "_base")
    return {c.name: H.build_case_dataset(c, base, root / c.name) for c in H.CASES}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[Path, dict[str, H.Installed]]:
    """One dataset holding every non-fatal case, each on its own movie."""
    root = tmp_path_factory.mktemp("hostile_all") / "data"
    return root, H.build_hostile_dataset(root, normal_every=1)


@pytest.fixture(scope="module")
def poster_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile_posters")

    def get(case: H.Case) -> Path:
        path = folder / f"{case.name}.jpeg"
        if not path.exists():
            path.write_bytes(case.poster_bytes())
        return path
    return get


@pytest.fixture(scope="module")
def ckpts(tiny_checkpoints, tmp_path_factory) -> Path:
    """A checkpoints folder with the three cheap models the UIs are tested with."""
    out = tmp_path_factory.mktemp("hostile_ui_checkpoints")
    for m in UI_MODELS:
        shutil.copytree(tiny_checkpoints / m, out / m)
    return out


@pytest.fixture(scope="module")
def predictors(ckpts) -> dict[str, Predictor]:
    return {m: Predictor.from_checkpoint(ckpts / m) for m in UI_MODELS}


@pytest.fixture(scope="module")
def hostile_features(hostile, tmp_path_factory):
    """Text and image features of the hostile dataset, read and extracted with skip_bad."""
    root, _ = hostile
    ds = MMIMDb.load(root, skip_bad=True)
    cache = tmp_path_factory.mktemp("hostile_cache")
    feats = {k: extract_features(ds, k, default_encoder(k), cache_root=cache, skip_bad=True, progress=False)
             for k in ("text", "image")}
    return ds, feats, cache


def _input_error(fn, expected: str, path: Path | str | None = None) -> InputError:
    """Call ``fn``: it must raise an InputError whose message holds ``expected`` and names ``path``."""
    with pytest.raises(InputError) as info:
        fn()
    msg = str(info.value)
    assert expected in msg, msg
    assert path is None or str(path) in msg, f"{path} not named in: {msg}"
    return info.value


# ------------------------------------------------------------------------------ data reader
@pytest.mark.parametrize("case", H.CASES, ids=_ids(H.CASES))
def test_reader(case, per_case):
    inst = per_case[case.name]
    for skip_bad in (False, True):
        if case.ok:
            ds = MMIMDb.load(inst.root, skip_bad=skip_bad, check_images=True)
            if case.check is not None and case.kind != "poster":
                case.check(ds.movies.get(inst.movie_id), ds.report)
            assert not ds.report.bad_files
        elif not skip_bad or case.fatal:
            _input_error(lambda: MMIMDb.load(inst.root, skip_bad=skip_bad, check_images=True), case.error, inst.path)
        else:  # skipped and listed, the rest of the data kept
            ds = MMIMDb.load(inst.root, skip_bad=True, check_images=True)
            assert ds.report.skipped_ids == [inst.skipped_id]
            assert [(p, case.error in r) for p, r in ds.report.bad_files] == [(str(inst.path), True)]
            assert len(ds) >= 23 and inst.skipped_id not in ds and "1 bad files" in ds.report.summary()


@pytest.mark.parametrize("case", POSTERS, ids=_ids(POSTERS))
def test_poster_as_uploaded_bytes(case):
    if case.ok:
        img = load_poster(case.poster_bytes(), name="upload.jpeg")
        assert img.mode == "RGB" and min(img.size) >= 16
        if case.check is not None:
            case.check(img)
    else:
        _input_error(lambda: load_poster(case.poster_bytes(), name="upload.jpeg"), case.error, "upload.jpeg")


# ------------------------------------------------------------------------------ feature extractor
@pytest.mark.parametrize("case", INPUTS, ids=_ids(INPUTS))
def test_feature_extractor(case, per_case, hostile, hostile_features, tmp_path):
    _, installed = hostile
    ds, feats, _ = hostile_features
    inst = installed[case.name]
    if case.kind == "plot":
        if not case.ok:   # the reader skipped it: no features for it
            assert inst.movie_id not in ds and inst.movie_id not in feats["text"].ids
            return
        row = feats["text"].rows([inst.movie_id])[0]
        assert feats["text"].present[row] == bool(ds[inst.movie_id].plot)
        assert np.isfinite(feats["text"].pooled[row]).all()
        return
    row = feats["image"].rows([inst.movie_id])[0]
    pooled = np.asarray(feats["image"].pooled[row], dtype=np.float32)
    if case.ok:
        assert feats["image"].present[row] and np.isfinite(pooled).all() and np.abs(pooled).sum() > 0
        return
    # skip_bad: the poster is dropped (the movie keeps its plot) and listed with the reason
    assert not feats["image"].present[row] and not pooled.any()
    assert any(p == str(inst.path) and case.error in r for p, r in feats["image"].meta["bad_files"])
    # strict: an InputError naming the poster, before anything is written
    strict = per_case[case.name]
    _input_error(lambda: extract_features(MMIMDb.load(strict.root), "image", default_encoder("image"),
                                          cache_root=tmp_path, progress=False), case.error, strict.path)
    assert not list(tmp_path.rglob("meta.json"))


# ------------------------------------------------------------------------------ Predictor
def _check_prediction(result: dict) -> None:
    probs = result["probabilities"]
    assert set(probs) == set(GENRES) and all(0.0 <= p <= 1.0 for p in probs.values())


@pytest.mark.parametrize("case", INPUTS, ids=_ids(INPUTS))
def test_predict_and_explain(case, predictors, poster_file):
    if case.kind == "poster":
        model, path = predictors["image_only"], poster_file(case)
        inputs = [{"poster": path}, {"poster": case.poster_bytes()}]
    else:
        model, path = predictors["text_only"], None
        inputs = [{"plot": case.api_value()}]
    for kw in inputs:
        if case.api_error is not None:
            named = path if "poster" in kw and isinstance(kw["poster"], Path) else None
            _input_error(lambda: model.predict(**kw), case.api_error, named)
            _input_error(lambda: model.explain(**kw, genres=["Drama"], faithfulness=False, ig_steps=4),
                         case.api_error, named)
            continue
        result = model.predict(**kw)
        _check_prediction(result)
        assert result["used"]["poster" if case.kind == "poster" else "plot"]
    if case.api_error is not None:
        return
    exp = model.explain(**inputs[0], genres=["Drama"], faithfulness=False, ig_steps=4)
    if case.kind == "poster":
        cam = exp.poster_cam["Drama"]
        assert cam.shape == exp.poster.shape[:2] and np.isfinite(cam).all() and 0 <= cam.min() <= cam.max() <= 1
        if case.name == "jpeg_exif_rotated":
            assert exp.poster.shape[:2] == (96, 64)   # the CAM lies on the upright poster
    else:
        assert len(exp.words) == len(exp.token_scores["Drama"]) and np.isfinite(exp.token_scores["Drama"]).all()
    json.dumps(exp.to_dict())   # serialisable, whatever the input


# ------------------------------------------------------------------------------ CLIs
def _cli(main, argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_error_line(code: int, err: str, expected: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and "Traceback" not in err, err
    assert lines and lines[-1].startswith("error: ") and expected in lines[-1], err
    assert sum(ln.startswith("error: ") for ln in lines) == 1


def _argv_plot(case: H.Case) -> tuple[str, str | None]:
    """The plot as a command line or a text box carries it, and the outcome then expected."""
    value = case.payload
    if isinstance(value, H.Raw):     # what Python makes of non-UTF-8 bytes in argv
        return os.fsdecode(value.data), case.api_error
    if isinstance(value, str):
        return value, case.api_error
    return json.dumps(value), None   # [] or 42 typed by a person is text


@pytest.mark.parametrize("case", INPUTS, ids=_ids(INPUTS))
def test_cli_predict_and_explain(case, ckpts, poster_file, tmp_path, capsys):
    if case.kind == "poster":
        args, expected = ["--poster", poster_file(case)], case.api_error
        predict_model, explain_args = "image_only", ["--poster", poster_file(case), "--plot", "a heist and a murder"]
    else:
        text, expected = _argv_plot(case)
        args, predict_model, explain_args = ["--plot", text], "text_only", ["--plot", text]
    code, out, err = _cli(mmgenre_main, ["predict", "--checkpoint", ckpts / predict_model, *args], capsys)
    if expected is None:
        assert code == 0, err
        _check_prediction(json.loads(out))
    else:
        _assert_one_error_line(code, err, expected)
    # explain with the tf-idf model: the inputs are validated the same way and it is cheap
    out_dir = tmp_path / "explanation"
    code, out, err = _cli(mmgenre_main, ["explain", "--checkpoint", ckpts / "tfidf_logreg", *explain_args,
                                         "--out", out_dir, "--genres", "Drama"], capsys)
    if expected is None:
        assert code == 0, err
        files = json.loads(out)["files"]
        assert "explanation.json" in files and ("poster.png" in files) == (case.kind == "poster")
        page = (out_dir / "plot.html").read_text(encoding="utf-8")
        assert "<script>alert" not in page and "<img src=x" not in page
    else:
        _assert_one_error_line(code, err, expected)
        assert not (out_dir / "explanation.json").exists()


@pytest.mark.parametrize("case", H.CASES, ids=_ids(H.CASES))
def test_cli_validate(case, per_case, capsys):
    inst = per_case[case.name]
    code, out, err = _cli(mmgenre_main, ["validate", "--data", inst.root, "--check-images"], capsys)
    if case.ok:
        assert code == 0, err
        assert json.loads(out)["n_movies"] >= 24
    else:
        _assert_one_error_line(code, err, case.error)
        assert str(inst.path) in err
    code, out, err = _cli(mmgenre_main, ["validate", "--data", inst.root, "--check-images", "--skip-bad"], capsys)
    if case.fatal:
        _assert_one_error_line(code, err, case.error)
    else:
        assert code == 0, err
        report = json.loads(out)
        assert (inst.skipped_id in report["skipped_ids"]) == (not case.ok)


@pytest.fixture(scope="module")
def hostile_training(hostile, hostile_features, tmp_path_factory):
    """``python -m train --skip-bad`` on the hostile dataset (features from hostile_features)."""
    root, _ = hostile
    ds, _, cache = hostile_features
    out = tmp_path_factory.mktemp("hostile_train")
    code = train_main(["--data", str(root), "--models", "image_only,tfidf_logreg", "--out", str(out), "--cache",
                       str(cache), "--skip-bad", "--epochs", "2", "--n-boot", "0", "--no-progress"])
    return code, out, ds


@pytest.mark.parametrize("case", H.CASES, ids=_ids(H.CASES))
def test_cli_train(case, per_case, hostile, hostile_training, tmp_path, capsys):
    inst = per_case[case.name]
    if case.ok:   # trained on, with every other ok case, in one run over the hostile dataset
        code, out, ds = hostile_training
        assert code == 0
        movie = hostile[1][case.name].movie_id
        assert movie in ds
        for m in ("image_only", "tfidf_logreg"):
            cfg = json.loads((out / m / "config.json").read_text())
            assert cfg["data"]["fingerprint"] == ds.fingerprint()
        return
    # tfidf_logreg reads no poster (and the reader does not decode posters): a bad poster only
    # stops models that read posters.
    model = "image_only" if case.kind == "poster" else "tfidf_logreg"
    code, _, err = _cli(train_main, ["--data", inst.root, "--models", model, "--out", tmp_path / "out",
                                     "--cache", tmp_path / "cache", "--epochs", "1", "--n-boot", "0",
                                     "--no-progress"], capsys)
    _assert_one_error_line(code, err, case.error)
    assert str(inst.path) in err and not (tmp_path / "out" / model).exists()


def test_real_cli_processes_print_one_error_line(per_case, ckpts, poster_file):
    """The same through ``python -m`` (both CLIs): exit code 2, one line, no traceback."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    runs = {
        "bomb poster": (["mmgenre", "predict", "--checkpoint", ckpts / "image_only",
                         "--poster", poster_file(H.BY_NAME["bomb_header_over_pil_limit"])], "too large"),
        "huge int json": (["train", "--data", per_case["json_huge_integer"].root, "--models", "tfidf_logreg",
                           "--out", per_case["json_huge_integer"].root / "out"], "corrupt JSON"),
    }
    procs = {k: subprocess.Popen([sys.executable, "-m", *map(str, argv)], cwd=REPO, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, (argv, _) in runs.items()}
    for key, proc in procs.items():
        out, err = proc.communicate(timeout=240)
        _assert_one_error_line(proc.returncode, err, runs[key][1])
        assert out == ""


# ------------------------------------------------------------------------------ Gradio
def _gradio_text(case: H.Case) -> tuple[str, str | None]:
    text, expected = _argv_plot(case)
    if len(text) > gradio_app.MAX_PLOT_INPUT:
        return text, "too long"
    return text, expected


@pytest.mark.parametrize("case", INPUTS, ids=_ids(INPUTS))
def test_gradio_handler(case, ckpts, poster_file):
    import gradio as gr

    if case.kind == "poster":
        poster, plot, expected = str(poster_file(case)), "a heist and a murder", case.api_error
    else:
        (plot, expected), poster = _gradio_text(case), None
    run = gradio_app.predict(poster, plot, "tfidf_logreg", gradio_app.TOP_GENRE, ckpts)
    if expected is not None:
        with pytest.raises(gr.Error) as info:
            list(run)
        msg = info.value.message
        assert expected in msg.replace("&#x27;", "'").replace("&quot;", '"') and "<script" not in msg
        return
    updates = list(run)
    assert len(updates) == 2
    probs, overlay, words, notes = updates[-1]
    assert set(probs) == set(GENRES)
    for html in (words, notes):
        assert not re.search(r"<(script|img)\b", html) and 'href="javascript' not in html, html[:500]


def test_gradio_handler_with_a_poster_reading_model(ckpts, poster_file):
    """Grad-CAM overlays on the odd-but-valid posters (the hostile ones are refused above)."""
    for name in ("png_alpha_transparent", "png_16bit_grey", "jpeg_exif_rotated", "gif_animated"):
        path = poster_file(H.BY_NAME[name])
        *_, (probs, overlay, words, notes) = gradio_app.predict(str(path), None, "image_only", "Drama", ckpts)
        assert set(probs) == set(GENRES) and overlay is not None
        assert overlay.size == load_poster(path).size, name


def test_gradio_examples_survive_hostile_posters(hostile):
    """build_demo reads example posters from the data folder: broken ones must be skipped, not
    stop the app from starting."""
    root, _ = hostile
    examples = gradio_app.examples_from_data(root, n=50)
    assert all(e[0].mode == "RGB" for e in examples)


@pytest.fixture(scope="module")
def gradio_server(ckpts, tmp_path_factory):
    temp = tmp_path_factory.mktemp("gradio_uploads")
    old = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(temp)
    from dashboard.serve import free_port
    demo = gradio_app.build_demo(ckpts, None)
    _, url, _ = demo.launch(**gradio_app.launch_kwargs(prevent_thread_lock=True, server_name="127.0.0.1",
                                                       server_port=free_port(), quiet=True))
    try:
        yield url, temp
    finally:
        demo.close()
        if old is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = old


def test_gradio_uploads_stay_in_the_temp_folder_and_are_capped(gradio_server, tmp_path):
    import httpx

    url, temp = gradio_server
    escape = tmp_path / "escaped.jpeg"
    jpeg = H.BY_NAME["plain_jpeg"].poster_bytes()
    for name in (f"../../../../..{escape}", str(escape), "..\\..\\evil.jpeg", "a\x00b.jpeg"):
        r = httpx.post(f"{url}gradio_api/upload", files={"files": (name, jpeg, "image/jpeg")}, timeout=30)
        if r.status_code == 200:
            stored = Path(r.json()[0]).resolve()
            assert stored.is_relative_to(temp.resolve()) and stored.read_bytes() == jpeg, stored
        else:
            assert r.status_code in (400, 422), r.text
    assert not escape.exists()
    big = H.BY_NAME["over_upload_limit"].poster_bytes()
    r = httpx.post(f"{url}gradio_api/upload", files={"files": ("big.jpeg", big, "image/jpeg")}, timeout=60)
    assert r.status_code == 413, (r.status_code, r.text[:200])
    assert not [p for p in temp.rglob("big*")]


UPLOAD_CASES = [c for c in POSTERS if not c.ok and c.name != "over_upload_limit"]  # that one: 413 above


# Known defect, kept visible: gr.Image(type="filepath") opens the upload with PIL before our
# handler runs, so for a non-image upload the user sees Gradio's generic error, not mmgenre's
# message (the app keeps answering). Fix: a gr.File input with our own preview.
GRADIO_DECODES_FIRST: set[str] = set()  # was 8 cases before dashboard.gradio_app.PosterInput
UPLOAD_PARAMS = [pytest.param(c, id=c.name, marks=pytest.mark.xfail(
    strict=True, reason="gr.Image decodes non-image uploads before mmgenre validates them"))
    if c.name in GRADIO_DECODES_FIRST else pytest.param(c, id=c.name) for c in UPLOAD_CASES]


@pytest.mark.parametrize("case", UPLOAD_PARAMS)
def test_gradio_hostile_upload_gets_the_problem_named(case, gradio_server, poster_file):
    """Through the public API: the user reads mmgenre's message (not Gradio's generic "the app
    raised an exception"), and the app keeps answering."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    url, _ = gradio_server
    client = Client(url, verbose=False, download_files=False)
    with pytest.raises(AppError) as info:
        client.predict(handle_file(str(poster_file(case))), "", "image_only", gradio_app.TOP_GENRE,
                       api_name="/predict")
    assert case.error in str(info.value), f"the user is told: {info.value}"
    result = client.predict(None, f"{H.SCRIPT} heist murder", "tfidf_logreg", gradio_app.TOP_GENRE,
                            api_name="/predict")
    assert "<script>" not in result[2] and "&lt;script&gt;" in result[2]


# ------------------------------------------------------------------------------ crafted checkpoints
CKPT_PAIRS = [(c, m) for c in H.CHECKPOINT_CASES for m in ("image_only", "tfidf_logreg") if c.applies_to(m)]


@pytest.mark.parametrize("case,model", CKPT_PAIRS, ids=[f"{c.name}-{m}" for c, m in CKPT_PAIRS])
def test_crafted_checkpoint(case, model, ckpts, tmp_path, capsys):
    import gradio as gr

    root = tmp_path / "checkpoints"
    path = root / model
    shutil.copytree(ckpts / model, path)
    case.mutate(path)
    _input_error(lambda: Predictor.from_checkpoint(path), case.error, path)
    code, _, err = _cli(mmgenre_main, ["predict", "--checkpoint", path, "--plot", "a heist"], capsys)
    _assert_one_error_line(code, err, case.error)
    with pytest.raises(gr.Error):
        list(gradio_app.predict(None, "a heist", model, gradio_app.TOP_GENRE, root))
    assert not (root / "PWNED").exists(), "pickled code ran"


@pytest.mark.parametrize("kind,name,suffix", [
    ("image", "efficientnet-lite0", ".pt"), ("image", "efficientnet-lite0", ".pth"), ("image", "resnet50", ".pth"),
    ("detector", "yolov8n", ".pt"), ("detector", "fasterrcnn", ".pth"), ("text", "minilm", "/")])
def test_pickled_encoder_weights_never_run(kind, name, suffix, tmp_path):
    marker = tmp_path / "PWNED"
    if suffix == "/":   # a Hugging Face folder whose weights are a pickle
        from mmgenre.encoders.text import minilm_dir
        weights = tmp_path / "hf"
        shutil.copytree(minilm_dir(), weights)
        for f in weights.glob("*.safetensors"):
            f.unlink()
        (weights / "pytorch_model.bin").write_bytes(H.torch_pickle_payload(marker))
    else:
        weights = tmp_path / f"evil{suffix}"
        weights.write_bytes(H.torch_pickle_payload(marker) if suffix == ".pt" else H.plain_pickle_payload(marker))
    with pytest.raises((InputError, EncoderUnavailableError)) as info:
        build_encoder(kind, name, weights=weights)
    assert str(weights) in str(info.value)
    assert not marker.exists(), "pickled code ran"


def test_checkpoint_naming_pickled_encoder_weights(ckpts, tmp_path):
    path = tmp_path / "image_only"
    shutil.copytree(ckpts / "image_only", path)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(H.torch_pickle_payload(tmp_path / "PWNED"))
    cfg = json.loads((path / "config.json").read_text())
    cfg["encoders"]["image"]["weights"] = str(evil)
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="cannot be read as tensors"):
        Predictor.from_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()


# ------------------------------------------------------------------------------ Streamlit
MARKDOWN_KINDS = ("markdown", "caption", "title", "header", "subheader", "error", "warning", "info", "success")
_RAW_MD = re.compile(r"(?<!\\)<(script|img)\b|\]\(javascript:")
_RAW_HTML = re.compile(r"<(script|img)\b|href=\"javascript:")


def _assert_nothing_raw(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    for kind in MARKDOWN_KINDS:
        for el in at.get(kind):
            assert not _RAW_MD.search(str(el.value)), f"unescaped user markup in st.{kind}: {el.value[:300]}"
    for el in at.get("html"):
        assert not _RAW_HTML.search(el.value), f"unescaped user markup in st.html: {el.value[:300]}"


def _page(page: str, data: Path | str, checkpoints: Path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MMGENRE_DATA", str(data))
    monkeypatch.setenv("MMGENRE_CHECKPOINTS", str(checkpoints))
    monkeypatch.delenv("MMGENRE_LOCK_PATHS", raising=False)
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.switch_page(f"app_pages/{page}.py").run()
    return at


@pytest.fixture(scope="module")
def dataset_page(tmp_path_factory, ckpts):
    """The Dataset page on a dataset holding every non-fatal case except the posters (which the
    gallery test below covers one by one)."""
    root = tmp_path_factory.mktemp("hostile_no_posters") / "data"
    installed = H.build_hostile_dataset(root, H.cases("plot", "title", "record", "split", fatal=False))
    mp = pytest.MonkeyPatch()
    try:
        yield _page("dataset", root, ckpts, mp), installed
    finally:
        mp.undo()


NON_POSTER = H.cases("plot", "title", "record", "split", fatal=False)


@pytest.mark.parametrize("case", NON_POSTER, ids=_ids(NON_POSTER))
def test_streamlit_dataset_page(case, dataset_page):
    at, installed = dataset_page
    _assert_nothing_raw(at)
    if case.ok:
        return
    bad = at.dataframe[-1].value   # the "bad files" table of the validation report
    rows = dict(zip(bad["file"], bad["problem"]))
    inst = installed[case.name]
    assert str(inst.path) in rows and case.error in rows[str(inst.path)]


def test_streamlit_gallery_with_hostile_posters(hostile, ckpts, monkeypatch):
    """Each poster case alone in the gallery (filtered by title): the page must not crash, and a
    poster mmgenre refuses must not be handed to PIL by st.image."""
    root, _ = hostile
    at = _page("dataset", root, ckpts, monkeypatch)
    broken = {}
    for case in POSTERS:
        at.text_input(key="gallery_query").input(case.name).run()
        if at.exception:
            broken[case.name] = at.exception[0].value.splitlines()[-1][:120]
        else:
            _assert_nothing_raw(at)
    assert not broken, ("dataset page gallery (st.image on the raw poster file) crashes on: "
                        + "; ".join(f"{k}: {v}" for k, v in broken.items()))


@pytest.mark.parametrize("case", H.cases(fatal=True), ids=_ids(H.cases(fatal=True)))
def test_streamlit_dataset_page_unusable_split_file(case, per_case, ckpts, monkeypatch):
    at = _page("dataset", per_case[case.name].root, ckpts, monkeypatch)
    _assert_nothing_raw(at)
    shown = " ".join(e.value for e in [*at.error, *at.warning]).replace("\\", "")
    assert case.error in shown


MOVIE_CASES = H.cases("plot", "title", ok=True)


@pytest.fixture(scope="module")
def movie_page(hostile, ckpts, tmp_path_factory):
    """The Movie page on the hostile data (all splits listed), explaining with tf-idf."""
    root, installed = hostile
    only_tfidf = tmp_path_factory.mktemp("hostile_movie_ckpts")
    shutil.copytree(ckpts / "tfidf_logreg", only_tfidf / "tfidf_logreg")
    mp = pytest.MonkeyPatch()
    try:
        at = _page("movie", root, only_tfidf, mp)
        at.selectbox(key="movie_split").select("all").run()
        yield at, installed
    finally:
        mp.undo()


@pytest.mark.parametrize("case", MOVIE_CASES, ids=_ids(MOVIE_CASES))
def test_streamlit_movie_page(case, movie_page):
    at, installed = movie_page
    at.selectbox(key="movie_id").set_value(installed[case.name].movie_id).run()
    _assert_nothing_raw(at)
    errors = [e.value for e in at.error]
    if case.api_error is not None:   # an empty plot and a plot-only model: said so
        assert len(errors) == 1 and "plot is empty" in errors[0]
    else:
        assert not errors, errors
        assert at.get("html"), "the plot's words are shown highlighted"
    if case.kind == "title":
        assert at.header and H.SCRIPT not in at.header[0].value


def test_streamlit_compare_page_with_crafted_checkpoints(ckpts, tmp_path, monkeypatch):
    root = tmp_path / "checkpoints"
    shutil.copytree(ckpts, root)
    for case in H.CHECKPOINT_CASES:
        if case.applies_to("image_only"):
            shutil.copytree(ckpts / "image_only", root / case.name)
            case.mutate(root / case.name)
    at = _page("compare", "", root, monkeypatch)
    _assert_nothing_raw(at)
    assert not (tmp_path / "PWNED").exists()


# ------------------------------------------------------------------------------ concurrent users
def _in_threads(fn, args_list) -> tuple[list, list[str]]:
    import threading
    results, errors = [None] * len(args_list), []

    def run(i, args):
        try:
            results[i] = fn(*args)
        except Exception as exc:  # noqa: BLE001 - every failure is reported
            errors.append(repr(exc)[:200])
    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(args_list)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_one_detector_shared_by_concurrent_requests():
    """The Haar detector is one object per process (predictors and the explainer share it);
    OpenCV's cascades are not re-entrant, so calls on posters of different sizes must not mix."""
    from PIL import Image

    det = build_encoder("detector", "haar")
    rng = np.random.default_rng(0)
    posters = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
               for w, h in ((300, 450), (120, 180), (200, 300), (64, 96))]
    expected = [det.features(p) for p in posters]
    jobs = [(posters[k % 4],) for k in range(40)]
    results, errors = _in_threads(det.features, jobs)
    assert not errors, errors[:3]
    assert all(np.array_equal(r, expected[k % 4]) for k, r in enumerate(results))


def test_concurrent_explanations_by_models_sharing_encoders(tiny_checkpoints, tiny_data):
    """gmu and early_fusion share one MiniLM and one EfficientNet (Predictor caches encoders);
    explanations hook into them, so two users explaining with the two models at once must get
    the same answers as one after the other."""
    preds = {m: Predictor.from_checkpoint(tiny_checkpoints / m) for m in ("gmu", "early_fusion")}
    assert preds["gmu"].encoders["text"] is preds["early_fusion"].encoders["text"]
    movies = [m for m in MMIMDb.load(tiny_data).split("test") if m.has_poster and m.has_plot][:2]
    jobs = [(name, movie) for name in preds for movie in movies]

    def explain(name, movie):
        return preds[name].explain(poster=movie.poster_path, plot=movie.plot, genres=["Drama"],
                                   faithfulness=False, ig_steps=4)
    expected = [explain(*j) for j in jobs]
    results, errors = _in_threads(explain, jobs * 2)
    assert not errors, errors[:3]
    for got, want in zip(results, expected * 2):
        assert np.array_equal(got.token_scores["Drama"], want.token_scores["Drama"])
        assert np.array_equal(got.poster_cam["Drama"], want.poster_cam["Drama"])
