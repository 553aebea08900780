from django.urls import path

from chat import views

app_name = "chat"

urlpatterns = [
    path("", views.index, name="index"),
    path("api/chat", views.chat, name="chat"),
    path("api/account", views.account, name="account"),
    path("api/conversations", views.conversation_list, name="conversation-list"),
    path(
        "api/conversations/<uuid:conversation_id>",
        views.conversation_detail,
        name="conversation-detail",
    ),
    path(
        "api/conversations/<uuid:conversation_id>/export",
        views.conversation_export,
        name="conversation-export",
    ),
    path("api/messages/<int:message_id>/stream", views.message_stream, name="message-stream"),
    path("api/messages/<int:message_id>/cancel", views.message_cancel, name="message-cancel"),
    path(
        "api/messages/<int:message_id>/regenerate",
        views.message_regenerate,
        name="message-regenerate",
    ),
    path("api/messages/<int:message_id>/edit", views.message_edit, name="message-edit"),
    path("api/messages/<int:message_id>/select", views.message_select, name="message-select"),
    path("api/<path:rest>", views.api_not_found),
    path("api", views.api_not_found),
]
