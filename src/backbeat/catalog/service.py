"""Catalog operations: create, read, list, update and change status, with ownership rules.

One generic implementation serves every resource; a ``Resource`` describes what differs
(its model, its parent, who may write it). Every write bumps the catalog version in the
same transaction so ad servers notice it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from backbeat.catalog.auth import Principal
from backbeat.catalog.models import AdSlot, Advertiser, Campaign, CatalogState, Creative, LineItem
from backbeat.catalog.policy import check_line_item_booking
from backbeat.catalog.vocabulary import Status
from backbeat.db import Base
from backbeat.errors import Conflict, InvalidInput, NotFound, PreconditionFailed
from backbeat.types import utcnow

MAX_PAGE = 500


@dataclass(frozen=True)
class Resource:
    """What differs between catalog resources."""

    name: str
    model: type[Base]
    parent_field: str | None = None
    parent: Resource | None = None
    admin_writes: bool = False
    public_reads: bool = False
    owner_column: str = "advertiser_id"
    check: Callable[[dict[str, Any], Base | None], None] | None = None
    # List filters: query parameter -> column of this model, or of a parent reached by a join
    # (creatives by campaign go through their line item). Any other parameter is a 422.
    filters: tuple[str, ...] = ()


def _check_flight(values: dict[str, Any], existing: Base | None) -> None:
    start = values.get("start_at", getattr(existing, "start_at", None))
    end = values.get("end_at", getattr(existing, "end_at", None))
    if isinstance(start, datetime) and isinstance(end, datetime) and end <= start:
        raise InvalidInput("end_at must be after start_at", reason="end-before-start")


ADVERTISERS = Resource("advertiser", Advertiser, admin_writes=True, owner_column="id")
CAMPAIGNS = Resource(
    "campaign",
    Campaign,
    "advertiser_id",
    ADVERTISERS,
    check=_check_flight,
    filters=("advertiser_id",),
)
LINE_ITEMS = Resource(
    "line_item", LineItem, "campaign_id", CAMPAIGNS, filters=("advertiser_id", "campaign_id")
)
CREATIVES = Resource(
    "creative",
    Creative,
    "line_item_id",
    LINE_ITEMS,
    filters=("advertiser_id", "campaign_id", "line_item_id"),
)
SLOTS = Resource("slot", AdSlot, admin_writes=True, public_reads=True, owner_column="")


def bump_catalog_version(session: Session) -> None:
    session.execute(
        update(CatalogState)
        .where(CatalogState.id == 1)
        .values(version=CatalogState.version + 1, changed_at=utcnow())
    )


def catalog_version(session: Session) -> int:
    return int(
        session.execute(select(CatalogState.version).where(CatalogState.id == 1)).scalar_one()
    )


def _visible(resource: Resource, principal: Principal) -> Any:
    statement = select(resource.model)
    if principal.is_admin or resource.public_reads or not resource.owner_column:
        return statement
    return statement.where(
        getattr(resource.model, resource.owner_column) == principal.advertiser_id
    )


def get_object(
    *, session: Session, resource: Resource, object_id: int, principal: Principal
) -> Any:
    """Fetch one object; another advertiser's object is simply not found."""
    if not 0 < object_id < 2**31:
        raise NotFound(
            f"{resource.name} {object_id} not found",
            reason=f"{resource.name.replace('_', '-')}-not-found",
        )
    pk = resource.model.__mapper__.primary_key[0]
    found = session.execute(
        _visible(resource, principal).where(pk == object_id)
    ).scalar_one_or_none()
    if found is None:
        raise NotFound(
            f"{resource.name} {object_id} not found",
            reason=f"{resource.name.replace('_', '-')}-not-found",
        )
    return found


def list_objects(
    *,
    session: Session,
    resource: Resource,
    principal: Principal,
    filters: dict[str, Any],
    limit: int,
    offset: int,
) -> tuple[list[Any], int]:
    statement = _visible(resource, principal)
    for column, value in filters.items():
        if value is None:
            continue
        if column == "status":
            statement = statement.where(resource.model.status == value)
        elif column not in resource.filters:
            raise InvalidInput(
                f"{resource.name} lists cannot be filtered by {column}",
                reason="unknown-filter",
                field=column,
            )
        elif column in resource.model.__table__.columns:
            statement = statement.where(getattr(resource.model, column) == value)
        elif resource is CREATIVES and column == "campaign_id":
            statement = statement.where(
                Creative.line_item_id.in_(select(LineItem.id).where(LineItem.campaign_id == value))
            )
    count = session.execute(select(func.count()).select_from(statement.subquery())).scalar_one()
    pk = resource.model.__mapper__.primary_key[0]
    rows = (
        session.execute(statement.order_by(pk).limit(min(limit, MAX_PAGE)).offset(offset))
        .scalars()
        .all()
    )
    return list(rows), int(count)


