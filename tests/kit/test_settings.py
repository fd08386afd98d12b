import pytest

from imagesync.kit.settings import Settings, SettingsError, load_settings, normalize_database_url


def test_defaults_are_the_embedded_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("IMAGESYNC_"):
            monkeypatch.delenv(key)
    settings = load_settings()
    assert settings.async_database_url == "sqlite+aiosqlite:///./data/imagesync.db"
    assert settings.storage_url == "./data/files"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGESYNC_PORT", "9001")
    monkeypatch.setenv("IMAGESYNC_DATABASE_URL", "postgresql://u@db/x")
    settings = load_settings()
    assert settings.port == 9001
    assert settings.async_database_url == "postgresql+psycopg://u@db/x"


def test_unknown_setting_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGESYNC_DATABSE_URL", "sqlite:///x.db")
    with pytest.raises(SettingsError, match="IMAGESYNC_DATABSE_URL: unknown setting"):
        load_settings()


def test_a_retired_setting_is_refused_with_what_replaced_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMAGESYNC_COLLECT_INTERVAL_SECONDS", "60")
    with pytest.raises(SettingsError, match="COLLECT_INTERVAL_SECONDS: no longer read") as caught:
        load_settings()
    assert "periodic task" in str(caught.value)


def test_every_invalid_setting_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGESYNC_PORT", "eighty")
    monkeypatch.setenv("IMAGESYNC_DATABASE_URL", "mysql://root@localhost/x")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "IMAGESYNC_PORT" in str(caught.value)
    assert "IMAGESYNC_DATABASE_URL" in str(caught.value)
    assert "unsupported database 'mysql'" in str(caught.value)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///./data/x.db", "sqlite+aiosqlite:///./data/x.db"),
        ("sqlite+aiosqlite:////abs/x.db", "sqlite+aiosqlite:////abs/x.db"),
        ("postgresql://u@h:5432/d", "postgresql+psycopg://u@h:5432/d"),
        ("postgres://u@h/d", "postgresql+psycopg://u@h/d"),
        ("postgresql+psycopg://u@h/d", "postgresql+psycopg://u@h/d"),
    ],
)
def test_database_urls_map_to_async_drivers(given: str, expected: str) -> None:
    assert normalize_database_url(given) == expected


@pytest.mark.parametrize("bad", ["data.db", "mysql://x/y", "oracle://x"])
def test_unusable_database_urls_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="sqlite"):
        normalize_database_url(bad)


def test_port_must_be_a_port() -> None:
    with pytest.raises(ValueError, match="port"):
        Settings(port=70000)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("IMAGESYNC_FETCH_PORTS", "80,ssh"),
        ("IMAGESYNC_FETCH_PORTS", ""),
        ("IMAGESYNC_FETCH_PROXY", "socks5://127.0.0.1:1080"),
        ("IMAGESYNC_FETCH_ALLOW", "127.0.0.1"),
    ],
)
def test_fetch_settings_are_checked(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()


def test_fetch_ports_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGESYNC_FETCH_PORTS", "443, 8443")
    assert load_settings().fetch_port_set == frozenset({443, 8443})
