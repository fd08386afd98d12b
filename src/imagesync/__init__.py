"""imagesync: keeps a product catalog's images in sync with an external source."""

__version__ = "0.1.0"
