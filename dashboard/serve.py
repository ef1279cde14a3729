"""One origin for the whole UI: ``python -m dashboard.serve [--port 7860]``.

Starts Streamlit (127.0.0.1:8501) and the Gradio demo (127.0.0.1:7861, ``root_path=/gradio``),
writes an nginx config from ``nginx.conf.template`` into a temp folder (pid, logs and temp
files there too, so no root and no /etc are needed) and runs nginx on ``HOST:PORT``:
``/`` -> Streamlit (websockets included), ``/gradio/`` -> Gradio. It waits until all three
answer, prints the URL, and stops every child on Ctrl-C / SIGTERM / SIGHUP (or when one of them
dies).

Stopping is idempotent and signal-safe: the signal handlers only record the request (they never
raise), the loops poll it, and :meth:`Server.stop` holds those signals back until it is done,
so a second Ctrl-C cannot cut the clean-up short. Each child is also told by the kernel to die
with serve (``PR_SET_PDEATHSIG``): even a ``kill -9`` of serve leaves no server holding the ports.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dashboard.core import CHECKPOINTS_ENV_VAR, DATA_ENV_VAR, GRADIO_URL_ENV_VAR

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
TEMPLATE = HERE / "nginx.conf.template"
GRADIO_PREFIX = "/gradio"
MAX_BODY = "21m"  # uploads: gradio and mmgenre refuse posters over 20 MiB
NGINX_HINT = ("nginx is not installed. Install it with `apt-get install -y nginx` "
              "(Debian/Ubuntu; `make demo` does this), or run the apps alone: "
              "`streamlit run dashboard/app.py` and `python -m dashboard.gradio_app`.")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def find_nginx() -> str | None:
    # /usr/sbin is often missing from a normal user's PATH.
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                          if os.access(p, os.X_OK)), None)


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render_nginx_conf(tmp: Path, *, host: str, port: int, streamlit_port: int,
                      gradio_port: int) -> str:
    """The config text: the template with its {{NAME}} placeholders filled in."""
    user_line = ""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # A root master drops workers to `nobody`; they must own the temp folders.
        import grp
        import pwd
        nobody = pwd.getpwnam("nobody")
        user_line = f"user nobody {grp.getgrgid(nobody.pw_gid).gr_name};"
    values = {"TMP": str(tmp), "HOST": host, "PORT": str(port), "STREAMLIT_PORT": str(streamlit_port),
              "GRADIO_PORT": str(gradio_port), "MAX_BODY": MAX_BODY, "USER_LINE": user_line}
    text = TEMPLATE.read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def prepare_nginx(tmp: Path, **ports) -> Path:
    conf = tmp / "nginx.conf"
    conf.write_text(render_nginx_conf(tmp, **ports), encoding="utf-8")
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / sub).mkdir(exist_ok=True)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        import pwd
        nobody = pwd.getpwnam("nobody")
        os.chmod(tmp, 0o711)  # workers must reach their temp folders, not read the rest
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.chown(tmp / sub, nobody.pw_uid, nobody.pw_gid)
    return conf


def answers(url: str, timeout: float = 2.0) -> bool:
    """True when ``url`` returns HTTP 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - local URLs only
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _prctl():
    """libc's ``prctl`` (Linux), looked up before any fork; None elsewhere."""
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                               ctypes.c_ulong], ctypes.c_int
    return fn


def die_with_parent(sig: int):
    """A ``preexec_fn`` that makes the child receive ``sig`` when this process dies (however it
    dies); None where the platform has no ``PR_SET_PDEATHSIG``."""
    prctl, parent = _prctl(), os.getpid()
    if prctl is None:
        return None

    def preexec() -> None:  # runs in the forked child, before exec: no allocation-heavy work
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)
    return preexec


