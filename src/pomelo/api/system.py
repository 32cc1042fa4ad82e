"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pomelo import __version__
from pomelo.api.deps import PlatformDep
from pomelo.api.problems import problem
from pomelo.storage.migrate import head_revision

router = APIRouter(tags=["system"])


@router.get("/api/health")
async def health() -> dict[str, str]:
    """The process is up and serving (no dependency checked: that is /api/ready)."""
    return {"status": "ok", "version": __version__}


@router.get("/api/ready", responses={503: {"description": "not ready"}})
async def ready(platform: PlatformDep) -> JSONResponse:
    """Ready when the database answers and its schema is at the code's migration head."""
    try:
        await platform.db.ping()
        revision = await platform.db.current_revision()
    except Exception as exc:  # any database failure means "not ready", never a 500
        return problem(503, "database-unavailable", "Not ready", f"database: {exc}")
    if revision != head_revision():
        return problem(
            503,
            "schema-outdated",
            "Not ready",
            f"schema at {revision}, code expects {head_revision()}",
        )
    return JSONResponse({"status": "ready", "schema": revision})


@router.get("/metrics", include_in_schema=False)
async def metrics(platform: PlatformDep) -> Response:
    return Response(generate_latest(platform.metrics.registry), media_type=CONTENT_TYPE_LATEST)
