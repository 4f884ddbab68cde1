"""Facility onboarding settings: AE title, quiet period, shadow mode and enabled models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from sidecar_core.db import Database
from sidecar_core.errors import AlreadyExists, InvalidArgument, NotFound
from sidecar_core.store.models import Facility


@dataclass(frozen=True)
class FacilityView:
    name: str
    ae_title: str | None
    shadow_mode: bool
    quiet_period_s: float
    enabled_models: list[str] | None


async def list_facilities(db: Database) -> list[FacilityView]:
    async with db.read() as s:
        rows = (await s.execute(select(Facility).order_by(Facility.name))).scalars().all()
    return [FacilityView(r.name, r.ae_title, r.shadow_mode, r.quiet_period_s,
                         list(r.enabled_models) if r.enabled_models is not None else None)
            for r in rows]


async def update_facility(db: Database, name: str, *, ae_title: str | None = None,
                          shadow_mode: bool | None = None, quiet_period_s: float | None = None,
                          enabled_models: list[str] | None = None,
                          all_models: bool = False, known_models: list[str] | None = None
                          ) -> FacilityView:
    """Changes the given settings of facility `name`; unknown models are refused."""
    values: dict[str, Any] = {}
    if ae_title is not None:
        if not 0 < len(ae_title) <= 16:
            raise InvalidArgument("INVALID_AE_TITLE", "AE title must be 1 to 16 characters",
                                  ae_title=ae_title)
        values["ae_title"] = ae_title
    if shadow_mode is not None:
        values["shadow_mode"] = shadow_mode
    if quiet_period_s is not None:
        if not 0 <= quiet_period_s <= 3600:
            raise InvalidArgument("INVALID_QUIET_PERIOD", "quiet period must be 0..3600 s",
                                  quiet_period_s=quiet_period_s)
        values["quiet_period_s"] = quiet_period_s
    if all_models:
        values["enabled_models"] = None
    elif enabled_models is not None:
        unknown = sorted(set(enabled_models) - set(known_models or enabled_models))
        if unknown:
            raise InvalidArgument("UNKNOWN_MODEL", f"not in the model registry: {unknown}",
                                  models=",".join(unknown))
        values["enabled_models"] = enabled_models
    try:
        async with db.unit_of_work() as s:
            if values:
                await s.execute(update(Facility).where(Facility.name == name).values(**values))
            row = (await s.execute(select(Facility).where(Facility.name == name))
                   ).scalar_one_or_none()
    except IntegrityError as exc:
        raise AlreadyExists("AE_TITLE_TAKEN", f"AE title {ae_title!r} belongs to another "
                            "facility", ae_title=str(ae_title)) from exc
    if row is None:
        raise NotFound("FACILITY_NOT_FOUND", f"no facility {name!r}", facility=name)
    return FacilityView(row.name, row.ae_title, row.shadow_mode, row.quiet_period_s,
                        list(row.enabled_models) if row.enabled_models is not None else None)
