"""Service settings, read from `IMAGESYNC_*` environment variables."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "IMAGESYNC_"
# The client's variables (`imagesync push`, `imagesync.client`): they live beside the
# server's in one shell, and the server leaves them alone.
CLIENT_VARIABLES = frozenset({"IMAGESYNC_URL", "IMAGESYNC_TOKEN"})
# Settings an earlier release read, and why they are gone: refused with that reason.
RETIRED = {
    "IMAGESYNC_COLLECT_INTERVAL_SECONDS": "no longer read: collecting unused files is a "
    "periodic task of the queue now (hourly at :07; the sweep daily at 03:37 UTC); unset it",
}


class SettingsError(Exception):
    """Settings that cannot be used; the message names each bad variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    database_url: str = Field(
        default="sqlite:///./data/imagesync.db",
        description="SQLAlchemy URL: sqlite:///PATH or postgresql+psycopg://USER@HOST/DB.",
    )
    storage_url: str = Field(
        default="./data/files",
        description="Where image files are stored: a directory, s3://BUCKET[/PREFIX] or memory://.",
    )
    staging_dir: str = Field(
        default="",
        description="Where downloads are staged before they are stored, apart from the store "
        "(empty: imagesync-UID in the system's temporary folder). Put it on a file system of "
        "its own so that a full store cannot fill it.",
    )
    public_base_url: str = Field(
        default="",
        description="With an s3:// store: the URL its keys are served under (a CDN in front "
        "of the bucket, or the bucket's public endpoint with its prefix). Images' `file_url` "
        "and rendition URLs then point there; empty: at the API's own file routes.",
    )
    s3_endpoint: str = Field(
        default="", description="S3-compatible endpoint URL (empty: AWS, or AWS_ENDPOINT_URL)."
    )
    s3_region: str = Field(default="", description="S3 region (empty: AWS_REGION or us-east-1).")
    s3_access_key_id: str = Field(default="", description="S3 key id (empty: AWS_ACCESS_KEY_ID).")
    s3_secret_access_key: str = Field(
        default="", description="S3 secret (empty: AWS_SECRET_ACCESS_KEY)."
    )
    host: str = Field(default="127.0.0.1", description="Address `imagesync serve` binds to.")
    forwarded_allow_ips: str = Field(
        default="",
        description="Comma-separated addresses of the TLS proxy in front of `serve` whose "
        "X-Forwarded-Proto and X-Forwarded-For are trusted (`*`: any). Empty: none are.",
    )
    port: int = Field(default=8000, ge=1, le=65535, description="Port `imagesync serve` uses.")
    web_workers: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="API processes `imagesync serve` runs on its port (`--workers`; unset: "
        "one per core this process may run on). The queue's work runs in a process of its "
        "own beside them.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Lowest level of log events written."
    )
    log_format: Literal["console", "json"] = Field(
        default="console", description="`console` for people, `json` for log collectors."
    )

    fetch_allow: str = Field(
        default="",
        description="Comma-separated host:port pairs that may be fetched although they are "
        "private or loopback (e.g. 127.0.0.1:8080). Nothing else private is ever fetched.",
    )
    fetch_ports: str = Field(
        default="80,443,8080,8443",
        description="Comma-separated ports images are fetched from (allow-listed pairs aside).",
    )
    fetch_proxy: str = Field(
        default="",
        description="An http:// proxy for all downloads. Environment proxies (HTTP_PROXY...) "
        "are never used; this is the only way to send downloads through one.",
    )
    fetch_max_bytes: int = Field(default=50 * 1024 * 1024, ge=1, description="Largest download.")
    fetch_timeout_seconds: float = Field(default=120.0, gt=0, description="Deadline per download.")
    fetch_retries: int = Field(default=3, ge=0, le=10, description="Retries of transient failures.")
    fetch_retry_base_seconds: float = Field(
        default=0.5, ge=0, description="First retry delay; doubles each time, with jitter."
    )
    download_concurrency: int = Field(default=8, ge=1, description="Downloads at once.")
    download_concurrency_per_host: int = Field(
        default=4, ge=1, description="Downloads at once of one account from one origin host."
    )
    # One more than an account may take: a lone account runs four products at once (as
    # before fair shares), and another account always finds the fifth slot.
    worker_concurrency: int = Field(default=5, ge=1, description="Products synced at once.")
    account_max_products: int = Field(
        default=4,
        ge=1,
        description="Products of one account synced at once, across all processes: below "
        "the worker concurrency, another account always finds a free slot.",
    )
    account_max_downloads: int = Field(
        default=6,
        ge=1,
        description="Downloads at once of one account, per process: below the download "
        "concurrency, another account's downloads always find room.",
    )
    queue: Literal["embedded", "procrastinate"] = Field(
        default="embedded",
        description="`embedded`: `serve` runs all work in its own process (procrastinate's "
        "worker on PostgreSQL, the local runner on SQLite). `procrastinate`: `serve` only "
        "accepts and enqueues, and `imagesync worker` processes (any number, on any machine) "
        "do the work; needs PostgreSQL.",
    )
    embedded_worker: bool = Field(
        default=True,
        description="With the embedded queue: run the queue's work (syncs, renditions, the "
        "collector) in `serve`; `false`: it waits in the database.",
    )
    worker_shutdown_grace_seconds: float = Field(
        default=30.0,
        ge=0,
        description="On SIGTERM, how long a worker waits for the work it holds before it "
        "releases it and exits.",
    )
    worker_heartbeat_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How often a worker says it is alive; its work is taken over once it "
        "has been silent for three times this.",
    )
    store_wait_seconds: float = Field(
        default=240.0,
        ge=0,
        description="How long one attempt waits, with its downloads in hand, for a store "
        "that refuses writes (tries after 1, 2, 4 ... 30 s); then the bytes are kept for "
        "the next attempt.",
    )
    task_max_attempts: int = Field(
        default=5,
        ge=1,
        le=50,
        description="Runs of a task (a product, a rendition) that fails before it is given "
        "up: a product then ends `failed` with `internal_error`. Each retry waits 2, 4, 8 "
        "... 300 s.",
    )
    image_max_pixels: int = Field(
        default=50_000_000, ge=1, description="Largest image (pixels per frame), from its header."
    )
    image_max_frames: int = Field(default=100, ge=1, description="Most frames of an animation.")
    max_decoded_mb: int = Field(
        default=512,
        ge=16,
        description="Megabytes of decoded pixels one image may take (pixels x bytes per pixel "
        "x frames, from its header), and the most this process decodes at once: a decode "
        "waits for its share; a larger image is refused (`too_much_decoded`).",
    )
    rendition_widths: str = Field(
        default="200,400,800",
        description="Comma-separated widths of the WebP renditions (empty: none). An image "
        "gets those narrower than itself: never upscaled.",
    )
    rendition_concurrency: int = Field(default=1, ge=1, description="Originals rendered at once.")
    blob_grace_days: float = Field(
        default=7.0,
        ge=0.01,
        description="Days a stored file no image uses is kept before it is deleted (with "
        "the memory that its URL was seen).",
    )
    max_images_per_product: int = Field(default=250, ge=1, description="Images per product.")
    idempotency_key_hours: int = Field(
        default=24,
        ge=1,
        le=24 * 30,
        description="How long a sync's `Idempotency-Key` answers with the job it recorded; "
        "after that the key may be used again.",
    )
    webhook_retry_seconds: str = Field(
        default="10,60,300,1800,7200,18000,28800,28800",
        description="Comma-separated seconds between a failed webhook call and the next; "
        "after the last, the delivery fails and its endpoint is disabled. The default "
        "calls 9 times over about 24 hours.",
    )
    webhook_delivery_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        description="Days a finished webhook delivery (delivered or failed) is kept, with "
        "its attempts, before it is deleted.",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=60, description="How long a webhook call waits for its answer."
    )
    token_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="How long an API process keeps a token it has read (no database read "
        "per request); a token revoked elsewhere stops working within this time. `0`: "
        "read it on every request.",
    )
    rate_limit: str = Field(
        default="600/minute",
        description="Requests per API token, in the `limits` notation (`600/minute`, "
        "`20/second`); `0`: no limit.",
    )
    sign_in_rate_limit: str = Field(
        default="10/minute",
        description="Sign-in attempts to the admin pages per client address; `0`: no limit.",
    )
    rate_limit_storage: str = Field(
        default="",
        description="Where the counts live, shared by every process: unset, the database "
        "when it is PostgreSQL; `redis://HOST:PORT` (needs `imagesync[redis]`); or "
        "`memory://`, each process its own (the only choice on SQLite).",
    )
    metrics_token: str = Field(
        default="",
        description="A bearer token (16 characters or more) that `GET /metrics` asks for; "
        "empty: `/metrics` is off (404).",
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="A port of its own on which `serve` and `imagesync worker` answer "
        "`GET /metrics` (with `IMAGESYNC_METRICS_TOKEN`), away from the API; `0`: `serve` "
        "answers on its API port and a worker not at all.",
    )
    debug: bool = Field(
        default=False,
        description="Commands print the whole traceback of a failure, not only its sentence.",
    )
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, description="Largest request.")

    @field_validator("rate_limit", "sign_in_rate_limit")
    @classmethod
    def _rate_rule(cls, value: str) -> str:
        if value.strip() not in ("", "0"):
            from limits import parse

            parse(value)  # a ValueError that says what is wrong
        return value

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token(cls, value: str) -> str:
        if value and (len(value) < 16 or not value.isascii() or not value.isprintable()):
            raise ValueError("must be 16 printable ASCII characters or more (or empty: off)")
        return value

    @field_validator("rate_limit_storage")
    @classmethod
    def _rate_storage(cls, value: str) -> str:
        if value and not value.startswith(("memory://", "redis://", "rediss://")):
            raise ValueError(
                "leave it unset (the database), or give redis://HOST:PORT or memory://"
            )
        return value

    @field_validator("fetch_allow")
    @classmethod
    def _allow_pairs(cls, value: str) -> str:
        parse_allow_list(p for p in value.split(",") if p.strip())
        return value

    @field_validator("storage_url")
    @classmethod
    def _storage(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if sep and scheme not in ("file", "s3", "memory"):
            raise ValueError("must be a directory, file://PATH, s3://BUCKET[/PREFIX] or memory://")
        if scheme == "s3" and not rest.split("/", 1)[0]:
            raise ValueError("s3:// needs a bucket: s3://BUCKET[/PREFIX]")
        return value

    @field_validator("public_base_url")
    @classmethod
    def _public_base(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        scheme, sep, rest = value.partition("://")
        if value and not (sep and scheme in ("http", "https") and rest):
            raise ValueError("must be an http:// or https:// URL, such as https://cdn.example.com")
        return value

    @field_validator("rendition_widths")
    @classmethod
    def _widths(cls, value: str) -> str:
        parse_widths(value)
        return value

    @property
    def rendition_width_set(self) -> tuple[int, ...]:
        return parse_widths(self.rendition_widths)

    @field_validator("webhook_retry_seconds")
    @classmethod
    def _waits(cls, value: str) -> str:
        parse_waits(value)
        return value

    @property
    def webhook_waits(self) -> tuple[float, ...]:
        return parse_waits(self.webhook_retry_seconds)

    @field_validator("fetch_ports")
    @classmethod
    def _ports(cls, value: str) -> str:
        parse_ports(value)
        return value

    @field_validator("fetch_proxy")
    @classmethod
    def _proxy(cls, value: str) -> str:
        if value and not (value.startswith("http://") and len(value) > len("http://")):
            raise ValueError("must be an http://HOST:PORT URL")
        return value

    @property
    def fetch_port_set(self) -> frozenset[int]:
        return parse_ports(self.fetch_ports)

    @property
    def fetch_allow_pairs(self) -> frozenset[tuple[str, int]]:
        return parse_allow_list(p for p in self.fetch_allow.split(",") if p.strip())

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        normalize_database_url(value)
        return value

    @model_validator(mode="after")
    def _public_files_need_a_bucket(self) -> Settings:
        if self.public_base_url and not self.storage_url.startswith("s3://"):
            raise ValueError(
                "IMAGESYNC_PUBLIC_BASE_URL serves a bucket's objects: it needs "
                "IMAGESYNC_STORAGE_URL=s3://BUCKET[/PREFIX]. Files in a directory are served "
                "by the API's file routes; put a CDN in front of the API for them"
            )
        return self

    @model_validator(mode="after")
    def _queue_needs_postgres(self) -> Settings:
        if self.queue == "procrastinate" and not self.async_database_url.startswith("postgresql"):
            raise ValueError(
                "IMAGESYNC_QUEUE=procrastinate needs PostgreSQL: set IMAGESYNC_DATABASE_URL "
                "to a postgresql:// URL, or use IMAGESYNC_QUEUE=embedded"
            )
        return self

    @property
    def api_processes(self) -> int:
        """`web_workers`, else one per core this process may run on."""
        return self.web_workers or len(os.sched_getaffinity(0))

    @property
    def stalled_worker_seconds(self) -> float:
        """A worker silent this long is taken for dead, and its work is run again."""
        return self.worker_heartbeat_seconds * 3

    @property
    def async_database_url(self) -> str:
        return normalize_database_url(self.database_url)

    @property
    def rate_counts_in(self) -> str:
        """Where the rate limits count: `database` (PostgreSQL), or a `limits` storage URL."""
        if self.rate_limit_storage:
            return self.rate_limit_storage
        return "database" if self.async_database_url.startswith("postgresql") else "memory://"


def parse_number_list(value: str, *, low: int, high: int, what: str) -> tuple[int, ...]:
    """Distinct whole numbers from a comma-separated list, each from `low` to `high`."""
    numbers = set()
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or not low <= int(part) <= high:
            raise ValueError(f"{part!r} is not {what} from {low} to {high}")
        numbers.add(int(part))
    return tuple(sorted(numbers))


def parse_waits(value: str) -> tuple[float, ...]:
    """Waits in seconds, in order, from a comma-separated list; each more than 0 and at
    most a day."""
    waits = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        try:
            wait = float(part)
        except ValueError:
            wait = -1.0
        if not 0 < wait <= 86400:
            raise ValueError(f"{part!r} is not a number of seconds from 0 to 86400")
        waits.append(wait)
    return tuple(waits)


def parse_allow_list(entries: Iterable[str]) -> frozenset[tuple[str, int]]:
    """`host:port` pairs an operator allows even when they are private or loopback."""
    allowed = set()
    for entry in entries:
        host, sep, port = entry.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"{entry!r} is not host:port")
        allowed.add((host.strip("[]").lower(), int(port)))
    return frozenset(allowed)


def parse_ports(value: str) -> frozenset[int]:
    """A comma-separated list of TCP ports."""
    ports = parse_number_list(value, low=1, high=65535, what="a TCP port")
    if not ports:
        raise ValueError("give at least one port")
    return frozenset(ports)


def parse_widths(value: str) -> tuple[int, ...]:
    return parse_number_list(value, low=16, high=4096, what="a width")


def normalize_database_url(url: str) -> str:
    """Map the URL forms people write to the async drivers the service runs on."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("must look like sqlite:///PATH or postgresql+psycopg://USER@HOST/DB")
    match scheme:
        case "sqlite" | "sqlite+aiosqlite":
            return f"sqlite+aiosqlite://{rest}"
        case "postgresql" | "postgres" | "postgresql+psycopg" | "postgresql+psycopg_async":
            return f"postgresql+psycopg://{rest}"
        case _:
            raise ValueError(f"unsupported database {scheme!r}: use sqlite or postgresql")


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; unknown `IMAGESYNC_*` variables are refused,
    since they are usually typos that would otherwise be silently ignored (the client's
    own variables are known)."""
    known = {f"{ENV_PREFIX}{name}".upper() for name in Settings.model_fields} | CLIENT_VARIABLES
    problems = [
        f"{key}: {RETIRED.get(key.upper(), 'unknown setting')}"
        for key in os.environ
        if key.upper().startswith(ENV_PREFIX) and key.upper() not in known
    ]
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        for error in exc.errors():
            if not error["loc"]:  # a rule across settings names them in its message
                problems.append(error["msg"].removeprefix("Value error, "))
                continue
            name = ENV_PREFIX + "_".join(str(part) for part in error["loc"]).upper()
            problems.append(f"{name}: {error['msg']}")
    if problems:
        raise SettingsError("invalid settings:\n  " + "\n  ".join(sorted(problems)))
    return settings


def ensure_sqlite_directory(settings: Settings, *, create: bool = False) -> None:
    """Create the SQLite database file (0600) and, for the default data folder or when
    `create` (`imagesync migrate`), its folder. A missing folder elsewhere is a
    `SettingsError`: a typo in the path must not leave a new, empty database behind."""
    url = settings.async_database_url
    prefix = "sqlite+aiosqlite:///"
    if not url.startswith(prefix):
        return
    path = url[len(prefix) :].split("?", 1)[0]
    if not path or path == ":memory:":
        return
    folder = Path(path).parent
    default = Path(Settings.model_fields["database_url"].default.removeprefix("sqlite:///"))
    if not folder.is_dir():
        if not (create or folder.resolve() == default.parent.resolve()):
            raise SettingsError(
                f"IMAGESYNC_DATABASE_URL: the folder {folder} does not exist; create it, "
                "or run `imagesync migrate`, which does"
            )
        folder.mkdir(parents=True, exist_ok=True)
    # Readable by this user alone: it holds the token hashes and every account's data
    # (SQLite gives its -wal and -shm files the same mode).
    Path(path).touch(mode=0o600, exist_ok=True)
