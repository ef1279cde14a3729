"""python -m dashboard.serve: Streamlit, Gradio and nginx behind one port, started and stopped
as real processes (skipped when nginx is not installed)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dashboard.serve import find_nginx, free_port, render_nginx_conf

REPO = Path(__file__).resolve().parents[1]


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


@pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed (apt-get install -y nginx)")
def test_one_origin_serves_streamlit_and_gradio(tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "MMGENRE_CHECKPOINTS": str(tmp_path / "no_checkpoints"), "MMGENRE_DATA": "",
           "HF_HUB_OFFLINE": "1"}
    log = tmp_path / "serve.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "dashboard.serve", "--port", str(port), "--host", "127.0.0.1",
                                 "--streamlit-port", str(free_port()), "--gradio-port", str(free_port())],
                                cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while "mmgenre dashboard: http" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "serve did not come up:\n" + log.read_text(errors="replace")
            time.sleep(0.5)
        base = f"http://127.0.0.1:{port}"
        status, body = _get(base + "/")
        assert status == 200 and "<title>Streamlit</title>" in body
        assert _get(base + "/_stcore/health") == (200, "ok")
        status, body = _get(base + "/gradio/")
        assert status == 200 and "gradio" in body.lower()
        status, body = _get(base + "/gradio/config")
        assert status == 200 and '"root"' in body and "/gradio" in body  # root_path is honoured
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log.read_text(errors="replace")
    # Every child is gone: nothing answers on the public port any more.
    with pytest.raises(OSError):
        _get(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
