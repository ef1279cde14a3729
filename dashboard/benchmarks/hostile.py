"""Hostile-load benchmark: the served dashboard (nginx in front of Gradio) against the hostile mix.

    python -m dashboard.benchmarks.hostile [--checkpoints checkpoints] [--model NAME] [--data DIR]
        [--normal 12] [--timeout 600]

Starts ``python -m dashboard.serve`` on free ports of 127.0.0.1 and plays visitors over raw HTTP
(upload, ``/call/predict``, its event stream), each from its own loopback address (127.0.0.x),
so nginx's per-client limits see separate visitors. Prints:

1. the explain time of the 36-Mpx 1-bit PNG vs a normal poster (target: <= 3x);
2. a normal request's latency idle, and while 2 hostile uploads are in flight (each round: two
   big PNGs, then the normal request ``--gap`` s later; target: p95 <= 2x idle);
3. the messages of every refused poster of tests/hostile.py (target: no server path);
4. a flood from one address (what nginx answers) and the app's answers once it stopped;
5. peak memory of the app processes (target: <= 2.5 GB) and the memory after the hostile
   phases (released after heavy requests).

Bounded: a fixed number of requests per phase, a hard ``--timeout`` for the whole run; only
127.0.0.x is contacted; the server is always stopped. Exit code 0 when every target is met.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))           # the hostile corpus (tests/hostile.py)

from dashboard.benchmarks.load import (MemorySampler, pct, request_inputs, served_model,  # noqa: E402
                                       start_server, stop_server, wait_until_up)

GB = 2**30
HOSTILE_NAME = "big-1bit.png"
TARGETS = {"big_vs_normal": 3.0, "loaded_vs_idle": 2.0, "peak_gib": 2.5}


@dataclass
class Answer:
    total_s: float
    first_s: float | None = None      # the probabilities (first "generating" event)
    status: int = 200                 # HTTP status of the upload or the call
    error: str | None = None          # the message a client is shown
    notes: str = ""


class Visitor:
    """One client with its own source address, speaking Gradio's plain HTTP API through nginx."""

    def __init__(self, base: str, address: str, timeout: float = 300.0):
        import httpx
        self.base = base.rstrip("/") + "/gradio_api"
        self.http = httpx.Client(transport=httpx.HTTPTransport(local_address=address),
                                 timeout=httpx.Timeout(timeout, connect=10.0))

    def predict(self, poster: bytes | None, name: str, plot: str, model: str, genre: str) -> Answer:
        t0 = time.perf_counter()
        file_data = None
        if poster is not None:
            r = self.http.post(f"{self.base}/upload", files={"files": (name, poster, "application/octet-stream")})
            if r.status_code != 200:
                return Answer(time.perf_counter() - t0, status=r.status_code, error=r.text[:300])
            file_data = {"path": r.json()[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}
        r = self.http.post(f"{self.base}/call/predict", json={"data": [file_data, plot, model, genre]})
        if r.status_code != 200:
            return Answer(time.perf_counter() - t0, status=r.status_code, error=r.text[:300])
        answer = Answer(0.0)
        event = None
        with self.http.stream("GET", f"{self.base}/call/predict/{r.json()['event_id']}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    event = line[7:].strip()
                elif line.startswith("data: ") and event in ("generating", "complete", "error"):
                    data = json.loads(line[6:])
                    if event == "generating" and answer.first_s is None:
                        answer.first_s = time.perf_counter() - t0
                    if event == "error":
                        answer.error = data if isinstance(data, str) else json.dumps(data)
                        break
                    if event == "complete":
                        answer.notes = str(data[3]) if isinstance(data, list) and len(data) > 3 else ""
                        break
        answer.total_s = time.perf_counter() - t0
        return answer

    def close(self) -> None:
        self.http.close()


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _ok(flag: bool) -> str:
    return "met" if flag else "MISSED"


def run(args, base: str, model: str, normal: tuple[bytes, str], sampler: MemorySampler,
        server_tmp: Path) -> dict:
    import hostile as H
    from dashboard.gradio_app import TOP_GENRE
    from dashboard.messages import has_server_path

    poster, plot = normal
    big = H.png_one_bit(6000)
    visitors = [Visitor(base, f"127.0.0.{10 + i}") for i in range(4)]
    normal_v, hostile_v, flood_v = visitors[0], visitors[1:3], visitors[3]

    def ask(v: Visitor, data: bytes | None, name: str) -> Answer:
        return v.predict(data, name, plot, model, TOP_GENRE)

    out: dict = {}
    # warm-up: the model, its encoders and the detector are loaded once
    for data, name in ((poster, "poster.jpeg"), (big, HOSTILE_NAME)):
        a = ask(normal_v, data, name)
        if a.error:
            raise SystemExit(f"warm-up request failed: {a.error}")
    out["rss_warm_gib"] = sampler.sample() / 1024

    # 1. explain time, one request at a time
    t_normal = [ask(normal_v, poster, "poster.jpeg").total_s for _ in range(3)]
    t_big = [ask(normal_v, big, HOSTILE_NAME) for _ in range(3)]
    out["normal_s"], out["big_s"] = _median(t_normal), _median([a.total_s for a in t_big])
    out["big_errors"] = [a.error for a in t_big if a.error]

    # 2. normal latency idle, then with two hostile uploads in flight
    idle = [ask(normal_v, poster, "poster.jpeg") for _ in range(args.normal)]
    loaded: list[Answer] = []
    for _ in range(args.normal):
        results: list[Answer] = []
        threads = [threading.Thread(target=lambda v=v: results.append(ask(v, big, HOSTILE_NAME)))
                   for v in hostile_v]
        for t in threads:
            t.start()
        time.sleep(args.gap)                           # both uploads are in flight by now
        loaded.append(ask(normal_v, poster, "poster.jpeg"))
        for t in threads:
            t.join(args.timeout)
        out.setdefault("hostile_answers", []).extend(results)
    for key, answers in (("idle", idle), ("loaded", loaded)):
        out[f"{key}_total"] = [a.total_s for a in answers if not a.error]
        out[f"{key}_first"] = [a.first_s for a in answers if a.first_s is not None]
        out[f"{key}_errors"] = [a.error for a in answers if a.error]
    out["cut_short"] = sum("cut short" in a.notes for a in out["hostile_answers"] + loaded)

    # 3. every refused poster of the hostile corpus: what is a client told?
    messages = []
    for case in H.cases("poster", ok=False):
        a = ask(normal_v, case.poster_bytes(), f"{case.name}.jpeg")
        messages.append((case.name, a.status, a.error or "(accepted)"))
    out["messages"] = messages
    out["leaks"] = [(n, m) for n, _, m in messages if has_server_path(m) or str(server_tmp) in m]

    # 4. a flood from one address: nginx answers 429 past the burst; the app still answers
    codes: dict[int, int] = {}
    for _ in range(40):
        r = flood_v.http.post(f"{flood_v.base}/call/predict", json={"data": [None, plot, model, TOP_GENRE]})
        codes[r.status_code] = codes.get(r.status_code, 0) + 1
        if r.status_code == 429:
            out.setdefault("flood_body", r.text[:200])
    out["flood_codes"] = codes
    for _ in range(30):       # a polite client retries a "busy" answer a little later
        after = ask(normal_v, poster, "poster.jpeg")
        if after.status not in (429, 503):
            break
        time.sleep(1.0)
    out["after_flood_ok"] = after.error is None

    # 5. memory once the hostile phases are over (the release runs in the background)
    time.sleep(3.0)
    out["rss_after_gib"] = sampler.sample() / 1024
    for v in visitors:
        v.close()
    return out


def report(out: dict, sampler: MemorySampler) -> bool:
    ratio_big = out["big_s"] / out["normal_s"]
    idle95, load95 = pct(out["idle_total"], 0.95), pct(out["loaded_total"], 0.95)
    idle95f, load95f = pct(out["idle_first"], 0.95), pct(out["loaded_first"], 0.95)
    peak = max(sampler.samples, default=0.0) / 1024
    print(f"\n1. explain (whole request, median of 3): normal poster {out['normal_s']:.2f} s, "
          f"36-Mpx 1-bit PNG {out['big_s']:.2f} s = {ratio_big:.2f}x "
          f"(target <= {TARGETS['big_vs_normal']:g}x: {_ok(ratio_big <= TARGETS['big_vs_normal'])})"
          + (f"; refused: {out['big_errors'][0]}" if out["big_errors"] else ""))
    print(f"2. normal request, {len(out['idle_total'])} idle / {len(out['loaded_total'])} with 2 hostile uploads "
          f"in flight: complete p50 {pct(out['idle_total'], .5):.2f} / {pct(out['loaded_total'], .5):.2f} s, "
          f"p95 {idle95:.2f} / {load95:.2f} s = {load95 / idle95:.2f}x "
          f"(target <= {TARGETS['loaded_vs_idle']:g}x: {_ok(load95 / idle95 <= TARGETS['loaded_vs_idle'])}); "
          f"probabilities p95 {idle95f:.2f} / {load95f:.2f} s = {load95f / idle95f:.2f}x; "
          f"errors {len(out['idle_errors'])} / {len(out['loaded_errors'])}; "
          f"explanations cut short: {out['cut_short']}")
    hostile = out.get("hostile_answers", [])
    print(f"   hostile uploads: {len(hostile)}, median {_median([a.total_s for a in hostile]):.2f} s, "
          f"max {max((a.total_s for a in hostile), default=float('nan')):.2f} s, "
          f"errors {sum(1 for a in hostile if a.error)}")
    print(f"3. refused posters: {len(out['messages'])}; messages with a server path: {len(out['leaks'])} "
          f"(target 0: {_ok(not out['leaks'])})")
    for name, status, msg in out["messages"][:6]:
        print(f"     {name} [{status}]: {msg[:110]}")
    for name, msg in out["leaks"][:5]:
        print(f"     LEAK {name}: {msg[:200]}")
    print(f"4. flood of 40 calls from one address: {out['flood_codes']} "
          f"({out.get('flood_body', 'no 429')}); the app answered after it: {out['after_flood_ok']}")
    print(f"5. app memory (RSS, all processes): after warm-up {out['rss_warm_gib']:.2f} GiB, peak {peak:.2f} GiB "
          f"(target <= {TARGETS['peak_gib']:g}: {_ok(peak <= TARGETS['peak_gib'])}), "
          f"after the hostile phases {out['rss_after_gib']:.2f} GiB; per process peak: "
          + ", ".join(f"{k} {v / 1024:.2f}" for k, v in sorted(sampler.per_process.items(), key=lambda kv: -kv[1])))
    return (ratio_big <= TARGETS["big_vs_normal"] and load95 / idle95 <= TARGETS["loaded_vs_idle"]
            and peak <= TARGETS["peak_gib"] and not out["leaks"])


def main(argv: list[str] | None = None) -> int:
    import os

    p = argparse.ArgumentParser(prog="python -m dashboard.benchmarks.hostile", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoints", default=str(REPO / "checkpoints"))
    p.add_argument("--model", default=None, help="checkpoint to call (default: the demo's default)")
    p.add_argument("--data", default=os.environ.get("MMGENRE_DATA") or None,
                   help="MM-IMDb folder for the normal poster and plot (default $MMGENRE_DATA; else generated)")
    p.add_argument("--normal", type=int, default=12, help="normal requests per phase (idle, loaded)")
    p.add_argument("--gap", type=float, default=0.3,
                   help="seconds between the two hostile uploads and the normal request (default 0.3)")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the server")
    p.add_argument("--timeout", type=float, default=600.0, help="hard limit for the whole run, seconds")
    args = p.parse_args(argv)
    if not 2 <= args.normal <= 50:
        p.error("--normal must be in [2, 50]")

    from dashboard.serve import free_port

    model = served_model(args.checkpoints, args.model)
    if model is None:
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="mmgenre-bench-hostile-"))
    poster_path, plot = request_inputs(args.data, 1, tmp)[0]
    normal = (Path(poster_path).read_bytes(), plot)
    ports = {"public": free_port(), "streamlit": free_port(), "gradio": free_port()}
    log = tmp / "serve.log"
    print(f"model {model}; normal poster {Path(poster_path).name} ({len(normal[0]):,} bytes); "
          f"{args.normal} normal requests per phase", flush=True)
    deadline = time.monotonic() + args.timeout
    proc = start_server(args.checkpoints, ports, log, args.threads)
    sampler = MemorySampler(proc.pid)
    timer = threading.Timer(args.timeout, stop_server, args=(proc,))   # the hard limit
    timer.daemon = True
    timer.start()
    try:
        wait_until_up(proc, log, deadline)
        sampler.start()
        out = run(args, f"http://127.0.0.1:{ports['public']}/gradio/", model, normal, sampler, Path(tempfile.gettempdir()))
    finally:
        timer.cancel()
        sampler.stop()
        stop_server(proc)
    return 0 if report(out, sampler) else 1


if __name__ == "__main__":
    sys.exit(main())
