"""REST routes for every catalog resource, generated from one template.

Each resource gets: create, read, list (paginated), update (PATCH, If-Match), and
pause / activate / archive. Only ``Resource`` and the schemas differ.
"""

# No ``from __future__ import annotations`` here: FastAPI must see the real schema classes
# in the closures' annotations.

import inspect
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response, status

from backbeat.api.deps import PrincipalDep, ServicesDep, SessionDep
from backbeat.catalog import schemas
from backbeat.catalog.service import (
    ADVERTISERS,
    CAMPAIGNS,
    CREATIVES,
    LINE_ITEMS,
    SLOTS,
    Resource,
    create_object,
    get_object,
    list_objects,
    set_status,
    update_object,
)
from backbeat.catalog.vocabulary import Status
from backbeat.errors import InvalidInput

ACTIONS = {"pause": Status.PAUSED, "activate": Status.ACTIVE, "archive": Status.ARCHIVED}
PAGING = frozenset({"limit", "offset", "status"})


def refuse_unknown_parameters(request: Request, known: frozenset[str]) -> None:
    """A filter this list does not have is an error, not silently everything (422)."""
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise InvalidInput(
            f"unknown query parameter(s): {', '.join(unknown)[:200]}; "
            f"allowed: {', '.join(sorted(known))}",
            reason="unknown-filter",
            field=unknown[0][:64],
        )


def parse_if_match(value: str | None) -> int | None:
    """``"3"``, ``W/"3"`` or ``3`` -> 3; ``*`` or absent -> no precondition."""
    if value is None or value.strip() == "*":
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not text.isdigit() or len(text) > 10:
        raise InvalidInput("If-Match must be an ETag this API returned", reason="invalid-if-match")
    return int(text)


# Ids are int4 columns: larger numbers are no object's id (422), never an overflow (500).
ObjectId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _etag(response: Response, obj: Any) -> None:
    response.headers["ETag"] = f'"{obj.version}"'


