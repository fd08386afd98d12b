from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints


class RequestModel(BaseModel):
    """Base of request bodies: unknown fields are errors (they are usually typos)."""

    model_config = ConfigDict(extra="forbid")


class PageMeta(BaseModel):
    page: int = Field(description="Page number, from 0.")
    limit: int = Field(description="Items per page.")
    total: int = Field(description="Items across all pages.")
    pages: int = Field(description="Number of pages.")


Name = Annotated[str, StringConstraints(min_length=1, max_length=100)]
Key = Annotated[str, StringConstraints(min_length=1, max_length=255)]
