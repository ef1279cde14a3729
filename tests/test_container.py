"""The Docker image's command, run the way a Hugging Face Space runs it, without Docker: as a
non-root user (uid 1000), from a read-only copy of the app folder (what the Dockerfile copies),
with a fresh HOME and the Dockerfile's ENV. ``/`` and ``/gradio/`` must answer 200.

Loopback only: the command gets ``--host 127.0.0.1`` and free ports appended (argparse keeps the
last value). Skipped only when it cannot run: no nginx, or root without ``setpriv``."""
from __future__ import annotations

import fnmatch
import json
import os
import shlex
import shutil
import signal
import site
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from dashboard.serve import find_nginx, free_port

REPO = Path(__file__).resolve().parents[1]
SPACE_UID = 1000


def dockerfile() -> tuple[dict[str, str], list[str], int]:
    """(ENV, CMD, uid of the user it switches to) read from the Dockerfile."""
    text = (REPO / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    env, cmd, uid = {}, [], None
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(rest))
        elif word == "CMD":
            cmd = json.loads(rest)
        elif word == "RUN" and "useradd" in rest:
            args = shlex.split(rest)
            uid = int(args[args.index("-u") + 1])
    return env, cmd, uid


def test_dockerfile_installs_the_cpu_torch_and_runs_serve():
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    torch_line = next(line for line in text.splitlines() if "torch==" in line)
    assert "--index-url https://download.pytorch.org/whl/cpu" in torch_line
    env, cmd, uid = dockerfile()
    assert cmd[:3] == ["python", "-m", "dashboard.serve"] and uid == SPACE_UID
    assert env["MMGENRE_LOCK_PATHS"] == "1" and env["HF_HUB_OFFLINE"] == "1"


def _ignored(rel: str, patterns: list[str]) -> bool:
    parts = rel.split("/")
    return any(fnmatch.fnmatch(part, p.rstrip("/")) for p in patterns for part in parts)


def read_only_copy(dest: Path) -> None:
    """What ``COPY . .`` puts in the image (minus .dockerignore), every file and folder read-only."""
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    shutil.copytree(REPO, dest, ignore=lambda d, names: [
        n for n in names if _ignored(os.path.relpath(Path(d) / n, REPO), patterns + [".git"])])
    for root, dirs, files in os.walk(dest):
        for f in files:
            os.chmod(Path(root) / f, 0o444)
        os.chmod(root, 0o555)


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - local test server
        return r.status


def _reachable(path: Path) -> bool:
    """Whether any user can run ``path``: it and every folder above it are open to others."""
    path = path.resolve()
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents])


def interpreter(top: Path) -> str | None:
    """A Python that another user can run, with this environment's packages: ours, or (when ours
    lives in a folder closed to others, e.g. a pyenv under /root) a venv made in ``top`` from a
    system Python of the same version whose ``.pth`` file points at our site-packages."""
    if _reachable(Path(sys.executable)) and _reachable(Path(sys.base_prefix) / "bin"):
        return sys.executable
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    base = next((c for c in (f"/usr/bin/python{version}", f"/usr/local/bin/python{version}")
                 if Path(c).exists() and _reachable(Path(c))), None)
    if base is None:
        return None
    venv = top / "python"
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site_dir = next((venv / "lib").glob("python*/site-packages"))
    (site_dir / "parent-env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return str(venv / "bin" / "python")


def _as_user() -> list[str] | None:
    if os.geteuid() != 0:
        return []  # already not root: run as ourselves
    setpriv = shutil.which("setpriv")
    return None if setpriv is None else [setpriv, f"--reuid={SPACE_UID}", f"--regid={SPACE_UID}",
                                         "--clear-groups", "--"]


@pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed (apt-get install -y nginx)")
def test_container_command_as_uid_1000_with_a_read_only_app_folder():
    prefix = _as_user()
    if prefix is None:
        pytest.skip("running as root without setpriv: cannot switch to a non-root user")
    env_file, cmd, _ = dockerfile()
    # /tmp, not pytest's tmp_path: its parents are 0700 and uid 1000 must reach the app folder.
    top = Path(tempfile.mkdtemp(prefix="mmgenre-space-"))
    proc = None
    try:
        os.chmod(top, 0o755)
        python = interpreter(top)
        if python is None:
            pytest.skip(f"{sys.executable} is in a folder other users cannot enter, and no system "
                        "Python of the same version is there to stand in")
        app, home = top / "app", top / "home"
        read_only_copy(app)
        home.mkdir()
        if os.geteuid() == 0:
            os.chown(home, SPACE_UID, SPACE_UID)
        port = free_port()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env_file, "HOME": str(home),
               "TMPDIR": "/tmp"}
        argv = [python if c == "python" else c for c in cmd]
        argv = [a if a != "7860" else str(port) for a in argv]  # the CMD's port, made free
        argv += ["--host", "127.0.0.1", "--streamlit-port", str(free_port()), "--gradio-port", str(free_port())]
        log = top / "serve.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen([*prefix, *argv], cwd=app, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        deadline = time.monotonic() + 240
        while "mmgenre dashboard: http" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "not up after 240 s:\n" + log.read_text(errors="replace")
            time.sleep(0.5)
        base = f"http://127.0.0.1:{port}"
        assert _get(base + "/") == 200
        assert _get(base + "/gradio/") == 200
        if prefix:
            assert psutil.Process(proc.pid).uids().real == SPACE_UID
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        shutil.rmtree(top, ignore_errors=True)
