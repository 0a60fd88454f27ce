"""A failed run alerts once: to the log and to the webhook from the environment."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg

from sensors.alerts import alert_on_run_failure


def test_run_failure_posts_one_alert_to_the_webhook(monkeypatch):
    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("QUAYSIDE_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/hook")

    @dg.asset
    def broken():
        raise RuntimeError("source unreachable")

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([broken], instance=instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
    context = dg.build_run_status_sensor_context(
        sensor_name="alert_on_run_failure", dagster_instance=instance, dagster_run=result.dagster_run,
        dagster_event=failure).for_run_failure()
    alert_on_run_failure(context)
    server.shutdown()
    assert len(received) == 1
    assert received[0]["run_id"] == result.run_id and "failed" in received[0]["text"]
