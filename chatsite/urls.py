from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("chat.ops.urls")),  # /healthz, /readyz, /metrics
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("", include("chat.urls")),
]
