"""Middleware: JSON errors always under /api/, cross-origin refusal, the anonymous visitor's
cookie, sign-in for pages when anonymous use is off, and a request id for every request."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from asgiref.sync import markcoroutinefunction
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponseBase, JsonResponse, StreamingHttpResponse

from chat.access.identity import settle_cookie
from chat.errors import API_PREFIX, ChatError, LimitExceeded, error_response, status_error
from chat.ops import metrics, request_ids
from chat.ops.gates import page_turn

logger = logging.getLogger("chat")

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The one API path whose POST is a file: multipart, as `<input type=file>` and `curl -F`
# send it. Cross-site browser requests to it are refused like any other (by origin).
UPLOAD_PATH = API_PREFIX + "files"
ADMIN_PREFIX = "/admin/"


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


def _bodiless_delete(request: HttpRequest) -> bool:
    """A DELETE with nothing in it has no content type to require (and no HTML form can
    send a DELETE)."""
    return (
        request.method == "DELETE"
        and request.META.get("CONTENT_LENGTH") in (None, "", "0")
        and "Transfer-Encoding" not in request.headers
    )


def _is_json(response: HttpResponseBase) -> bool:
    return response.get("Content-Type", "").startswith("application/json")


def _json_error_for(response: HttpResponseBase) -> JsonResponse:
    kept = {name: response[name] for name in KEPT_ERROR_HEADERS if response.has_header(name)}
    return status_error(response.status_code, headers=kept)


class AsyncMiddleware:
    """Async-only middleware: under ASGI, Django calls it without a thread hop. By itself
    it passes the request on; a subclass does its work around that, or in a hook."""

    async_capable = True
    sync_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]]) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        return await self.get_response(request)


# Headers an error keeps when its body is turned into JSON.
KEPT_ERROR_HEADERS = ("Allow", "Retry-After", "Vary", request_ids.HEADER)


class ApiErrorMiddleware(AsyncMiddleware):
    """Every error under /api/ is JSON. `ChatError` → its JSON error; any other exception
    → a JSON 500 with no traceback. Errors Django answers before or around our views (a
    path no URL pattern matches, such as one holding a newline; a 405; a 500 from a
    middleware; DEBUG's HTML pages) are turned into the same JSON shape on the way out."""

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = await self.get_response(request)
        if response.status_code >= 400 and _is_api(request) and not _is_json(response):
            return _json_error_for(response)
        return response

    def process_exception(
        self, request: HttpRequest, exception: Exception
    ) -> HttpResponseBase | None:
        if isinstance(exception, ChatError):
            if isinstance(exception, LimitExceeded):
                metrics.limit_refused(exception.type)
            return error_response(exception.type, exception.message, headers=exception.headers)
        if not _is_api(request):
            return None
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return error_response("server_error", "Something went wrong on our side.")


class StaffPageTurnMiddleware(AsyncMiddleware):
    """The admin's pages render `CHAT_ADMIN_PAGES_AT_ONCE` at a time per worker (the view
    and its template; a streamed body such as a CSV export is sent after its turn), so
    staff reloading reports share the worker's GIL with the chat streams as one thread,
    not one per page (`chat.ops.gates`)."""

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if not request.path.startswith(ADMIN_PREFIX):
            return await self.get_response(request)
        async with page_turn(settings.CHAT_ADMIN_PAGES_AT_ONCE):
            return await self.get_response(request)


class RequestIdMiddleware(AsyncMiddleware):
    """`X-Request-ID` from the proxy (if sane) or a new one, in the log records of the
    request (`chat.ops.request_ids`) and in its response. First in MIDDLEWARE, so that every
    response has it."""

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        rid = request_ids.accepted(request.headers.get(request_ids.HEADER)) or uuid.uuid4().hex
        token = request_ids.current.set(rid)
        response = await self.get_response(request)
        response[request_ids.HEADER] = rid
        # An async streamed body is sent after this returns and its log lines (the turn it
        # finishes) must still carry the id: kept, in the task Django serves this request
        # in under ASGI. Otherwise reset, so a sync caller's thread does not keep it.
        if not (isinstance(response, StreamingHttpResponse) and response.is_async):
            request_ids.current.reset(token)
        return response


class AnonymousCookieMiddleware(AsyncMiddleware):
    """Sends the anonymous visitor's cookie when `chat.access.identity` issued or renewed it,
    and deletes it on the response to a logout."""

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = await self.get_response(request)
        settle_cookie(request, response)
        return response


class CrossOriginProtectionMiddleware(AsyncMiddleware):
    """Refuse cross-site requests to /api/ without tokens (as Go 1.25's
    CrossOriginProtection): browsers say where a request comes from in `Sec-Fetch-Site`
    (or, older ones, `Origin`); requests without either are not from a browser page and
    are let through, so curl and scripts work. POSTs must also be JSON, which a plain
    HTML form cannot send. This replaces Django's token CSRF on the API, whose views are
    `csrf_exempt` (`chat.views.api_view`)."""

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if _is_api(request):
            refusal = self.refusal(request)
            if refusal is not None:
                return refusal
        return await self.get_response(request)

    def refusal(self, request: HttpRequest) -> HttpResponseBase | None:
        if not self.same_origin(request):
            return error_response(
                "cross_origin", "Cross-origin requests to the API are not allowed."
            )
        if request.method in UNSAFE_METHODS and not _bodiless_delete(request):
            content_type = request.content_type or ""
            if request.path == UPLOAD_PATH:
                if content_type != "multipart/form-data":
                    return error_response(
                        "unsupported_media_type",
                        "Send the file as multipart/form-data, in the field 'file'.",
                    )
            elif content_type != "application/json":
                return error_response(
                    "unsupported_media_type",
                    "Send the body as Content-Type: application/json.",
                )
        return None

    @staticmethod
    def same_origin(request: HttpRequest) -> bool:
        site = request.headers.get("Sec-Fetch-Site")
        origin = request.headers.get("Origin")
        if origin and origin in settings.CSRF_TRUSTED_ORIGINS:
            return True
        if site is not None:
            return site in ("same-origin", "none")
        if not origin:
            return True
        if origin == "null":
            return False
        try:
            host = request.get_host()
        except Exception:  # DisallowedHost: Django's own check answers that
            return True
        return urlsplit(origin).netloc == host


class SignInRequiredMiddleware(AsyncMiddleware):
    """With anonymous use off, every page needs a signed-in person: a visitor is sent to
    sign in and brought back to the page asked for. Views marked `login_not_required`
    (Django's convention, which allauth's sign-in pages and the admin's login follow) stay
    open, as under Django's `LoginRequiredMiddleware`; this is that rule without its
    thread hop per request. The API is not redirected: it answers 401 in JSON itself."""

    async def process_view(
        self, request: HttpRequest, view_func: Callable[..., object], *args: object
    ) -> HttpResponseBase | None:
        if (
            settings.CHAT_ALLOW_ANONYMOUS
            or _is_api(request)
            # What Django's `login_not_required` decorator marks.
            or not getattr(view_func, "login_required", True)
        ):
            return None
        user = await request.auser()
        if user.is_authenticated:
            return None
        return redirect_to_login(request.get_full_path())
