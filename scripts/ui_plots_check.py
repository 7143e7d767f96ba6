"""Check in a real browser that an asset page's plot metadata renders (headless Chromium over
the DevTools protocol): opens the page, clicks each plot's "Show Markdown", counts the PNGs
the modal shows, and saves a screenshot per plot.

    dagster-webserver -m roadwork_assets.definitions -p 3334 &
    python scripts/ui_plots_check.py http://127.0.0.1:3334/assets/evaluation_report /tmp/eval

Needs Debian's chromium (/usr/bin/chromium); not part of the test suite for that reason.
"""
import asyncio, base64, json, subprocess, sys, time, urllib.request
import websockets

URL, OUT = sys.argv[1], sys.argv[2]
proc = subprocess.Popen(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--user-data-dir=/tmp/chr-cdp", "--window-size=1400,1800", "--remote-debugging-port=9333", "about:blank"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _ in range(50):
    try:
        tabs = json.load(urllib.request.urlopen("http://127.0.0.1:9333/json")); break
    except Exception:
        time.sleep(0.3)
ws_url = [t for t in tabs if t["type"] == "page"][0]["webSocketDebuggerUrl"]

async def main():
    async with websockets.connect(ws_url, max_size=50_000_000) as ws:
        n = 0
        async def call(method, **params):
            nonlocal n
            n += 1; my = n
            await ws.send(json.dumps({"id": my, "method": method, "params": params}))
            while True:
                msg = json.loads(await ws.recv())
                if msg.get("id") == my:
                    return msg.get("result", {})
        await call("Page.enable")
        await call("Page.navigate", url=URL)
        await asyncio.sleep(12)
        js = """(() => { const b=[...document.querySelectorAll('button')];
          const skip=b.find(x=>x.innerText.trim()==='Skip'); if(skip) skip.click();
          return b.map(x=>x.innerText.trim()).filter(t=>t.includes('Markdown')).length; })()"""
        print("markdown buttons:", (await call("Runtime.evaluate", expression=js, returnByValue=True))["result"].get("value"))
        await asyncio.sleep(1)
        for i, name in enumerate(["reliability", "confidence_histogram", "risk_coverage", "slice_heatmap"]):
            click = f"""(() => {{ const rows=[...document.querySelectorAll('tr')].filter(r=>r.querySelector('td') && r.querySelector('td').innerText.trim()==='{name}');
              if(!rows.length) return 'no row';
              const el=[...rows[0].querySelectorAll('*')].filter(x=>x.children.length===0 && x.innerText && x.innerText.includes('Show Markdown'));
              if(!el.length) return 'no link'; el[0].click(); return true; }})()"""
            ok = (await call("Runtime.evaluate", expression=click, returnByValue=True))["result"].get("value")
            await asyncio.sleep(2)
            imgs = (await call("Runtime.evaluate", expression="[...document.querySelectorAll('img')].filter(i=>i.src.startsWith('data:image/png')).map(i=>i.naturalWidth+'x'+i.naturalHeight)", returnByValue=True))["result"].get("value")
            shot = await call("Page.captureScreenshot", format="png")
            open(f"{OUT}_{name}.png", "wb").write(base64.b64decode(shot["data"]))
            print(name, "clicked", ok, "png images rendered:", imgs)
            await call("Input.dispatchKeyEvent", type="keyDown", key="Escape", code="Escape", windowsVirtualKeyCode=27)
            await asyncio.sleep(1)

asyncio.run(main())
proc.kill()