def _writable(resource: Resource, principal: Principal) -> None:
    if resource.admin_writes:
        principal.require_admin()


def create_object(
    *, session: Session, resource: Resource, values: dict[str, Any], principal: Principal
) -> Any:
    """Insert an object under a parent the caller can see and that is not archived."""
    if resource.name == "advertiser" or resource.admin_writes:
        principal.require_admin()
    values = dict(values)
    if resource.parent is not None and resource.parent_field is not None:
        parent_id = values.get(resource.parent_field)
        if parent_id is None:
            if principal.is_admin:
                raise InvalidInput(
                    f"{resource.parent_field} is required",
                    reason="missing-" + resource.parent_field.replace("_", "-"),
                )
            parent_id = principal.advertiser_id
        parent = get_object(
            session=session, resource=resource.parent, object_id=parent_id, principal=principal
        )
        if parent.status == Status.ARCHIVED:
            raise Conflict(
                f"{resource.parent.name} {parent_id} is archived", reason="parent-archived"
            )
        values[resource.parent_field] = parent_id
        if resource.parent.name != "advertiser":
            values["advertiser_id"] = parent.advertiser_id
    if resource is LINE_ITEMS:
        check_line_item_booking(session, principal, values, None)
    if resource.check is not None:
        resource.check(values, None)
    obj = resource.model(**values)
    session.add(obj)
    _flush(session, resource)  # before the bump, whose autoflush would escape _flush's handler
    bump_catalog_version(session)
    return obj


def update_object(
    *,
    session: Session,
    resource: Resource,
    object_id: int,
    changes: dict[str, Any],
    principal: Principal,
    expected_version: int | None,
) -> Any:
    """Apply a partial update; ``expected_version`` (If-Match) guards against lost updates."""
    _writable(resource, principal)
    obj = get_object(session=session, resource=resource, object_id=object_id, principal=principal)
    if expected_version is not None and obj.version != expected_version:
        raise PreconditionFailed(
            f"{resource.name} {object_id} is at version {obj.version}, not {expected_version}",
            current_version=obj.version,
        )
    if obj.status == Status.ARCHIVED:
        raise Conflict(f"{resource.name} {object_id} is archived", reason="archived")
    if resource is LINE_ITEMS:
        check_line_item_booking(session, principal, changes, obj)
    columns = resource.model.__table__.columns
    for field, value in changes.items():
        column = columns.get(field)
        if value is None and column is not None and not column.nullable:
            raise InvalidInput(f"{field} cannot be null", reason="null-not-allowed", field=field)
    if resource.check is not None:
        resource.check(changes, obj)
    for field, value in changes.items():
        setattr(obj, field, value)
    _flush(session, resource)  # before the bump, whose autoflush would escape _flush's handler
    bump_catalog_version(session)
    return obj


def set_status(
    *, session: Session, resource: Resource, object_id: int, status: Status, principal: Principal
) -> Any:
    """Pause, activate or archive; archiving is final."""
    _writable(resource, principal)
    obj = get_object(session=session, resource=resource, object_id=object_id, principal=principal)
    if resource is LINE_ITEMS:
        check_line_item_booking(session, principal, {}, obj)
    if obj.status == Status.ARCHIVED and status != Status.ARCHIVED:
        raise Conflict(f"{resource.name} {object_id} is archived", reason="archived")
    if obj.status != status:
        obj.status = status
        _flush(session, resource)
        bump_catalog_version(session)
    return obj


def _flush(session: Session, resource: Resource) -> None:
    from sqlalchemy.exc import IntegrityError

    try:
        session.flush()
    except StaleDataError as error:
        raise Conflict(
            f"{resource.name} was changed concurrently; re-read and retry",
            reason="concurrent-update",
        ) from error
    except IntegrityError as error:
        raise Conflict(
            f"{resource.name} conflicts with an existing one (e.g. a duplicate name)",
            reason="duplicate",
        ) from error
