from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints


class RequestModel(BaseModel):
    """Base of request bodies: unknown fields are errors (they are usually typos)."""

    model_config = ConfigDict(extra="forbid")


class PageMeta(BaseModel):
    page: int = Field(description="Page number, from 0.")
    limit: int = Field(description="Items per page.")
    total: int = Field(description="Items across all pages.")
    pages: int = Field(description="Number of pages.")


# Integers a column holds on both databases: PostgreSQL's INTEGER is 32 bits, and SQLite
# must not accept what PostgreSQL refuses.
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
Int32 = Annotated[int, Field(ge=INT32_MIN, le=INT32_MAX)]


def storable(value: str) -> str:
    """Text both databases can store: no NUL character (PostgreSQL refuses it in text)
    and no lone surrogate (JSON's `\\ud800` escapes decode to one; it is not UTF-8)."""
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from None
    return value


Name = Annotated[str, StringConstraints(min_length=1, max_length=100), AfterValidator(storable)]
Key = Annotated[str, StringConstraints(min_length=1, max_length=255), AfterValidator(storable)]
# An id in a path (a job's or an image's): found or not, never a crash.
Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=64), AfterValidator(storable)
]
