"""``POST /v1/line-items/bulk``: book up to 1,000 line items in one request and one transaction.

Each item is a ``LineItemCreate`` body, validated and created by the same code as
``POST /v1/line-items`` (``catalog.service.create_object``: parent visibility, archived
parents, the advertiser key's tiers and CPM floor), so an advertiser key books only under
its own campaigns (another advertiser's campaign is a 404 for that index, as alone).
Every item is checked before anything is committed and every bad one is reported with
its index and reason: a 422 problem that writes nothing, unless ``skip_invalid`` is true,
in which case the good ones are booked together and the bad ones listed.
"""

# No ``from __future__ import annotations``: FastAPI must see the real schema classes.

from typing import Annotated, Any

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from backbeat.api.deps import PrincipalDep, ServicesDep, SessionDep
from backbeat.api.problems import problem, validation_problem
from backbeat.catalog import schemas
from backbeat.catalog.service import LINE_ITEMS, create_object
from backbeat.errors import BackbeatError

MAX_BULK = 1000

router = APIRouter(prefix="/v1/line-items", tags=["line-items"])


class BulkBookingRequest(schemas.Input):
    line_items: Annotated[list[Any], Field(min_length=1, max_length=MAX_BULK)]
    skip_invalid: bool = False


class BookingError(BaseModel):
    index: int
    reason: str
    detail: str


class BulkBookingOut(BaseModel):
    line_items: list[schemas.LineItemRead]
    indexes: list[int]  # request index of each booked line item
    errors: list[BookingError]


def _invalid(errors: list[BookingError], request: Request) -> JSONResponse:
    first = errors[0]
    return problem(
        422,
        "Invalid line items",
        "invalid-line-items",
        f"{len(errors)} invalid line item(s); nothing was booked; first: #{first.index} "
        f"{first.detail}",
        request.url.path,
        errors=[error.model_dump() for error in errors],
    )


@router.api_route("/bulk", methods=["GET", "PATCH"], include_in_schema=False)
def bulk_takes_post_only() -> None:
    """``bulk`` is not a line item id: ``GET``/``PATCH`` here are 405 (``Allow: POST``), not
    the 422 the ``/v1/line-items/{id}`` route would give for a non-numeric id."""
    raise StarletteHTTPException(status_code=405, detail="Method Not Allowed")


@router.post(
    "/bulk",
    status_code=status.HTTP_201_CREATED,
    response_model=BulkBookingOut,
    responses={422: {"description": "Invalid line items, each with its index and reason"}},
)
def book_line_items(
    body: BulkBookingRequest,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    services: ServicesDep,
) -> Any:
    """Book up to 1,000 line items at once: all or nothing, unless ``skip_invalid``."""
    errors: dict[int, BookingError] = {}
    valid: list[tuple[int, dict[str, Any]]] = []
    for index, raw in enumerate(body.line_items):
        try:
            draft = schemas.LineItemCreate.model_validate(raw)
        except ValidationError as error:
            found = validation_problem(list(error.errors()), "", skip_loc=0)
            errors[index] = BookingError(
                index=index, reason=found["reason"], detail=found["detail"]
            )
            continue
        valid.append((index, draft.model_dump(exclude_none=True)))
    while True:
        created: list[tuple[int, Any]] = []
        restart = False
        for index, values in valid:
            if index in errors:
                continue
            try:
                created.append((index, create_object(
                    session=session, resource=LINE_ITEMS, values=values, principal=principal
                )))  # fmt: skip
            except BackbeatError as error:
                errors[index] = BookingError(index=index, reason=error.reason, detail=error.detail)
                if not session.is_active:
                    # A failed flush spoils the transaction: start again without this one.
                    session.rollback()
                    restart = True
                    break
        if not restart:
            break
    listed = sorted(errors.values(), key=lambda error: error.index)
    if listed and not body.skip_invalid:
        session.rollback()
        return _invalid(listed, request)
    if created:
        session.commit()
        services.ad_server.poke()
    return {
        "line_items": [schemas.LineItemRead.model_validate(obj) for _, obj in created],
        "indexes": [index for index, _ in created],
        "errors": [error.model_dump() for error in listed],
    }
