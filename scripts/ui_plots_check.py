"""Check in a real browser what a Dagster asset page shows (headless Chromium over the DevTools
protocol), and report what was verified.

For each plot name it finds the metadata row, clicks "Show Markdown", counts the PNG images
the modal renders (with their pixel sizes) and saves a screenshot. ``--expect TEXT`` checks
that the page shows TEXT (e.g. ``champion``); ``--forbid REGEX`` checks that it never shows a
pattern (e.g. ``'\\b\\d+\\.0000\\b'``: a count printed as a float). The report is printed and
written as JSON to ``OUT_report.json``; the exit status is 0 only when every check passed.

    dagster-webserver -m roadwork_assets.definitions -p 3334 &
    python scripts/ui_plots_check.py http://127.0.0.1:3334/assets/evaluation_report /tmp/eval \\
        --expect champion --forbid '\\b\\d+\\.0000\\b'
    python scripts/ui_plots_check.py http://127.0.0.1:3334/assets/bundle /tmp/bundle --plots '' \\
        --expect champion --debug-port 9444 --profile-dir /tmp/chr-profile

Needs Debian's chromium (``apt-get install chromium``) and the ``websockets`` package; not
part of the test suite for that reason.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

DEFAULT_PLOTS = "reliability,confidence_histogram,risk_coverage,slice_heatmap"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("url", help="asset page, e.g. http://127.0.0.1:3334/assets/evaluation_report")
    p.add_argument("out", help="prefix of the screenshots (OUT_<plot>.png, OUT_page.png) and of OUT_report.json")
    p.add_argument(
        "--plots",
        default=DEFAULT_PLOTS,
        help=f"comma-separated plot metadata names to open ('' for none; default {DEFAULT_PLOTS})",
    )
    p.add_argument("--expect", action="append", default=[], metavar="TEXT", help="text the page must show (repeatable)")
    p.add_argument(
        "--forbid",
        action="append",
        default=[],
        metavar="REGEX",
        help="pattern the page text must not contain (repeatable)",
    )
    p.add_argument(
        "--debug-port", type=int, default=0, help="Chromium's DevTools port on 127.0.0.1 (default: a free port)"
    )
    p.add_argument(
        "--profile-dir",
        default=None,
        help="Chromium user-data directory (default: a fresh temporary one, removed afterwards)",
    )
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium", help="browser binary")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the page to render (default 30)")
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_text(text: str, expect: list[str], forbid: list[str]) -> list[dict]:
    """The text checks of the report: one entry per --expect / --forbid with what was found."""
    out = [{"check": f"shows {t!r}", "passed": t in text} for t in expect]
    for pattern in forbid:
        hits = sorted(set(re.findall(pattern, text)))
        out.append({"check": f"never shows /{pattern}/", "passed": not hits, "found": hits[:10]})
    return out


class Page:
    """A minimal DevTools client: one websocket, calls matched by id."""

    def __init__(self, ws):
        self.ws, self.n = ws, 0

    async def call(self, method: str, **params) -> dict:
        self.n += 1
        my = self.n
        await self.ws.send(json.dumps({"id": my, "method": method, "params": params}))
        while True:
            msg = json.loads(await self.ws.recv())
            if msg.get("id") == my:
                return msg.get("result", {})

    async def eval(self, js: str):
        return (await self.call("Runtime.evaluate", expression=js, returnByValue=True))["result"].get("value")

    async def screenshot(self, path: str) -> None:
        Path(path).write_bytes(base64.b64decode((await self.call("Page.captureScreenshot", format="png"))["data"]))


async def inspect(ws_url: str, args: argparse.Namespace) -> dict:
    import websockets

    report: dict = {"url": args.url, "plots": [], "text_checks": []}
    async with websockets.connect(ws_url, max_size=50_000_000) as ws:
        page = Page(ws)
        await page.call("Page.enable")
        await page.call("Page.navigate", url=args.url)
        deadline, text = time.monotonic() + args.wait, ""
        while time.monotonic() < deadline:  # rendered when the asset's metadata table is there
            await asyncio.sleep(1)
            text = await page.eval("document.body ? document.body.innerText : ''") or ""
            if (await page.eval("document.querySelectorAll('tr').length") or 0) > 0 and all(
                t in text for t in args.expect
            ):
                break
        await page.eval(
            "(() => { const s=[...document.querySelectorAll('button')].find(x=>x.innerText.trim()==='Skip'); if(s) s.click(); })()"
        )
        report["title"] = await page.eval("document.title")
        report["metadata_rows"] = await page.eval("document.querySelectorAll('tr').length")
        report["text_checks"] = check_text(text, args.expect, args.forbid)
        Path(f"{args.out}_page.txt").write_text(text)  # what the checks read, for the record
        report["page_text"] = f"{args.out}_page.txt"
        await page.screenshot(f"{args.out}_page.png")
        report["page_screenshot"] = f"{args.out}_page.png"
        for name in [p for p in args.plots.split(",") if p]:
            click = f"""(() => {{ const rows=[...document.querySelectorAll('tr')].filter(r=>r.querySelector('td') && r.querySelector('td').innerText.trim()==={json.dumps(name)});
              if(!rows.length) return 'no metadata row';
              const el=[...rows[0].querySelectorAll('*')].filter(x=>x.children.length===0 && x.innerText && x.innerText.includes('Show Markdown'));
              if(!el.length) return 'no Show Markdown link'; el[0].click(); return 'clicked'; }})()"""
            state = await page.eval(click)
            await asyncio.sleep(2)
            imgs = (
                await page.eval(
                    "[...document.querySelectorAll('img')].filter(i=>i.src.startsWith('data:image/png')).map(i=>i.naturalWidth+'x'+i.naturalHeight)"
                )
                or []
            )
            shot = f"{args.out}_{name}.png"
            await page.screenshot(shot)
            report["plots"].append(
                {
                    "plot": name,
                    "state": state,
                    "png_images": imgs,
                    "screenshot": shot,
                    "passed": state == "clicked" and len(imgs) > 0,
                }
            )
            await page.call(
                "Input.dispatchKeyEvent", type="keyDown", key="Escape", code="Escape", windowsVirtualKeyCode=27
            )
            await asyncio.sleep(1)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    port = args.debug_port or free_port()
    profile = args.profile_dir or tempfile.mkdtemp(prefix="ui-check-chromium-")
    cmd = [
        args.chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1400,1800",
        "--remote-debugging-address=127.0.0.1",
        f"--remote-debugging-port={port}",
        "about:blank",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        tabs = None
        for _ in range(100):
            try:
                tabs = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2))
                break
            except OSError:
                time.sleep(0.3)
        if tabs is None:
            print(f"ui check: Chromium did not open its DevTools port {port} ({args.chromium})", file=sys.stderr)
            return 2
        ws_url = next(t for t in tabs if t["type"] == "page")["webSocketDebuggerUrl"]
        report = asyncio.run(inspect(ws_url, args))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if args.profile_dir is None:
            shutil.rmtree(profile, ignore_errors=True)
    report.update({"debug_port": port, "profile_dir": args.profile_dir or "(temporary, removed)"})
    checks = report["plots"] + report["text_checks"]
    report["passed"] = all(c["passed"] for c in checks) and bool(report["metadata_rows"])
    Path(f"{args.out}_report.json").write_text(json.dumps(report, indent=2))
    print(
        f"ui check of {args.url} ({report['title']!r}; {report['metadata_rows']} table rows; page screenshot {report['page_screenshot']}):"
    )
    for c in report["plots"]:
        print(
            f"  [{'ok' if c['passed'] else 'FAIL'}] plot {c['plot']}: {c['state']}, PNG images rendered {c['png_images']} -> {c['screenshot']}"
        )
    for c in report["text_checks"]:
        print(
            f"  [{'ok' if c['passed'] else 'FAIL'}] {c['check']}" + (f" (found {c['found']})" if c.get("found") else "")
        )
    print(f"{'PASSED' if report['passed'] else 'FAILED'}; report in {args.out}_report.json")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