@dataclass
class Child:
    name: str
    cmd: list[str]
    log: Path
    env: dict = field(default_factory=dict)
    # Sent by the kernel if serve dies without stopping it: nginx gets SIGTERM (its master then
    # stops its workers), the Python apps SIGKILL (they hold nothing that needs flushing).
    death_signal: int = signal.SIGKILL
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        fh = open(self.log, "ab")  # noqa: SIM115 - the child owns it until it exits
        self.proc = subprocess.Popen(self.cmd, cwd=REPO_ROOT, env=self.env, stdout=fh,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, preexec_fn=die_with_parent(self.death_signal))
        fh.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        try:  # the whole process group (nginx workers, helpers), even when its leader has exited
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Server:
    """The three children and their temp folder; ``start()`` then ``wait()``; ``stop()`` always."""

    def __init__(self, *, host: str = "0.0.0.0", port: int = 7860, streamlit_port: int = 8501,
                 gradio_port: int = 7861, data: str | None = None, checkpoints: str | None = None):
        self.host, self.port = host, port
        self.streamlit_port, self.gradio_port = streamlit_port, gradio_port
        self.stop_signal: int | None = None   # set by request_stop (a signal handler)
        self._stopped = False
        self.tmp = Path(tempfile.mkdtemp(prefix="mmgenre-serve-"))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
        env.setdefault("HF_HUB_OFFLINE", "1")
        env["GRADIO_TEMP_DIR"] = str(self.tmp / "gradio")   # uploads stay in this temp folder
        env["GRADIO_ANALYTICS_ENABLED"] = "False"
        env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] = "false"
        env[GRADIO_URL_ENV_VAR] = GRADIO_PREFIX + "/"
        if data is not None:
            env[DATA_ENV_VAR] = data
        if checkpoints is not None:
            env[CHECKPOINTS_ENV_VAR] = checkpoints
        nginx = find_nginx()
        if nginx is None:
            raise SystemExit(NGINX_HINT)
        conf = prepare_nginx(self.tmp, host=host, port=port, streamlit_port=streamlit_port,
                             gradio_port=gradio_port)
        self.children = [
            Child("streamlit", [sys.executable, "-m", "streamlit", "run", str(HERE / "app.py"),
                                "--server.headless", "true", "--server.address", "127.0.0.1",
                                "--server.port", str(streamlit_port), "--server.fileWatcherType", "none",
                                "--server.runOnSave", "false", "--server.maxUploadSize", "20",
                                "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer"],
                  self.tmp / "streamlit.log", env),
            Child("gradio", [sys.executable, "-m", "dashboard.gradio_app", "--host", "127.0.0.1",
                             "--port", str(gradio_port), "--root-path", GRADIO_PREFIX],
                  self.tmp / "gradio.log", env),
            Child("nginx", [nginx, "-p", str(self.tmp), "-e", str(self.tmp / "error.log"),
                            "-c", str(conf), "-g", "daemon off;"], self.tmp / "nginx.log", env,
                  death_signal=signal.SIGTERM),
        ]

    @property
    def url(self) -> str:
        shown = "localhost" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"http://{shown}:{self.port}/"

    def checks(self) -> dict[str, str]:
        local = f"http://127.0.0.1:{self.port}"
        return {"streamlit": f"http://127.0.0.1:{self.streamlit_port}/_stcore/health",
                "gradio": f"http://127.0.0.1:{self.gradio_port}/config",
                "nginx": f"{local}/_stcore/health", "nginx->gradio": f"{local}{GRADIO_PREFIX}/config"}

    def request_stop(self, signum: int, frame=None) -> None:
        """Signal handler: record the request; start() and wait() return soon after. Never
        raises, so a signal cannot interrupt the clean-up."""
        if self.stop_signal is None:
            self.stop_signal = signum

    def start(self, timeout: float = 240.0) -> bool:
        """Start the children and wait until all answer; False when a stop was requested first."""
        busy = [p for p in (self.streamlit_port, self.gradio_port) if not port_free(p)]
        if not port_free(self.port, "0.0.0.0" if self.host in ("0.0.0.0", "") else self.host):
            busy.insert(0, self.port)
        if busy:
            raise RuntimeError(f"port(s) {busy} already in use; choose others with --port, "
                               "--streamlit-port, --gradio-port")
        for child in self.children:
            if self.stop_signal is not None:
                return False
            child.start()
        pending = self.checks()
        deadline = time.monotonic() + timeout
        while pending:
            dead = [c for c in self.children if not c.alive()]
            if dead:
                c = dead[0]
                raise RuntimeError(f"{c.name} exited with code {c.proc.returncode}:\n{c.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"not answering after {timeout:.0f} s: {', '.join(pending)} "
                                   f"(logs in {self.tmp})")
            for name, url in list(pending.items()):
                if self.stop_signal is not None:
                    return False
                if answers(url, timeout=1.0):
                    del pending[name]
            if pending:
                time.sleep(0.25)
        return self.stop_signal is None

    def wait(self) -> int:
        """Block until a child exits (1, an error) or a stop is requested (0)."""
        while self.stop_signal is None:
            for c in self.children:
                if not c.alive():
                    print(f"{c.name} exited with code {c.proc.returncode}:\n{c.tail()}", file=sys.stderr)
                    return 1
            time.sleep(0.2)
        return 0

    def stop(self, grace: float = 8.0) -> None:
        """Stop every child (SIGTERM, then SIGKILL after ``grace`` s) and remove the temp folder.
        Idempotent; SIGINT/SIGTERM/SIGHUP arriving meanwhile are held back (see signals_held)."""
        if self._stopped:
            return
        with signals_held(STOP_SIGNALS):
            for c in reversed(self.children):  # the proxy first, then the apps
                c.stop(signal.SIGTERM)
            deadline = time.monotonic() + grace
            for c in self.children:
                if c.proc is None:
                    continue
                try:
                    c.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    c.stop(signal.SIGKILL)
                    try:
                        c.proc.wait(5)
                    except subprocess.TimeoutExpired:
                        print(f"{c.name} (pid {c.proc.pid}) did not exit after SIGKILL", file=sys.stderr)
            for c in self.children:  # stragglers of each group (helpers, nginx workers)
                c.stop(signal.SIGKILL)
            shutil.rmtree(self.tmp, ignore_errors=True)
            self._stopped = True


