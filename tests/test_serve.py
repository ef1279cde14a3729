"""python -m dashboard.serve: Streamlit, Gradio and nginx behind one port, started and stopped
as real processes on free loopback ports (skipped when nginx is not installed).

Stopping is checked the way it goes wrong in a terminal: Ctrl-C reaches the whole process group,
often twice; and serve may be killed outright. In every case each child process must be gone and
every port free again within 10 s."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from dashboard.serve import Server, find_nginx, free_port, port_free, render_nginx_conf

REPO = Path(__file__).resolve().parents[1]
FREED_WITHIN_S = 10.0
needs_nginx = pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed (apt-get install -y nginx)")


def test_nginx_config_routes_both_apps(tmp_path):
    conf = render_nginx_conf(tmp_path, host="0.0.0.0", port=7860, streamlit_port=8501, gradio_port=7861)
    assert "{{" not in conf
    assert "listen 0.0.0.0:7860;" in conf
    assert "proxy_pass http://127.0.0.1:8501;" in conf  # / -> Streamlit
    assert "proxy_pass http://127.0.0.1:7861/;" in conf  # /gradio/ -> Gradio, prefix stripped
    assert "proxy_buffering off;" in conf and "$http_upgrade" in conf
    assert f"pid {tmp_path}/nginx.pid;" in conf and "/etc/" not in conf and "/var/" not in conf


def _get(url: str, timeout: float = 10.0) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - local test server
        return r.status, r.read().decode("utf-8", errors="replace")


class Serve:
    """``python -m dashboard.serve`` in a process group of its own (as a terminal runs it)."""

    def __init__(self, tmp_path: Path):
        self.ports = {"public": free_port(), "streamlit": free_port(), "gradio": free_port()}
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               "MMGENRE_CHECKPOINTS": str(tmp_path / "no_checkpoints"), "MMGENRE_DATA": "",
               "HF_HUB_OFFLINE": "1"}
        self.log = tmp_path / "serve.log"
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dashboard.serve", "--host", "127.0.0.1",
                 "--port", str(self.ports["public"]), "--streamlit-port", str(self.ports["streamlit"]),
                 "--gradio-port", str(self.ports["gradio"])],
                cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        self.children: list[psutil.Process] = []

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_up(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while "mmgenre dashboard: http" not in self.text():
            assert self.proc.poll() is None, self.text()
            assert time.monotonic() < deadline, "serve did not come up:\n" + self.text()
            time.sleep(0.5)
        self.children = psutil.Process(self.proc.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in self.children)
        assert "streamlit" in names and "gradio_app" in names and "nginx" in names, names

    def survivors(self) -> list[str]:
        alive = []
        for c in self.children:
            try:
                if c.is_running() and c.status() != psutil.STATUS_ZOMBIE:  # is_running checks pid reuse
                    alive.append(f"{c.pid} {' '.join(c.cmdline())[:80]}")
            except psutil.NoSuchProcess:
                pass
        return alive

    def busy_ports(self) -> list[int]:
        return [p for p in self.ports.values() if not port_free(p)]

    def wait_all_gone(self) -> float:
        """Seconds until every child has exited and every port is free (fails after 10 s)."""
        t0 = time.monotonic()
        while self.survivors() or self.busy_ports():
            assert time.monotonic() - t0 < FREED_WITHIN_S, (
                f"after {FREED_WITHIN_S:.0f} s still running: {self.survivors()}, ports in use: "
                f"{self.busy_ports()}\n{self.text()}")
            time.sleep(0.1)
        return time.monotonic() - t0

    def kill(self) -> None:
        """Last resort for a failed test: nothing may outlive it."""
        for p in [*self.children, self.proc]:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc.wait(10)


@pytest.fixture
def serve(tmp_path):
    s = Serve(tmp_path)
    try:
        s.wait_up()
        yield s
    finally:
        if s.proc.poll() is None or s.survivors():
            s.kill()


@needs_nginx
def test_one_origin_serves_streamlit_and_gradio_and_sigterm_stops_all(serve):
    base = f"http://127.0.0.1:{serve.ports['public']}"
    status, body = _get(base + "/")
    assert status == 200 and "<title>Streamlit</title>" in body
    assert _get(base + "/_stcore/health") == (200, "ok")
    status, body = _get(base + "/gradio/")
    assert status == 200 and "gradio" in body.lower()
    status, body = _get(base + "/gradio/config")
    assert status == 200 and '"root"' in body and "/gradio" in body  # root_path is honoured
    serve.proc.send_signal(signal.SIGTERM)
    assert serve.proc.wait(FREED_WITHIN_S) == 0, serve.text()
    serve.wait_all_gone()


@needs_nginx
def test_ctrl_c_twice_to_the_process_group_stops_every_child(serve):
    # A terminal's Ctrl-C goes to the whole foreground group (make and serve); users press it
    # again while serve is stopping. Later signals (a burst of SIGINT and SIGTERM, some landing
    # while serve is in its clean-up) must not cut the clean-up short.
    t0 = time.monotonic()
    os.killpg(serve.proc.pid, signal.SIGINT)
    time.sleep(0.3)
    for i in range(30):
        os.killpg(serve.proc.pid, signal.SIGINT if i % 2 else signal.SIGTERM)
        time.sleep(0.002)
    assert serve.proc.wait(FREED_WITHIN_S) == 0, serve.text()
    exited = time.monotonic() - t0
    took = serve.wait_all_gone()
    assert "stopping" in serve.text()
    print(f"serve exited {exited:.2f} s after the first Ctrl-C; ports free {took:.2f} s later")


@needs_nginx
def test_children_die_with_serve_even_on_sigkill(serve):
    serve.proc.kill()  # no handler, no finally: only the kernel's parent-death signal is left
    serve.proc.wait(5)
    took = serve.wait_all_gone()  # counted from serve's death
    print(f"children gone and ports free {took:.2f} s after SIGKILL of serve")


def test_stop_is_idempotent_and_ends_a_started_group(tmp_path, monkeypatch):
    # Server.stop on a Server whose children were started by hand (no nginx needed): the second
    # call is a no-op, and a signal arriving during stop() reaches its handler only after it, even
    # with other threads about (the kernel may deliver a process signal to any of them).
    server = Server.__new__(Server)
    server.children, server.tmp, server._stopped, server.stop_signal = [], tmp_path / "t", False, None
    server.tmp.mkdir()
    from dashboard.serve import Child
    child = Child("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "c.log",
                  dict(os.environ))
    child.start()
    server.children.append(child)
    busy = threading.Event()
    other = threading.Thread(target=busy.wait, args=(30,), daemon=True)
    other.start()
    got = []
    old = signal.signal(signal.SIGUSR1, lambda *a: got.append(server._stopped))
    monkeypatch.setattr("dashboard.serve.STOP_SIGNALS", (signal.SIGUSR1,))
    try:
        real_wait = child.proc.wait

        def wait_and_signal(timeout=None):
            os.kill(os.getpid(), signal.SIGUSR1)  # arrives in the middle of stop()
            return real_wait(timeout)
        child.proc.wait = wait_and_signal
        server.stop()
        assert child.proc.returncode is not None and not server.tmp.exists()
        assert got == [True]  # held back until stop() had finished
        server.stop()  # idempotent
        assert got == [True]
    finally:
        busy.set()
        signal.signal(signal.SIGUSR1, old)
