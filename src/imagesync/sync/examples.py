"""The examples the OpenAPI document shows: TRAEDE's documented request, a finished job
and a dry-run plan (as the API answers them, nulls included)."""

from __future__ import annotations

from typing import Any

TRAEDE_EXAMPLE: dict[str, Any] = {
    "products": [
        {
            "item_number": "cool-product-001",
            "images": [
                {
                    "url": "https://imageserver.com/black-product-01.jpg",
                    "sort": 1,
                    "alt": "A black t-shirt front",
                    "attach_to_variants_matching_attribute_code": {"Color": "100"},
                },
                {
                    "url": "https://imageserver.com/black-product-02.jpg",
                    "sort": 2,
                    "alt": "A black t-shirt back",
                    "attach_to_variants_matching_attribute_code": {"Color": "100"},
                },
                {
                    "url": "https://imageserver.com/white-product-01.jpg",
                    "sort": 3,
                    "alt": "A white t-shirt front",
                    "attach_to_variants_matching_attribute_code": {"Color": "900"},
                },
                {
                    "url": "https://imageserver.com/white-product-02.jpg",
                    "sort": 4,
                    "alt": "A white t-shirt back",
                    "attach_to_variants_matching_attribute_code": {"Color": "900"},
                },
            ],
        }
    ]
}


FINISHED_JOB_EXAMPLE: dict[str, Any] = {
    "id": "0b9f3c1e6d2a4f5b8c7d9e0a1b2c3d4e",
    "status": "partially_failed",
    "created_at": "2026-11-27T02:00:00Z",
    "finished_at": "2026-11-27T02:00:03Z",
    "products": [
        {
            "item_number": "cool-product-001",
            "status": "succeeded",
            "error": None,
            "counts": {
                "created": 4,
                "kept": 0,
                "updated": 0,
                "deleted": 1,
                "skipped": 0,
                "failed": 0,
                "downloaded": 4,
            },
            "images": [
                {
                    "url": f"https://imageserver.com/{name}.jpg",
                    "existance_key": None,
                    "outcome": "created",
                    "image_id": f"5f0c1d2e3a4b5c6d7e8f9a0b1c2d3e4{n}",
                    "error": None,
                }
                for n, name in enumerate(
                    ["black-product-01", "black-product-02", "white-product-01", "white-product-02"]
                )
            ],
        },
        {
            "item_number": "cool-product-002",
            "status": "failed",
            "error": {
                "code": "download_http_error",
                "detail": "1 image(s) could not be fetched or are not usable images; "
                "the product's images were left as they were",
            },
            "counts": {
                "created": 0,
                "kept": 0,
                "updated": 0,
                "deleted": 0,
                "skipped": 0,
                "failed": 1,
                "downloaded": 0,
            },
            "images": [
                {
                    "url": "https://imageserver.com/green-product-01.jpg",
                    "existance_key": None,
                    "outcome": "failed",
                    "image_id": None,
                    "error": {"code": "download_http_error", "detail": "origin answered 404"},
                }
            ],
        },
    ],
}

# TRAEDE's example sent again with a new back picture for White and a new alt text for
# the black front, as `?dry_run=true` answers it.
_BLACK = [f"cool-product-001-100-{size}" for size in ("L", "M", "S", "XL", "XS")]
_WHITE = [f"cool-product-001-900-{size}" for size in ("L", "M", "S", "XL", "XS")]
PLAN_EXAMPLE: dict[str, Any] = {
    "dry_run": True,
    "products": [
        {
            "item_number": "cool-product-001",
            "status": "planned",
            "error": None,
            "pending": False,
            "counts": {"create": 1, "keep": 2, "update": 1, "delete": 1, "skip": 0, "download": 1},
            "images": [
                {
                    "url": "https://imageserver.com/black-product-01.jpg",
                    "existance_key": None,
                    "action": "update",
                    "image_id": "5f0c1d2e3a4b5c6d7e8f9a0b1c2d3e40",
                    "variants": _BLACK,
                    "download": False,
                },
                {
                    "url": "https://imageserver.com/black-product-02.jpg",
                    "existance_key": None,
                    "action": "keep",
                    "image_id": "5f0c1d2e3a4b5c6d7e8f9a0b1c2d3e41",
                    "variants": _BLACK,
                    "download": False,
                },
                {
                    "url": "https://imageserver.com/white-product-01.jpg",
                    "existance_key": None,
                    "action": "keep",
                    "image_id": "5f0c1d2e3a4b5c6d7e8f9a0b1c2d3e42",
                    "variants": _WHITE,
                    "download": False,
                },
                {
                    "url": "https://imageserver.com/white-product-02-v2.jpg",
                    "existance_key": None,
                    "action": "create",
                    "image_id": None,
                    "variants": _WHITE,
                    "download": True,
                },
            ],
            "deletes": [
                {
                    "image_id": "5f0c1d2e3a4b5c6d7e8f9a0b1c2d3e43",
                    "url": "https://imageserver.com/white-product-02.jpg",
                    "existance_key": None,
                }
            ],
        }
    ],
}
# Response examples by schema name; the app sets them on its OpenAPI document itself
# (FastAPI leaves out the nulls of examples it renders).
RESPONSE_EXAMPLES = {"SyncJobRead": FINISHED_JOB_EXAMPLE, "SyncPlan": PLAN_EXAMPLE}
