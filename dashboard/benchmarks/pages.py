"""Dashboard response times: every page, cold and warm, and the Gradio predict call.

    python -m dashboard.benchmarks.pages --data ../shared/mmimdb-lite --checkpoints checkpoints
        [--repeats 5] [--browser]

* Streamlit (``streamlit.testing.v1.AppTest``, in process): the time of one script run of each
  page, the first (cold: reads the data, imports torch, loads models, explains) and then
  ``--repeats`` reruns (warm: what a user waits for after the page's first load), plus typical
  interactions (another gallery page, another genre curve, another pair of models, another
  model to explain, another movie).
* Gradio (``gradio_client`` against ``build_demo()`` on a free port): one predict call with a
  plot only and one with poster + plot, per model (each includes its explanation).
* ``--browser``: ``python -m dashboard.serve`` plus headless chromium; the time from navigation
  until the page has finished drawing (script run + transfer + browser rendering), warm.

The budget is 3 s per page after its first load (on the 2-core reference machine).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from dashboard.core import PAGES, model_modalities

BUDGET_S = 3.0
# Sidebar links (URL path endings) and the title each page shows, the default page last (the
# run starts on it; its link is the bare origin).
NAV = tuple((f"/{p.url_path}", p.title) for p in PAGES[1:]) + ((":{port}/", PAGES[0].title),)
APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, float | None, list[float]]] = []

    def add(self, name: str, cold: float | None, warm: list[float]) -> None:
        self.rows.append((name, cold, warm))
        self.print_row(name, cold, warm)

    @staticmethod
    def header() -> None:
        print(f"{'what':<58}{'cold s':>8}{'warm median':>13}{'warm max':>10}  <3 s")

    @staticmethod
    def print_row(name: str, cold: float | None, warm: list[float]) -> None:
        c = f"{cold:8.2f}" if cold is not None else f"{'-':>8}"
        if warm:
            ok = "yes" if max(warm) < BUDGET_S else "NO"
            print(f"{name:<58}{c}{statistics.median(warm):13.2f}{max(warm):10.2f}  {ok}", flush=True)
        else:
            print(f"{name:<58}{c}{'-':>13}{'-':>10}", flush=True)


def _check(at) -> None:
    if at.exception:
        raise RuntimeError(f"page raised: {at.exception[0].value}")


def bench_streamlit(report: Report, data: str, checkpoints: str, repeats: int) -> None:
    from streamlit.testing.v1 import AppTest

    from mmgenre.analysis import available_checkpoints

    os.environ["MMGENRE_DATA"] = data
    os.environ["MMGENRE_CHECKPOINTS"] = checkpoints
    models = available_checkpoints(checkpoints)
    at = AppTest.from_file(str(APP), default_timeout=900)
    first = _timed(at.run)  # the default page (dataset), cold

    def page(name: str, cold: float | None = None) -> None:
        at.switch_page(f"app_pages/{name}.py")
        t = _timed(at.run)
        _check(at)
        report.add(f"page {name}", t if cold is None else cold, [_timed(at.run) for _ in range(repeats)])

    def interaction(name: str, change, n: int = repeats) -> None:
        """``change(i)`` sets widgets for run i; the first run is cold (new computation)."""
        times = []
        for i in range(n + 1):
            change(i)
            times.append(_timed(at.run))
            _check(at)
        report.add(name, times[0], times[1:])

    page("dataset", cold=first)
    interaction("  dataset: next gallery page", lambda i: at.get("pagination")[0].set_value(2 + i % 3)
                if at.get("pagination") else None)
    interaction("  dataset: co-occurrence of another split",
                lambda i: at.selectbox(key="cooc_split").select(["train", "dev", "test"][i % 3]))
    page("compare")
    interaction("  compare: curves for another genre",
                lambda i: at.selectbox(key="curve_genre").select(["Comedy", "Horror", "Drama"][i % 3]))
    if len(models) >= 3:
        pairs = [(a, b) for a in models for b in models if a != b]
        interaction("  compare: paired bootstrap, new pair (cold) / seen pair",
                    lambda i: (at.selectbox(key="paired_a").select(pairs[0 if i else 0][0]),
                               at.selectbox(key="paired_b").select(pairs[0 if i else 0][1])))
        # The first change above computes a new test; later runs reuse it (st.cache_data).
    page("movie")
    explainable = models[:]
    for m in explainable:
        interaction(f"  movie: explain with {m}", lambda i, m=m: at.selectbox(key="explain_model").select(m),
                    n=min(2, repeats))
    fusion = [m for m in models if m in ("gmu", "cross_attention")] or models
    at.selectbox(key="explain_model").select(fusion[0])
    at.run()
    if len(at.selectbox(key="movie_id").options) > repeats + 1:
        # Movies not seen before: each one's explanation is computed on selection.
        ids = [_option_id(at, k) for k in range(1, repeats + 1)]
        fresh = []
        for imdb_id in ids:
            at.selectbox(key="movie_id").set_value(imdb_id)
            fresh.append(_timed(at.run))
            _check(at)
        report.add(f"  movie: another movie, {fusion[0]} (uncached explanation, each)", None, fresh)
        at.selectbox(key="movie_id").set_value(ids[0])
        report.add("  movie: back to a movie already explained", None,
                   [_timed(at.run) for _ in range(repeats)])
    at.segmented_control(key="browse_mode").set_value("errors")
    at.run()
    interaction("  movie: browse errors (false positives/negatives)",
                lambda i: at.selectbox(key="err_kind").set_value(["false_positive", "false_negative"][i % 2]))
    page("predict")


def _option_id(at, k: int) -> str:
    """The imdb id of the k-th movie option (the selectbox's options are labels 'Title · id')."""
    return str(at.selectbox(key="movie_id").options[k]).rsplit("· ", 1)[-1].strip()


def bench_gradio(report: Report, data: str, checkpoints: str, repeats: int) -> None:
    import socket

    from gradio_client import Client, handle_file

    from dashboard.gradio_app import TOP_GENRE, build_demo, launch_kwargs
    from mmgenre.analysis import available_checkpoints
    from mmgenre.data import MMIMDb

    ds = MMIMDb.load(data, skip_bad=True)
    movies = [m for m in ds.split("test") if m.has_poster and m.has_plot][: repeats + 1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = build_demo(checkpoints, None)
    _, url, _ = demo.launch(**launch_kwargs(prevent_thread_lock=True, server_name="127.0.0.1",
                                            server_port=port, quiet=True))
    try:
        client = Client(url, verbose=False, download_files=False)

        def job(*args) -> tuple[float, float]:
            """(seconds to the probabilities, seconds to the whole explanation)."""
            t0 = time.perf_counter()
            j = client.submit(*args, api_name="/predict")
            first = None
            while not j.done():
                if first is None and j.outputs():
                    first = time.perf_counter() - t0
                time.sleep(0.01)
            j.result()
            total = time.perf_counter() - t0
            return (total if first is None else first), total

        for model in available_checkpoints(checkpoints):
            poster_only = bool(model_modalities(model)) and model_modalities(model) <= {"image", "detector"}
            for what, poster in (("plot only", False), ("poster + plot", True)):
                if poster_only and not poster:
                    continue  # the model refuses a plot without a poster
                runs = [job(handle_file(str(m.poster_path)) if poster else None, m.plot, model, TOP_GENRE)
                        for m in movies]
                report.add(f"gradio {model}, {what}: probabilities", runs[0][0], [r[0] for r in runs[1:]])
                report.add(f"gradio {model}, {what}: + explanation", runs[0][1], [r[1] for r in runs[1:]])
    finally:
        demo.close()


def bench_browser(report: Report, data: str, checkpoints: str, repeats: int) -> None:
    from dashboard.screenshots import SHOTS, Browser, find_chromium
    from dashboard.serve import Server, find_nginx, free_port

    chrome = find_chromium()
    if chrome is None or find_nginx() is None:
        print("--browser needs chromium and nginx (apt-get install -y chromium nginx); skipped")
        return
    port = free_port()
    server = Server(port=port, host="127.0.0.1", streamlit_port=free_port(), gradio_port=free_port(),
                    data=data, checkpoints=checkpoints)
    browser = None
    switch_times: dict[str, list[float]] = {}
    try:
        server.start()
        browser = Browser(chrome)
        base = f"http://127.0.0.1:{port}"
        for name in [p.name for p in PAGES] + ["gradio"]:
            times = []
            for _ in range(repeats + 1):
                browser.set_size(1400)
                t0 = browser.navigate(base + SHOTS[name])
                drawn = browser.wait_ready(600)
                times.append(float("nan") if drawn is None else drawn - t0)
            report.add(f"browser {name}: full page load until drawn", times[0], times[1:])
        # In the app, pages change through the sidebar: no reload, one script run over the websocket.
        browser.navigate(base + "/")
        browser.wait_ready(600)
        for _ in range(repeats):
            for path, title in NAV:
                path = path.format(port=port)
                t0 = time.monotonic()
                browser.evaluate(f"document.querySelector('[data-testid=\"stSidebarNav\"] a[href$=\"{path}\"]')"
                                 ".click()")
                drawn = browser.wait_ready(600, f"document.querySelector('h1').textContent.trim() === '{title}'")
                switch_times.setdefault(title, []).append(float("nan") if drawn is None else drawn - t0)
        for title, times in switch_times.items():
            report.add(f"browser {title}: switch from the sidebar until drawn", None, times)
    finally:
        if browser is not None:
            browser.close()
        server.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="MM-IMDb folder")
    p.add_argument("--checkpoints", default="checkpoints")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip-streamlit", action="store_true")
    p.add_argument("--skip-gradio", action="store_true")
    p.add_argument("--browser", action="store_true", help="also time real page loads in chromium")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    report = Report()
    print(f"budget: {BUDGET_S:.0f} s per page after its first load; {os.cpu_count()} CPU cores")
    Report.header()
    if not args.skip_streamlit:
        bench_streamlit(report, args.data, args.checkpoints, args.repeats)
    if not args.skip_gradio:
        bench_gradio(report, args.data, args.checkpoints, min(args.repeats, 3))
    if args.browser:
        bench_browser(report, args.data, args.checkpoints, min(args.repeats, 3))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
