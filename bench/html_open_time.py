#!/usr/bin/env python3
"""How long report.html takes to open in headless Chromium: navigation
start to the runs table drawn, via chromedriver (Debian's chromium and
chromium-driver). Prints the file size and the median of --runs loads:

    python3 bench/make_synthetic_runs.py RUN_DIR /tmp/many 1000
    runner report /tmp/many --group-by none --out /tmp/many-report
    python3 bench/html_open_time.py /tmp/many-report/report.html
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import time
import urllib.request


def call(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)["value"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("page")
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    driver = subprocess.Popen(["chromedriver", f"--port={port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                call("GET", base + "/status")
                break
            except OSError:
                time.sleep(0.1)
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"]}}}}
        sid = call("POST", base + "/session", caps)["sessionId"]
        url = "file://" + os.path.abspath(args.page)
        times = []
        for _ in range(args.runs):
            call("POST", f"{base}/session/{sid}/url", {"url": "about:blank"})
            call("POST", f"{base}/session/{sid}/url", {"url": url})
            ms = call("POST", f"{base}/session/{sid}/execute/sync", {"script":
                "return performance.now()", "args": []})
            rows = call("POST", f"{base}/session/{sid}/execute/sync", {"script":
                "return document.querySelectorAll('#runs tbody tr[data-run]').length", "args": []})
            times.append(ms)
        call("DELETE", f"{base}/session/{sid}")
        size = os.path.getsize(args.page)
        print(f"{args.page}: {size / 1e6:.2f} MB, {rows} runs in the table, "
              f"open to drawn: median {statistics.median(times):.0f} ms over {args.runs} loads "
              f"(min {min(times):.0f}, max {max(times):.0f})")
    finally:
        driver.kill()


if __name__ == "__main__":
    main()
