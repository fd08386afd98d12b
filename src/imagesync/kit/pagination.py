"""TRAEDE-style pagination: `page` counts from 0, `limit` defaults to 20, at most 60."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query

from imagesync.kit.schemas import PageMeta

DEFAULT_LIMIT = 20
MAX_LIMIT = 60
MAX_PAGE = 1_000_000  # an offset both databases take (an unbounded one overflowed)


@dataclass(frozen=True)
class PageParams:
    page: int
    limit: int

    @property
    def offset(self) -> int:
        return self.page * self.limit

    def meta(self, total: int) -> PageMeta:
        return PageMeta(
            page=self.page, limit=self.limit, total=total, pages=-(-total // self.limit)
        )


async def _page_params(
    page: Annotated[int, Query(ge=0, le=MAX_PAGE, description="Page number, from 0.")] = 0,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description=f"Items per page, at most {MAX_LIMIT}.")
    ] = DEFAULT_LIMIT,
) -> PageParams:
    return PageParams(page=page, limit=limit)


PageDep = Annotated[PageParams, Depends(_page_params)]
