"""WhiteNoise as an async middleware.

`WhiteNoiseMiddleware` is sync-only: under ASGI Django would run every request, API and
streams included, through a thread and back (`sync_to_async` around it, `async_to_sync`
inside it). Looking the path up is a dict lookup; only a static file's response is built
in a thread.
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable

from asgiref.sync import markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from whitenoise.middleware import WhiteNoiseMiddleware


class AsyncWhiteNoiseMiddleware(WhiteNoiseMiddleware):
    async_capable = True
    sync_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], Awaitable[HttpResponse]]) -> None:
        with warnings.catch_warnings():
            if settings.DEBUG:
                # In development the finders serve static files; STATIC_ROOT only exists
                # after collectstatic, which `make run` rightly does not run.
                warnings.filterwarnings("ignore", message="No directory at", module="whitenoise")
            super().__init__(get_response)
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponse:  # type: ignore[override]
        if self.autorefresh:
            static_file = await sync_to_async(self.find_file)(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is not None:
            return await sync_to_async(self.serve)(static_file, request)
        return await self.get_response(request)