@contextlib.contextmanager
def signals_held(signals) -> Iterator[None]:
    """Within the block ``signals`` are only recorded; afterwards the previous handlers are back
    and each recorded signal is raised once more (a Ctrl-C during clean-up still interrupts the
    caller, after the clean-up). Python runs handlers in the main thread, so swapping them there
    holds back signals whichever thread the kernel delivers them to; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    old = {sig: signal.signal(sig, lambda signum, frame: got.append(signum)) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(got):
            signal.raise_signal(sig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dashboard.serve", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", 7860)),
                   help="public port (default $PORT or 7860)")
    p.add_argument("--host", default="0.0.0.0", help="address nginx listens on (default 0.0.0.0)")
    p.add_argument("--streamlit-port", type=int, default=8501)
    p.add_argument("--gradio-port", type=int, default=7861)
    p.add_argument("--data", help="MM-IMDb folder (default $MMGENRE_DATA)")
    p.add_argument("--checkpoints", help="checkpoints folder (default $MMGENRE_CHECKPOINTS or ./checkpoints)")
    p.add_argument("--timeout", type=float, default=240.0, help="seconds to wait for the apps to answer")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if find_nginx() is None:
        print(NGINX_HINT, file=sys.stderr)
        return 2
    server = Server(host=args.host, port=args.port, streamlit_port=args.streamlit_port,
                    gradio_port=args.gradio_port, data=args.data, checkpoints=args.checkpoints)

    for sig in STOP_SIGNALS:
        signal.signal(sig, server.request_stop)
    code = 0
    try:
        print("starting Streamlit, Gradio and nginx ...", file=sys.stderr, flush=True)
        if server.start(args.timeout):
            print(f"mmgenre dashboard: {server.url}  (Gradio demo: {server.url}gradio/)", flush=True)
            code = server.wait()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    finally:
        if server.stop_signal is not None:
            print("stopping ...", file=sys.stderr, flush=True)
        server.stop()
        # Done: more Ctrl-C presses must not kill the exiting interpreter (whose finalisation
        # would restore the default handlers) and turn a clean stop into "killed by SIGINT".
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
    return code


if __name__ == "__main__":
    sys.exit(main())
