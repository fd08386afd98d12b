"""The queue's processes fetch from the image server of the sync tests."""

from tests.sync.conftest import image_server

__all__ = ["image_server"]
