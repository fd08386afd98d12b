"""The real contract's request bodies for a catalog: 10 products per image sync request,
each image attached to the variants of one colour."""

from __future__ import annotations

from typing import Any

from catalog import COLORS, Catalog

PER_REQUEST = 10


def attributes_body() -> dict[str, Any]:
    return {
        "attributes": [
            {"name": "Colour", "values": [{"value": name, "code": code} for name, code in COLORS]}
        ]
    }


def product_bodies(catalog: Catalog) -> list[dict[str, Any]]:
    """`POST /products/sync` bodies, 100 products each."""
    products = [
        {
            "item_number": p.item_number,
            "variants": [
                {"sku": sku, "attributes": {"Colour": colour}} for sku, colour in p.variants
            ],
        }
        for p in catalog.products
    ]
    return [{"products": products[i : i + 100]} for i in range(0, len(products), 100)]


def image_bodies(catalog: Catalog, images_base: str) -> list[dict[str, Any]]:
    """`POST /products/images/sync` bodies, `PER_REQUEST` products each."""
    codes = dict(COLORS)
    products = []
    for p in catalog.products:
        images = []
        for i, name in enumerate(p.images):
            colour = p.variants[i % len(p.variants)][1]
            images.append(
                {
                    "url": f"{images_base}/{name}",
                    "sort": i + 1,
                    "alt": f"{p.item_number} view {i + 1}",
                    "attach_to_variants_matching_attribute_code": {"Colour": codes[colour]},
                }
            )
        products.append({"item_number": p.item_number, "images": images})
    return [
        {"products": products[i : i + PER_REQUEST]} for i in range(0, len(products), PER_REQUEST)
    ]
