"""The HTTP POST the HTTP sinks share (stdlib only). Errors name the status, never the URL: webhook
URLs carry tokens."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request

from services.alerter.sinks import SinkError
from services.common.settings import Settings


class HttpClient:
    def __init__(self, settings: Settings) -> None:
        self.timeout = settings.sink_http_timeout_s
        self.context = ssl.create_default_context(cafile=settings.sink_http_ca_file or None)

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> bytes:
        """POST and return the response body of a 2xx answer; raise SinkError otherwise."""
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as response:
                return response.read()  # type: ignore[no-any-return]
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:200].decode(errors="replace")
            raise SinkError(f"HTTP {exc.code} {exc.reason}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise SinkError(f"connection failed: {reason}") from None
