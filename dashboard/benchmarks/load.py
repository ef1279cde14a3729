"""Load test of the served dashboard: N concurrent predictions through nginx, latency and memory.

    python -m dashboard.benchmarks.load [--checkpoints checkpoints] [--data DIR] [--requests 50]
        [--model NAME] [--plot-only] [--threads N] [--timeout 900]

Starts ``python -m dashboard.serve`` on free ports of 127.0.0.1 (nginx in front of Streamlit and
Gradio), waits until it answers, then submits ``--requests`` predictions at once to the Gradio
app behind the proxy (``/gradio/``, via ``gradio_client``), each with a poster and a plot of a
test movie (``--data``; generated ones without it). Every request is a full handler call: the
probabilities first, then the explanation (Grad-CAM, word attributions, faithfulness).

Reports per request the time to the probabilities and to the explanation (p50 / p95 / max), the
failures, whether the queue held them all (Gradio queue ``max_size`` 64, ``concurrency_limit``
2), and the resident memory (RSS) of the server processes, sampled every 0.2 s with psutil
(idle, peak, per process). Bounded: exactly ``--requests`` calls, a hard ``--timeout`` after
which everything is stopped; only 127.0.0.1 is contacted; the server is always stopped.
Exit code 0 when every request succeeded within the deadline, else 1.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
SAMPLE_S = 0.2


@dataclass
class Outcome:
    first_s: float | None = None     # submit -> probabilities
    total_s: float | None = None     # submit -> explanation (the final update)
    error: str | None = None


@dataclass
class MemorySampler:
    """Samples the summed RSS of a process tree in a thread; keeps the peak and per-name peaks."""

    root_pid: int
    samples: list[float] = field(default_factory=list)
    per_process: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _tree(self):
        import psutil
        try:
            root = psutil.Process(self.root_pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def sample(self) -> float:
        import psutil
        total = 0.0
        for p in self._tree():
            try:
                rss = p.memory_info().rss / 2**20
                name = _role(p.cmdline())
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total += rss
            self.per_process[name] = max(self.per_process.get(name, 0.0), rss)
        self.samples.append(total)
        return total

    def run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.sample()

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.run, daemon=True)
        t.start()
        return t

    def stop(self) -> None:
        self._stop.set()


def _role(cmdline: list[str]) -> str:
    text = " ".join(cmdline)
    for key in ("streamlit", "gradio_app", "nginx", "dashboard.serve"):
        if key in text:
            return {"gradio_app": "gradio", "dashboard.serve": "serve"}.get(key, key)
    return Path(cmdline[0]).name if cmdline else "?"


# ------------------------------------------------------------------------------ inputs
def request_inputs(data: str | None, n: int, folder: Path) -> list[tuple[str, str]]:
    """(poster path, plot) pairs: test movies with both from ``data``, else generated ones."""
    from mmgenre.data import MMIMDb, resolve_data_dir

    if data:
        ds = MMIMDb.load(resolve_data_dir(data), skip_bad=True)
        split = "test" if "test" in ds.splits else next(iter(ds.splits))
        pairs = [(str(m.poster_path), m.plot) for m in ds.split(split) if m.has_poster and m.has_plot]
    else:
        from mmgenre.testing import make_tiny_mmimdb
        ds = MMIMDb.load(make_tiny_mmimdb(folder / "generated", image_size=(182, 268)))
        pairs = [(str(m.poster_path), m.plot) for m in ds if m.has_poster and m.has_plot]
    if not pairs:
        raise SystemExit("no movie with both a poster and a plot to send")
    return pairs[:n]


# ------------------------------------------------------------------------------ server
def start_server(checkpoints: str, ports: dict[str, int], log: Path, threads: int | None) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MMGENRE_CHECKPOINTS": checkpoints,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "dashboard.serve", "--host", LOOPBACK, "--port", str(ports["public"]),
           "--streamlit-port", str(ports["streamlit"]), "--gradio-port", str(ports["gradio"]),
           "--checkpoints", checkpoints]
    with open(log, "wb") as fh:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def wait_until_up(proc: subprocess.Popen, log: Path, deadline: float) -> None:
    while "mmgenre dashboard: http" not in log.read_text(errors="replace"):
        if proc.poll() is not None:
            raise SystemExit(f"dashboard.serve exited ({proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            raise SystemExit("dashboard.serve did not come up before the deadline")
        time.sleep(0.5)


def served_model(checkpoints: str, model: str | None) -> str | None:
    """The checkpoint a benchmark calls (``model`` or the demo's default), or None after saying
    on stderr why the benchmark cannot run (no nginx, no such checkpoint)."""
    from dashboard.core import preferred_model
    from dashboard.serve import find_nginx
    from mmgenre.analysis import available_checkpoints

    if find_nginx() is None:
        print("nginx is not installed: apt-get install -y nginx", file=sys.stderr)
        return None
    models = available_checkpoints(checkpoints)
    model = model or preferred_model(models, Path(checkpoints))
    if model not in models:
        print(f"no checkpoint {model!r} in {checkpoints} (have {models})", file=sys.stderr)
        return None
    return model


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's own process group (serve stops its children), SIGKILL if stuck."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


# ------------------------------------------------------------------------------ load
def one_request(client, poster: str | None, plot: str, model: str, deadline: float, out: Outcome) -> None:
    from gradio_client import handle_file

    from dashboard.gradio_app import TOP_GENRE

    t0 = time.perf_counter()
    try:
        job = client.submit(handle_file(poster) if poster else None, plot, model, TOP_GENRE,
                            api_name="/predict")
        while not job.done():
            if out.first_s is None and job.outputs():
                out.first_s = time.perf_counter() - t0
            if time.monotonic() > deadline:
                job.cancel()
                raise TimeoutError("deadline passed")
            time.sleep(0.05)
        result = job.result(timeout=1)
        out.total_s = time.perf_counter() - t0
        if out.first_s is None:
            out.first_s = out.total_s
        if not result or not result[0] or not result[0].get("confidences"):
            raise RuntimeError(f"empty result: {str(result)[:200]}")
    except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
        out.error = f"{type(exc).__name__}: {str(exc)[:200]}"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dashboard.benchmarks.load", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoints", default=str(REPO / "checkpoints"))
    p.add_argument("--data", default=os.environ.get("MMGENRE_DATA") or None,
                   help="MM-IMDb folder for test posters and plots (default $MMGENRE_DATA; else generated)")
    p.add_argument("--requests", type=int, default=50)
    p.add_argument("--distinct", type=int, default=10, help="distinct movies cycled over")
    p.add_argument("--model", default=None, help="checkpoint to call (default: the demo's default)")
    p.add_argument("--plot-only", action="store_true", help="send no poster")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the server (default: unset)")
    p.add_argument("--timeout", type=float, default=900.0, help="hard limit for the whole run, seconds")
    args = p.parse_args(argv)
    if not 1 <= args.requests <= 200:
        p.error("--requests must be in [1, 200]")

    from gradio_client import Client

    from dashboard.serve import free_port

    model = served_model(args.checkpoints, args.model)
    if model is None:
        return 2
    deadline = time.monotonic() + args.timeout
    tmp = Path(tempfile.mkdtemp(prefix="mmgenre-load-"))
    pairs = request_inputs(args.data, args.distinct, tmp)
    ports = {"public": free_port(), "streamlit": free_port(), "gradio": free_port()}
    log = tmp / "serve.log"
    print(f"model {model}; {args.requests} requests ({'plot' if args.plot_only else 'poster + plot'}) "
          f"over {len(pairs)} movies; server threads: {args.threads or 'default'}", flush=True)
    proc = start_server(args.checkpoints, ports, log, args.threads)
    sampler = MemorySampler(proc.pid)
    try:
        t_start = time.perf_counter()
        wait_until_up(proc, log, deadline)
        print(f"server up in {time.perf_counter() - t_start:.1f} s", flush=True)
        url = f"http://{LOOPBACK}:{ports['public']}/gradio/"
        client = Client(url, verbose=False, download_files=False)
        # One call first: loads the model and its encoders, so the burst measures serving.
        warm = Outcome()
        one_request(client, None if args.plot_only else pairs[0][0], pairs[0][1], model, deadline, warm)
        if warm.error:
            print(f"warm-up request failed: {warm.error}", file=sys.stderr)
            return 1
        idle = sampler.sample()
        print(f"warm-up request {warm.total_s:.1f} s; server RSS after warm-up {idle:.0f} MiB", flush=True)
        sampler.start()
        outcomes = [Outcome() for _ in range(args.requests)]
        threads = [threading.Thread(target=one_request, daemon=True,
                                    args=(client, None if args.plot_only else pairs[i % len(pairs)][0],
                                          pairs[i % len(pairs)][1], model, deadline, outcomes[i]))
                   for i in range(args.requests)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        wall = time.perf_counter() - t0
        after = Outcome()  # the app still answers after the burst
        one_request(client, None, pairs[0][1], model, deadline, after)
        sampler.stop()
        alive = proc.poll() is None
    finally:
        sampler.stop()
        stop_server(proc)

    done = [o for o in outcomes if o.total_s is not None and o.error is None]
    failed = [o for o in outcomes if o.error is not None or o.total_s is None]
    firsts, totals = [o.first_s for o in done], [o.total_s for o in done]
    print(f"\n{len(done)}/{args.requests} succeeded, {len(failed)} failed, in {wall:.1f} s "
          f"({len(done) / wall:.2f} requests/s)")
    for o in failed[:5]:
        print(f"  failure: {o.error or 'no answer before the deadline'}")
    if done:
        print(f"probabilities: p50 {pct(firsts, .5):.1f} s  p95 {pct(firsts, .95):.1f} s  max {max(firsts):.1f} s")
        print(f"explanation:   p50 {pct(totals, .5):.1f} s  p95 {pct(totals, .95):.1f} s  max {max(totals):.1f} s"
              f"  (mean {statistics.mean(totals):.1f} s)")
    queue_full = [o for o in failed if o.error and "queue" in o.error.lower()]
    print(f"queue held all {args.requests}: {not queue_full}; app answered after the burst: "
          f"{after.error is None} ({after.total_s or float('nan'):.1f} s); server alive: {alive}")
    peak = max(sampler.samples, default=idle)
    print(f"server RSS: after warm-up {idle:.0f} MiB, peak {peak:.0f} MiB; per process peak: "
          + ", ".join(f"{k} {v:.0f} MiB" for k, v in sorted(sampler.per_process.items(), key=lambda kv: -kv[1])))
    return 0 if not failed and after.error is None and alive else 1


if __name__ == "__main__":
    sys.exit(main())
