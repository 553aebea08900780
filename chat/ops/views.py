"""Endpoints for operators: /healthz, /readyz and /metrics. Cheap, outside /api/ (no
limits, no identity), and the proxy config does not log them."""

from __future__ import annotations

import hmac

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse

from chat.errors import error_response
from chat.ops import health, metrics

LOOPBACK = frozenset({"127.0.0.1", "::1"})
# A request that came through a proxy arrives from the proxy's loopback address: without
# a token, anything that carries one of these headers is not "from this machine".
FORWARDING_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")


# Open without signing in: probes and scrapers carry no session.
@login_not_required
async def healthz(request: HttpRequest) -> HttpResponse:
    """The process answers: no I/O, so a busy database never gets a worker restarted."""
    return JsonResponse({"status": "ok"})


# Open without signing in: probes and scrapers carry no session.
@login_not_required
async def readyz(request: HttpRequest) -> HttpResponse:
    checks = await health.readiness()
    failed = [name for name, outcome in checks.items() if outcome not in ("ok", "degraded")]
    if failed:
        return JsonResponse(
            {"status": "unavailable", "failed": failed, "checks": checks}, status=503
        )
    # Degraded still serves (a balancer must not take every worker out at once).
    degraded = [name for name, outcome in checks.items() if outcome == "degraded"]
    if degraded:
        return JsonResponse({"status": "degraded", "degraded": degraded, "checks": checks})
    return JsonResponse({"status": "ok", "checks": checks})


# Open without signing in: probes and scrapers carry no session.
@login_not_required
async def metrics_view(request: HttpRequest) -> HttpResponse:
    refusal = metrics_refusal(request)
    if refusal is not None:
        return refusal
    if metrics.MULTIPROCESS:
        # Reads every worker's files: off the event loop, and off the database thread.
        body, content_type = await sync_to_async(metrics.exposition, thread_sensitive=False)()
    else:
        body, content_type = metrics.exposition()
    return HttpResponse(body, content_type=content_type)


def metrics_refusal(request: HttpRequest) -> HttpResponse | None:
    """With CHAT_METRICS_TOKEN, the Bearer token is required (compared in constant time);
    without, only a direct connection from this machine is let in."""
    token = settings.CHAT_METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode()):
            return None
        return error_response(
            "unauthorized",
            "Send Authorization: Bearer <CHAT_METRICS_TOKEN>.",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    direct = not any(request.headers.get(header) for header in FORWARDING_HEADERS)
    if request.META.get("REMOTE_ADDR") in LOOPBACK and direct:
        return None
    return error_response(
        "forbidden", "Metrics are served to 127.0.0.1 only unless CHAT_METRICS_TOKEN is set."
    )
