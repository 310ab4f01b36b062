"""A tiny local HTTP receiver for the warnings webhook of the demo.

Every POST body is appended as one JSON line to `<folder>/received.jsonl`, so the demo shows
what an activation's `warnings.webhook_url_env` sensor delivers without any outside service.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RECEIVED_FILE = "received.jsonl"


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 in a background thread; `url` is where to POST."""

    def __init__(self, folder: Path, port: int = 0) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        lock = threading.Lock()
        target = folder / RECEIVED_FILE

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8", errors="replace")
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = {"raw": body}
                record = {
                    "received_at": datetime.now(timezone.utc).isoformat(),
                    "path": self.path,
                    "payload": payload,
                }
                with lock, open(target, "a", encoding="utf-8") as out:
                    out.write(json.dumps(record) + "\n")
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass  # the file is the log; keep the terminal for Dagster

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/warnings"

    @property
    def received_file(self) -> Path:
        return self.folder / RECEIVED_FILE

    def received(self) -> list[dict]:
        """Every record received so far (oldest first)."""
        if not self.received_file.exists():
            return []
        lines = self.received_file.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
