"""Every code a job's product or image can fail with, and what it means.

The job schema lists them as an enum, the README as a table; a test keeps both, and every
error class's code, in step with this one list.
"""

from __future__ import annotations

RESULT_CODES: dict[str, str] = {
    # Fetching: the origin or the way to it.
    "invalid_url": "The URL cannot be fetched as written.",
    "address_refused": "The host resolves to an address the service must not connect to "
    "(private, loopback, link-local, ...).",
    "port_refused": "The URL's port is not one downloads are made from.",
    "download_http_error": "The origin answered with an error status (the detail says which).",
    "timeout": "The download did not finish within its deadline.",
    "connection_error": "The origin could not be reached, or the connection broke.",
    "too_large": "The file is over the size limit.",
    "too_many_redirects": "More than 5 redirects.",
    "bad_redirect": "A redirect without a usable target.",
    "redirect_loop": "The redirects lead back to a URL already visited.",
    "unsupported_encoding": "The origin compressed the body although asked not to.",
    "download_failed": "The download failed for another reason (the detail says which).",
    # The bytes: what was fetched is not a usable image.
    "not_an_image": "The bytes are not an image.",
    "unsupported_format": "An image format other than JPEG, PNG, GIF, WebP or AVIF.",
    "too_many_pixels": "More pixels than the limit (50 megapixels by default).",
    "too_many_frames": "More frames than the limit (100 by default).",
    "too_much_decoded": "Decodes to more memory than the limit (512 MB by default): pixels "
    "x bytes per pixel x frames.",
    "corrupt_image": "A truncated or damaged file.",
    "invalid_image": "The image cannot be read for another reason (the detail says which).",
    # The service: worth another try, and tried again by itself first.
    "storage_error": "The file could not be written; the product is tried again.",
    "store_conflict": "The stored copy was being deleted at that moment; tried again.",
    "internal_error": "The product's run failed repeatedly; its images were left as they were.",
    # The product as a whole.
    "product_not_found": "The account has no product with this item number.",
    "superseded": "A newer sync of this product was applied first; it wins.",
}


def describe() -> str:
    """The codes as a Markdown list, for the schema's description."""
    return "\n".join(f"- `{code}`: {meaning}" for code, meaning in RESULT_CODES.items())


# What a warning on an image can say: the image was applied, but not as its rule meant.
WARNING_CODES: dict[str, str] = {
    "unknown_attribute": "No variant of the product has an attribute of the rule's name "
    "(often a name the account does not have, or spelt differently).",
    "unknown_attribute_code": "No variant of the product has this code for the attribute "
    "(often the value's name given instead of its code).",
    "rule_matches_no_variant": "The product has no variants, or each pair of the rule is "
    "found on some variant but no variant has them all.",
}


def describe_warnings() -> str:
    return "\n".join(f"- `{code}`: {meaning}" for code, meaning in WARNING_CODES.items())
