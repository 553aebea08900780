"""The admin site itself: named after this product, and showing only what is in use."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin

admin.site.site_header = "Chat administration"
admin.site.site_title = "Chat admin"
admin.site.index_title = "Usage, people and prices"
# The app list down the side of every page took a third of a 1280 px screen from the
# changelists (the message list had 631 px for its columns); the index and the
# breadcrumbs lead everywhere it did.
admin.site.enable_nav_sidebar = False
# An app's page by name, not among candidates that miss (why: chat.admin.pages); no app
# here has an app_index.html of its own.
admin.site.app_index_template = "admin/app_index.html"


def hide_single_sign_on_models() -> None:
    """allauth's social accounts, apps and tokens mean nothing while single sign-on is off
    (CHAT_OIDC_ISSUER empty); its provider is configured in settings, never by a SocialApp
    row, so they stay hidden then. Called after allauth's admin has registered them."""
    if settings.CHAT_OIDC_ISSUER:
        return
    from allauth.socialaccount.models import SocialAccount, SocialApp, SocialToken

    for model in (SocialApp, SocialToken, SocialAccount):
        if admin.site.is_registered(model):
            admin.site.unregister(model)


hide_single_sign_on_models()
