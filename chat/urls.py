"""The page and the JSON API; every API view is a coroutine function (`chat.views.View`)."""

from __future__ import annotations

from django.urls import path

from chat import views

app_name = "chat"

CONVERSATION = "api/conversations/<uuid:conversation_id>"
MESSAGE = "api/messages/<int:message_id>"

urlpatterns = [
    path("", views.index, name="index"),
    path("api/chat", views.chat, name="chat"),
    path("api/account", views.account, name="account"),
    path("api/files", views.file_create, name="file-create"),
    path("api/files/<uuid:file_id>", views.file_detail, name="file-detail"),
    path("api/conversations", views.conversation_list, name="conversation-list"),
    path(CONVERSATION, views.conversation_detail, name="conversation-detail"),
    path(f"{CONVERSATION}/export", views.conversation_export, name="conversation-export"),
    path(f"{MESSAGE}/stream", views.message_stream, name="message-stream"),
    path(f"{MESSAGE}/cancel", views.message_cancel, name="message-cancel"),
    path(f"{MESSAGE}/regenerate", views.message_regenerate, name="message-regenerate"),
    path(f"{MESSAGE}/edit", views.message_edit, name="message-edit"),
    path(f"{MESSAGE}/select", views.message_select, name="message-select"),
    path("api/<path:rest>", views.api_not_found),
    path("api", views.api_not_found),
]
