"""Whole tables, read at once, for the demo's closing summary (`idlehook demo`).

The demo's store holds a few dozen rows; nothing that may meet a real store's size calls this.
"""

from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from store.models import Delivery, HandlerRun, TrackedSession


@dataclass(frozen=True)
class Contents:
    deliveries: list[Delivery]
    runs: list[HandlerRun]
    tracked: dict[str, TrackedSession]


def read_all(engine: Engine) -> Contents:
    """Every delivery, handler run and tracked session, read in one transaction."""
    with Session(engine, expire_on_commit=False) as db:
        return Contents(
            deliveries=list(db.exec(select(Delivery))),
            runs=list(db.exec(select(HandlerRun))),
            tracked={t.id: t for t in db.exec(select(TrackedSession))},
        )
