"""JSON HTTP APIs as a dataset source: pages pulled with page-number, cursor or Link-header
pagination, bearer-token or API-key auth, and incremental reads by a query parameter.

Transient failures (connection errors, timeouts, 5xx) are retried with exponential backoff; a
429 waits as long as its `Retry-After` says (capped). Refused credentials (401/403) and other
4xx fail at once with the status and the start of the answer. Redirects are not followed and a
next-page link that points to another host is refused: the credentials only ever go to the
connection's base URL.
Records are written one JSON object per line to a scratch file and reach landing only when the
last page has been read.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

import requests

from quayside.extract import ExtractError, Extraction, change_columns, finish, last_extraction, scratch_file
from quayside.lake import Lake
from quayside.specs import ApiExtract, DatasetSpec

TRANSIENT = {500, 502, 503, 504}


class HttpApi:
    def __init__(self, base_url: str, token: str = "", api_key: str = "", api_key_header: str = "X-API-Key",
                 timeout_seconds: float = 30.0, max_retries: int = 5, backoff_seconds: float = 0.5,
                 max_wait_seconds: float = 120.0):
        if urlsplit(base_url).scheme not in ("http", "https"):
            raise ValueError(f"base_url {base_url!r} must be an http(s) URL")
        self.base_url = base_url.rstrip("/") + "/"
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        if api_key:
            self.session.headers[api_key_header] = api_key
        self.timeout, self.max_retries = timeout_seconds, max_retries
        self.backoff, self.max_wait = backoff_seconds, max_wait_seconds

    def __repr__(self) -> str:
        return f"HttpApi({self.base_url!r})"

    def get(self, spec: DatasetSpec, url: str, params: dict | None = None) -> requests.Response:
        """GET with retries; errors name the dataset and the URL path, never the credentials."""
        where = f"{spec.key}: GET {urlsplit(url).path}"
        for attempt in range(self.max_retries + 1):
            try:
                response = self.session.get(url, params=params, timeout=self.timeout, allow_redirects=False)
            except (requests.ConnectionError, requests.Timeout) as exc:
                problem, wait = f"{type(exc).__name__}", self.backoff * 2**attempt
            else:
                if response.status_code < 300:
                    return response
                if response.status_code in (401, 403):
                    raise ExtractError(f"{where}: credentials refused (HTTP {response.status_code})")
                if response.status_code != 429 and response.status_code not in TRANSIENT:
                    raise ExtractError(f"{where}: HTTP {response.status_code}: {response.text[:200]!r}")
                problem = f"HTTP {response.status_code}"
                wait = _retry_after(response) if response.status_code == 429 else None
                wait = self.backoff * 2**attempt if wait is None else wait
            if attempt == self.max_retries:
                raise ExtractError(f"{where}: failed after {attempt + 1} attempts, last: {problem}")
            time.sleep(min(wait, self.max_wait))
        raise AssertionError("unreachable")

    def pages(self, spec: DatasetSpec, params: dict) -> Iterator[tuple[list[dict], float]]:
        """(records, seconds spent in requests) per page, following the spec's pagination."""
        api: ApiExtract = spec.source.api
        url, params = urljoin(self.base_url, api.path), dict(api.params) | params
        if api.pagination == "page":
            params[api.page_param] = 1
            if api.page_size_param:
                params[api.page_size_param] = api.page_size
        while True:
            started = time.perf_counter()
            response = self.get(spec, url, params)
            body = _json(spec, response)
            records = _records(spec, body)
            yield records, time.perf_counter() - started
            if api.pagination == "page":
                if len(records) < api.page_size or not records:
                    return
                params[api.page_param] += 1
            elif api.pagination == "cursor":
                cursor = _dig(body, api.next_cursor)
                if not cursor or not records:
                    return
                params[api.cursor_param] = cursor
            elif api.pagination == "link" and "next" in response.links:
                url, params = self._same_origin(spec, urljoin(url, response.links["next"]["url"])), None
            else:
                return

    def _same_origin(self, spec: DatasetSpec, url: str) -> str:
        if urlsplit(url)[:2] != urlsplit(self.base_url)[:2]:
            raise ExtractError(f"{spec.key}: next-page link leaves {urlsplit(self.base_url).netloc} "
                               f"(to {urlsplit(url).netloc}); refused, credentials stay with the base URL")
        return url

    def probe(self, lake: Lake, spec: DatasetSpec) -> str | None:
        """A digest of the first page past the watermark, or None if it is empty."""
        last = last_extraction(lake, spec)
        if last is None:
            return "first-load"
        records, _ = next(self.pages(spec, _incremental_params(spec, last)))
        if not records:
            return None
        return hashlib.sha256(json.dumps(records, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def extract(self, lake: Lake, spec: DatasetSpec, full_load: bool = False, run_id: str = "") -> Extraction:
        api: ApiExtract = spec.source.api
        last = None if full_load else last_extraction(lake, spec)
        params = _incremental_params(spec, last)
        run = Extraction(spec.key, full_load=not params, rows=0, pages=0, started_at=datetime.now(timezone.utc))
        watermark = last["watermark"][0] if params else None
        extra = dict(change_columns(spec, run.full_load))
        stamp = run.started_at.strftime("%Y-%m-%dT%H:%M:%S.%f")
        with scratch_file(".jsonl") as scratch:
            with scratch.open("w", encoding="utf-8") as out:
                for records, seconds in self.pages(spec, params):
                    run.pages += 1
                    run.source_seconds += seconds
                    for record in records:
                        if api.incremental_field and record.get(api.incremental_field) is not None:
                            value = str(record[api.incremental_field])
                            watermark = value if watermark is None else max(watermark, value, key=_sortable)
                        if extra:  # a CDC dataset: the change columns DMS would write
                            record = dict(record)
                            record.setdefault(spec.cdc.timestamp_column, record.get(api.incremental_field) or stamp)
                            if spec.cdc.op_column in extra:
                                record.setdefault(spec.cdc.op_column, "U")
                        out.write(json.dumps(record, ensure_ascii=False) + "\n")
                        run.rows += 1
            run.watermark = [watermark] if api.incremental_field and watermark is not None else None
            return finish(lake, spec, run, scratch, run_id)


def _incremental_params(spec: DatasetSpec, last: dict | None) -> dict:
    api = spec.source.api
    if not api.incremental_param or not last or not last["watermark"]:
        return {}
    return {api.incremental_param: last["watermark"][0]}


def _sortable(value: str) -> tuple:
    """Watermark values compare as times or numbers when they are ones, else as text."""
    try:
        return (0, datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    except ValueError:
        pass
    try:
        return (1, float(value))
    except ValueError:
        return (2, value)


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return None


def _json(spec: DatasetSpec, response: requests.Response) -> object:
    try:
        return response.json()
    except ValueError:
        raise ExtractError(f"{spec.key}: GET {urlsplit(response.url).path}: the answer is not JSON "
                           f"({response.headers.get('Content-Type', 'no content type')})") from None


def _dig(body: object, path: str) -> object:
    for part in filter(None, path.split(".")):
        body = body.get(part) if isinstance(body, dict) else None
    return body


def _records(spec: DatasetSpec, body: object) -> list[dict]:
    records = _dig(body, spec.source.api.records)
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ExtractError(f"{spec.key}: source.api.records {spec.source.api.records!r} does not lead to a list "
                           "of JSON objects in the answer")
    return records
