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
from imagesync.kit.ratelimit import RateWindow
from imagesync.queue.models import QueueJob
from imagesync.storage.models import Blob, Rendition
from imagesync.sync.models import (
    IdempotencyKey,
    Image,
    ImageVariant,
    Source,
    SyncJob,
    SyncJobProduct,
    Webhook,
    WebhookDelivery,
)
from imagesync.web.models import AdminSession

__all__ = [
    "Account",
    "AdminSession",
    "ApiToken",
    "Attribute",
    "AttributeValue",
    "Blob",
    "IdempotencyKey",
    "Image",
    "ImageVariant",
    "Product",
    "QueueJob",
    "RateWindow",
    "Rendition",
    "Source",
    "SyncJob",
    "SyncJobProduct",
    "Variant",
    "VariantAttribute",
    "Webhook",
    "WebhookDelivery",
]
