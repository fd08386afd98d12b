"""`push` sends to a real `imagesync serve` that fetches from the image server of the
sync tests."""

from tests.sync.conftest import image_server

__all__ = ["image_server"]
