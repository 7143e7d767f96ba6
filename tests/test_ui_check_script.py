"""scripts/ui_plots_check.py in a real headless Chromium against a page served on 127.0.0.1:
it takes its DevTools port and browser profile directory as options, reports what it
verified (plots rendered as PNG, expected texts, forbidden patterns) and fails when a check
fails. Dagster itself is not needed: the page imitates an asset page's metadata table."""

from __future__ import annotations

import base64
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"
)


def _png_b64(w: int, h: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 30)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _page(extra_row: str) -> str:
    img = f'<img src="data:image/png;base64,{_png_b64(7, 5)}">'
    return f"""<html><head><title>evaluation_report</title></head><body>
<p>model roadwork-classifier v3 — champion</p>
<table>
<tr><td>reliability</td><td><span onclick='document.getElementById("modal").innerHTML={json.dumps(img)}'>Show Markdown</span></td></tr>
<tr><td>accepted</td><td>106</td></tr>{extra_row}
</table><div id="modal"></div></body></html>"""


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "site"
    root.mkdir()
    (root / "good.html").write_text(_page(""))
    (root / "bad.html").write_text(_page("<tr><td>errors</td><td>9.0000</td></tr>"))
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **k)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(url: str, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "ui_plots_check.py"), url, str(out), "--wait", "20", *extra],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
    )
    return proc, json.loads(Path(f"{out}_report.json").read_text())


def test_the_ui_check_reports_what_it_verified_and_fails_on_a_failed_check(served, tmp_path):
    port, profile = _free_port(), tmp_path / "chromium-profile"
    proc, report = _run(
        f"{served}/good.html",
        tmp_path / "good",
        "--plots",
        "reliability",
        "--expect",
        "champion",
        "--forbid",
        r"\b\d+\.0000\b",
        "--debug-port",
        str(port),
        "--profile-dir",
        str(profile),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (
        report["passed"] and report["debug_port"] == port and report["profile_dir"] == str(profile) and profile.is_dir()
    )
    (plot,) = report["plots"]
    assert plot["state"] == "clicked" and plot["png_images"] == ["7x5"] and Path(plot["screenshot"]).stat().st_size > 0
    assert "[ok] plot reliability" in proc.stdout and "[ok] shows 'champion'" in proc.stdout and "PASSED" in proc.stdout

    proc, report = _run(
        f"{served}/bad.html",
        tmp_path / "bad",
        "--plots",
        "reliability,slice_heatmap",
        "--expect",
        "challenger",
        "--wait",
        "5",
        "--forbid",
        r"\b\d+\.0000\b",
    )
    assert proc.returncode == 1 and not report["passed"] and "FAILED" in proc.stdout
    states = {p["plot"]: p["state"] for p in report["plots"]}
    assert states == {"reliability": "clicked", "slice_heatmap": "no metadata row"}
    checks = {c["check"]: c for c in report["text_checks"]}
    assert not checks["shows 'challenger'"]["passed"] and checks[r"never shows /\b\d+\.0000\b/"]["found"] == ["9.0000"]
