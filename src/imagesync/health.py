from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from imagesync.kit.deps import SessionDep
from imagesync.kit.errors import ErrorResponse
from imagesync.kit.routes import StrictRoute

router = APIRouter(tags=["health"], route_class=StrictRoute)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=None,
    responses={503: {"model": ErrorResponse, "description": "The database is unreachable"}},
)
async def readyz(session: SessionDep) -> dict[str, str] | JSONResponse:
    """The process can reach its database."""
    try:
        await session.execute(text("SELECT 1"))
    except Exception as exc:
        return JSONResponse(
            {
                "errors": [
                    {
                        "status": 503,
                        "code": "database_unreachable",
                        "title": "Database unreachable",
                        "detail": str(exc),
                    }
                ]
            },
            status_code=503,
        )
    return {"status": "ok", "database": "ok"}
