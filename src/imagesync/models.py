"""Every table, imported in one place so Alembic sees the whole schema."""

from imagesync.catalog.models import (
    Account,
    ApiToken,
    Attribute,
    AttributeValue,
    Product,
    Variant,
    VariantAttribute,
)

__all__ = [
    "Account",
    "ApiToken",
    "Attribute",
    "AttributeValue",
    "Product",
    "Variant",
    "VariantAttribute",
]
