"""The downloader's failures, each with a stable code that job results carry."""

from __future__ import annotations


class FetchError(Exception):
    """`detail` is for the tenant (job results): never a server path, a DNS answer or an
    internal address. `internal`, when given, is what the operator's log gets besides."""

    code = "download_failed"
    retryable = False

    def __init__(self, detail: str, *, internal: str | None = None) -> None:
        self.detail = detail
        self.internal = internal
        super().__init__(detail)


class InvalidUrl(FetchError):
    code = "invalid_url"


class AddressRefused(FetchError):
    """The URL leads to an address the service must not connect to."""

    code = "address_refused"


class PortRefused(FetchError):
    code = "port_refused"


class HttpStatusError(FetchError):
    code = "download_http_error"

    def __init__(self, status: int, *, retry_after: float | None = None) -> None:
        super().__init__(f"origin answered {status}")
        self.status = status
        self.retryable = status in (408, 429) or status >= 500
        self.retry_after = retry_after


class DownloadTimeout(FetchError):
    code = "timeout"
    retryable = True


class ConnectionFailed(FetchError):
    code = "connection_error"
    retryable = True


class TooLarge(FetchError):
    code = "too_large"


class TooManyRedirects(FetchError):
    code = "too_many_redirects"


class BadRedirect(FetchError):
    code = "bad_redirect"


class RedirectLoop(FetchError):
    code = "redirect_loop"


class UnsupportedEncoding(FetchError):
    """The origin compressed the body although asked not to; nothing is decompressed."""

    code = "unsupported_encoding"


class StagingFailed(FetchError):
    """The download could not be written to the staging folder (a read-only or full
    disk): the service's fault, not the origin's, and worth another try later."""

    code = "storage_error"
