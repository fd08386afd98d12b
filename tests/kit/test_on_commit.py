"""`kit.db.on_commit`: what waits for a transaction runs once it commits, and never
for one rolled back, not even when the same session commits later."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from imagesync.kit.db import create_engine, create_sessionmaker, on_commit


async def test_it_runs_once_on_commit_and_never_after_a_rollback(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'one.db'}")
    sessionmaker = create_sessionmaker(engine)
    ran: list[str] = []
    try:
        async with sessionmaker() as session:
            await session.execute(text("SELECT 1"))
            on_commit(session, lambda: ran.append("committed"))
            assert ran == []  # not before the commit
            await session.commit()
            assert ran == ["committed"]
            await session.commit()  # the next transaction of the session: not again
            assert ran == ["committed"]

            await session.execute(text("SELECT 1"))
            on_commit(session, lambda: ran.append("rolled back"))
            await session.rollback()
            await session.execute(text("SELECT 1"))
            await session.commit()  # a later commit does not run the dropped one
            assert ran == ["committed"]
    finally:
        await engine.dispose()
