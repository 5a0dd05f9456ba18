#!/usr/bin/env python3
"""A webhook receiver for fwdwatch's generic webhook sink, as an operator's automation
would run one: deploy/compose-smoke.sh reads its alerts to find approve/remove links.

  POST /hook     an alert (docs/notifier.md): the X-Fwdwatch-Signature header must be
                 the HMAC-SHA256 of the raw body under $WEBHOOK_SECRET (compared in
                 constant time), else 401 and the alert is not kept
  GET /alerts    {"received": [alert…], "bad_signatures": N}
  GET /healthz   200

Alerts are kept in memory only. The log gets one line per alert, without its links:
the links act on real forwards, and a log is no place for them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ["WEBHOOK_SECRET"].encode()
MAX_BODY = 1024 * 1024
received: list[dict] = []
bad_signatures = 0
lock = threading.Lock()


class Inbox(BaseHTTPRequestHandler):
    def reply(self, status: int, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/healthz":
            self.reply(200, {"ok": True})
        elif self.path == "/alerts":
            with lock:
                self.reply(200, {"received": list(received), "bad_signatures": bad_signatures})
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        global bad_signatures
        if self.path != "/hook":
            self.reply(404, {"error": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY:
            self.reply(413, {"error": "body size"})
            return
        body = self.rfile.read(length)
        expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, self.headers.get("X-Fwdwatch-Signature", "")):
            with lock:
                bad_signatures += 1
            self.reply(401, {"error": "bad signature"})
            return
        try:
            alert = json.loads(body)
        except ValueError:
            self.reply(400, {"error": "not JSON"})
            return
        with lock:
            received.append(alert)
        print(f"alert {alert.get('alert')} {alert.get('severity')} tenant={alert.get('TenantId')} "
              f"signal={alert.get('signal')} fingerprint={alert.get('fingerprint')}", flush=True)
        self.reply(200, {"ok": True})

    def log_message(self, *args) -> None:  # request lines would carry nothing useful
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    print(f"webhook inbox listening on :{port}", flush=True)
    # The first scan delivers hundreds of alerts at once: a listen backlog of 5 (the
    # default) would reset connections the notifier then has to retry.
    ThreadingHTTPServer.request_queue_size = 256
    ThreadingHTTPServer(("0.0.0.0", port), Inbox).serve_forever()
