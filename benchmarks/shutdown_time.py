"""How long `python -m serving` takes to stop with a stream in flight, and how the stream ends.

    python -m benchmarks.shutdown_time --grace 1 2 5
    python -m benchmarks.shutdown_time --grace 2 --checkout ../old   # and another checkout

For each grace period G: start the server (a tiny random model, dummy weights, byte
vocabulary, 8192-token context) with `--shutdown-grace G`, start one long streamed
completion, send SIGTERM once its first chunk has arrived, then record the seconds from the
signal to the stream's end and to the process's exit, and the stream's last two events.
The server must exit within G + 1 s and end a cut stream with an error event
(`server_shutting_down`) followed by `[DONE]`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import save
from benchmarks.stream_cost import TINY, Server

REPO = Path(__file__).resolve().parent.parent


def measure(checkout: Path, model: Path, data: Path, grace: float) -> dict[str, Any]:
    server = Server(checkout, model, data, data.with_suffix(".log"),
                    ["--shutdown-grace", str(grace)])
    proc, port = server.proc, server.port
    try:
        server.wait_ready()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        body = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 8000,
                "temperature": 0, "ignore_eos": True, "stream": True}
        conn.request("POST", "/v1/completions", json.dumps(body),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        first = resp.readline()
        assert first.startswith(b"data: {"), first
        exited: list[float] = []
        waiter = threading.Thread(target=lambda: exited.append(
            (proc.wait(), time.monotonic())[1]))
        waiter.start()
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        events: list[str] = []
        try:
            for line in resp:
                if line.startswith(b"data: "):
                    events.append(line[6:].decode().strip())
        except (OSError, http.client.HTTPException) as e:
            events.append(f"<{type(e).__name__}>")
        stream_end = time.monotonic() - sent
        waiter.join(timeout=120)
        return {"grace_s": grace, "stream_end_s": round(stream_end, 2),
                "exit_s": round(exited[0] - sent, 2) if exited else None,
                "exit_code": proc.returncode, "chunks": len(events),
                "last_events": [e[:160] for e in events[-2:]]}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grace", type=float, nargs="+", default=[1.0, 2.0, 5.0])
    p.add_argument("--checkout", type=Path, action="append", default=[],
                   help="another checkout to measure beside this one")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp, "tiny")
        model.mkdir()
        (model / "config.json").write_text(json.dumps(TINY))
        for grace in args.grace:
            for i, checkout in enumerate([*args.checkout, REPO]):
                row = {"checkout": str(checkout),
                       **measure(checkout, model, Path(tmp, f"data{i}"), grace)}
                print(json.dumps(row))
                rows.append(row)
    print("saved", save("shutdown_time", {"results": rows}))


if __name__ == "__main__":
    main()
