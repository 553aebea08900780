from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponseBase
from django.urls import path

from chat import views

app_name = "chat"


def async_view(
    view: Callable[..., Awaitable[HttpResponseBase]],
) -> Callable[..., Coroutine[Any, Any, HttpResponseBase]]:
    """An API view as `path()` takes an async one. `chat.views.api_view` types its views
    as returning any awaitable, but Django serves a view asynchronously only when it is a
    coroutine function (and django-stubs' `path()` accepts only those): checked here, so a
    view that is not fails when the URLs load, not on its first request."""
    if not iscoroutinefunction(view):
        raise ImproperlyConfigured(f"{view!r} is not an async view.")
    return view


urlpatterns = [
    path("", views.index, name="index"),
    path("api/chat", async_view(views.chat), name="chat"),
    path("api/account", async_view(views.account), name="account"),
    path("api/conversations", async_view(views.conversation_list), name="conversation-list"),
    path(
        "api/conversations/<uuid:conversation_id>",
        async_view(views.conversation_detail),
        name="conversation-detail",
    ),
    path(
        "api/conversations/<uuid:conversation_id>/export",
        async_view(views.conversation_export),
        name="conversation-export",
    ),
    path(
        "api/messages/<int:message_id>/stream",
        async_view(views.message_stream),
        name="message-stream",
    ),
    path(
        "api/messages/<int:message_id>/cancel",
        async_view(views.message_cancel),
        name="message-cancel",
    ),
    path(
        "api/messages/<int:message_id>/regenerate",
        async_view(views.message_regenerate),
        name="message-regenerate",
    ),
    path("api/messages/<int:message_id>/edit", async_view(views.message_edit), name="message-edit"),
    path(
        "api/messages/<int:message_id>/select",
        async_view(views.message_select),
        name="message-select",
    ),
    path("api/<path:rest>", views.api_not_found),
    path("api", views.api_not_found),
]
