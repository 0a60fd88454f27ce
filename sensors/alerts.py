"""Alert once per failed run: to the run log and, if QUAYSIDE_ALERT_WEBHOOK_URL is set, a webhook."""

from __future__ import annotations

import json
import os
import urllib.request

import dagster as dg


@dg.run_failure_sensor(name="alert_on_run_failure", default_status=dg.DefaultSensorStatus.RUNNING,
                       monitor_all_code_locations=False)
def alert_on_run_failure(context: dg.RunFailureSensorContext) -> None:
    run = context.dagster_run
    error = context.failure_event.message if context.failure_event else "unknown error"
    message = f"Quayside run {run.run_id} ({run.job_name}) failed: {error}"
    context.log.error(message)
    url = os.environ.get("QUAYSIDE_ALERT_WEBHOOK_URL")
    if url:
        body = json.dumps({"text": message, "run_id": run.run_id, "job": run.job_name}).encode()
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass
