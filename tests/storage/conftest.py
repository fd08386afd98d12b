"""The store under image sync: the sync tests' image server, settings and account."""

from tests.sync.conftest import headers, image_server, settings

__all__ = ["headers", "image_server", "settings"]