def catalog_router(
    resource: Resource,
    path: str,
    create_schema: Any,
    update_schema: Any,
    read_schema: Any,
    *,
    public_list: bool = False,
) -> APIRouter:
    router = APIRouter(prefix=f"/v1/{path}", tags=[path])
    filters = resource.filters
    known = PAGING | set(filters)

    @router.post("", status_code=status.HTTP_201_CREATED, response_model=read_schema)
    def create(
        body: create_schema,
        response: Response,
        principal: PrincipalDep,
        session: SessionDep,
        services: ServicesDep,
    ):  # type: ignore[no-untyped-def, valid-type]
        values = body.model_dump(exclude_none=True)  # type: ignore[attr-defined]
        obj = create_object(session=session, resource=resource, values=values, principal=principal)
        session.commit()
        services.ad_server.poke()
        _etag(response, obj)
        response.headers["Location"] = f"/v1/{path}/{obj.id}"
        return read_schema.model_validate(obj)

    def _list(
        session: Any,
        principal: Any,
        limit: int,
        offset: int,
        status_filter: Status | None,
        parents: dict[str, int | None],
    ) -> Any:
        query = {**parents, "status": status_filter}
        rows, count = list_objects(
            session=session,
            resource=resource,
            principal=principal,
            filters=query,
            limit=limit,
            offset=offset,
        )
        return schemas.Page[read_schema](  # type: ignore[valid-type]
            data=[read_schema.model_validate(row) for row in rows],
            count=count,
            limit=limit,
            offset=offset,
        )

    Limit = Annotated[int, Query(ge=1, le=500)]
    Offset = Annotated[int, Query(ge=0, le=10**9)]
    ParentId = Annotated[int | None, Query(ge=1, le=2**31 - 1)]

    if public_list:

        @router.get("", response_model=schemas.Page[read_schema])  # type: ignore[valid-type]
        def list_public(
            request: Request,
            session: SessionDep,
            limit: Limit = 50,
            offset: Offset = 0,
            status: Status | None = None,
        ):  # type: ignore[no-untyped-def]
            from backbeat.catalog.auth import ADMIN

            refuse_unknown_parameters(request, known)
            return _list(session, ADMIN, limit, offset, status, {})

        @router.get("/{object_id}", response_model=read_schema)
        def read_public(object_id: ObjectId, response: Response, session: SessionDep):  # type: ignore[no-untyped-def]
            from backbeat.catalog.auth import ADMIN

            obj = get_object(
                session=session, resource=resource, object_id=object_id, principal=ADMIN
            )
            _etag(response, obj)
            return read_schema.model_validate(obj)

    else:

        def list_(  # type: ignore[no-untyped-def]
            request: Request,
            session: SessionDep,
            principal: PrincipalDep,
            limit: Limit = 50,
            offset: Offset = 0,
            status: Status | None = None,
            **parents: int | None,
        ):
            refuse_unknown_parameters(request, known)
            return _list(session, principal, limit, offset, status, parents)

        # Only the filters this resource has appear in its signature (and so in OpenAPI).
        signature = inspect.signature(list_)
        fixed = [p for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD]
        list_.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[
                *fixed,
                *(
                    inspect.Parameter(
                        name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ParentId
                    )
                    for name in filters
                ),
            ]
        )
        router.get("", response_model=schemas.Page[read_schema])(list_)  # type: ignore[valid-type]

        @router.get("/{object_id}", response_model=read_schema)
        def read(
            object_id: ObjectId, response: Response, principal: PrincipalDep, session: SessionDep
        ):  # type: ignore[no-untyped-def]
            obj = get_object(
                session=session, resource=resource, object_id=object_id, principal=principal
            )
            _etag(response, obj)
            return read_schema.model_validate(obj)

    @router.patch("/{object_id}", response_model=read_schema)
    def update(  # type: ignore[no-untyped-def]
        object_id: ObjectId,
        body: update_schema,  # type: ignore[valid-type]
        response: Response,
        principal: PrincipalDep,
        session: SessionDep,
        services: ServicesDep,
        if_match: Annotated[str | None, Header()] = None,
    ):
        changes = body.model_dump(exclude_unset=True)  # type: ignore[attr-defined]
        obj = update_object(
            session=session,
            resource=resource,
            object_id=object_id,
            changes=changes,
            principal=principal,
            expected_version=parse_if_match(if_match),
        )
        session.commit()
        services.ad_server.poke()
        _etag(response, obj)
        return read_schema.model_validate(obj)

    def status_route(target: Status) -> Any:
        def change_status(  # type: ignore[no-untyped-def]
            object_id: ObjectId,
            response: Response,
            principal: PrincipalDep,
            session: SessionDep,
            services: ServicesDep,
        ):
            obj = set_status(
                session=session,
                resource=resource,
                object_id=object_id,
                status=target,
                principal=principal,
            )
            session.commit()
            services.ad_server.poke()
            _etag(response, obj)
            return read_schema.model_validate(obj)

        return change_status

    for action, target in ACTIONS.items():
        router.add_api_route(
            f"/{{object_id}}/{action}",
            status_route(target),
            methods=["POST"],
            response_model=read_schema,
            name=f"{action}_{resource.name}",
            summary=f"{action.capitalize()} a {resource.name.replace('_', ' ')}",
        )
    return router


ROUTERS = [
    catalog_router(
        ADVERTISERS,
        "advertisers",
        schemas.AdvertiserCreate,
        schemas.AdvertiserUpdate,
        schemas.AdvertiserRead,
    ),
    catalog_router(
        CAMPAIGNS, "campaigns", schemas.CampaignCreate, schemas.CampaignUpdate, schemas.CampaignRead
    ),
    catalog_router(
        LINE_ITEMS,
        "line-items",
        schemas.LineItemCreate,
        schemas.LineItemUpdate,
        schemas.LineItemRead,
    ),
    catalog_router(
        CREATIVES, "creatives", schemas.CreativeCreate, schemas.CreativeUpdate, schemas.CreativeRead
    ),
    catalog_router(
        SLOTS,
        "slots",
        schemas.AdSlotCreate,
        schemas.AdSlotUpdate,
        schemas.AdSlotRead,
        public_list=True,
    ),
]
