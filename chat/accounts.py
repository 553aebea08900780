"""How django-allauth admits people here: who may sign up, and what signing in brings along.

Password sign-in, sign-up, email verification, password reset and OpenID Connect single
sign-on are allauth's own views; these adapters are the seams it offers for the rules.
"""

from __future__ import annotations

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from chat.budgets import budget_status
from chat.conversations import conversations_adopt
from chat.identity import anonymous_key_from_cookie, forget_anonymous


def email_domain_allowed(email: str) -> bool:
    domains = settings.CHAT_SIGNUP_DOMAINS
    return not domains or email.rpartition("@")[2].lower() in domains


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request: HttpRequest) -> bool:
        return settings.CHAT_SIGNUP

    def clean_email(self, email: str) -> str:
        email = super().clean_email(email)
        if not email_domain_allowed(email):
            domains = ", ".join(settings.CHAT_SIGNUP_DOMAINS)
            raise ValidationError(f"Sign-up is open to addresses at {domains} only.")
        return email

    def login(self, request: HttpRequest, user: Any) -> None:
        super().login(request, user)
        # Conversations this browser started anonymously now belong to the account; the
        # anonymous identity ends here, as it would at a logout.
        key = anonymous_key_from_cookie(request)
        if key:
            conversations_adopt(anonymous_key=key, user_id=user.pk)
            forget_anonymous(request)


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    def is_open_for_signup(self, request: HttpRequest, sociallogin: Any) -> bool:
        """The company's identity provider decides who may sign in: a first SSO sign-in
        creates the account whatever CHAT_SIGNUP says, from CHAT_SIGNUP_DOMAINS only when
        that is set (a public provider such as Google would otherwise admit anyone)."""
        emails = [address.email for address in sociallogin.email_addresses]
        email = sociallogin.user.email or (emails[0] if emails else "")
        return email_domain_allowed(email) if settings.CHAT_SIGNUP_DOMAINS else True


async def account_summary(*, user_id: int | None) -> dict[str, Any]:
    """Who is signed in, and their budget this period (None for an anonymous visitor)."""
    if user_id is None:
        return {"user": None, "budget": None}
    user = await get_user_model().objects.aget(pk=user_id)
    status = await budget_status(user_id=user.pk)
    return {
        "user": {
            "username": user.get_username(),
            "name": user.get_full_name() or user.get_username(),
            "email": user.email,
            "is_staff": user.is_staff,
        },
        "budget": status.as_dict(),
    }


def entrance_context(request: HttpRequest) -> dict[str, Any]:
    """Template context for the sign-in pages: whether to offer sign-up at all."""
    return {"signup_open": settings.CHAT_SIGNUP}
