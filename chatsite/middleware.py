"""Django's own middleware, run on the event loop instead of in a thread under ASGI.

Under ASGI, every `MiddlewareMixin` middleware calls its `process_request` and
`process_response` through `sync_to_async`: two thread hops per middleware per request,
a large part of the cost of opening a stream. These do no I/O in those methods, so they
run inline. The session and messages middleware may touch the database and keep their
hops; so do the security, CSRF and clickjacking ones, which `check --deploy` looks for by
their exact names. Under WSGI nothing changes.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import middleware as auth
from django.http import HttpRequest, HttpResponse
from django.middleware import common


class _Inline:
    process_request: Any
    process_response: Any
    get_response: Any

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        response = None
        if hasattr(self, "process_request"):
            response = self.process_request(request)
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            response = self.process_response(request, response)
        return response


class CommonMiddleware(_Inline, common.CommonMiddleware):
    pass


class AuthenticationMiddleware(_Inline, auth.AuthenticationMiddleware):
    pass
