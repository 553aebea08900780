"""How django-allauth admits people here: who may sign up, and what signing in brings along.

Password sign-in, sign-up, email verification, password reset and OpenID Connect single
sign-on are allauth's own views; these adapters are the seams it offers for the rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

from allauth.account.adapter import DefaultAccountAdapter
from allauth.account.models import EmailAddress
from allauth.account.signals import user_logged_in
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.dispatch import receiver
from django.http import HttpRequest

from chat.access.identity import anonymous_key_from_cookie, forget_anonymous
from chat.access.owners import conversations_adopt
from chat.spend.budgets import BudgetJson, budget_forget, budget_status

if TYPE_CHECKING:
    from allauth.socialaccount.models import SocialLogin


class AccountUser(TypedDict):
    username: str
    name: str
    email: str
    is_staff: bool


class AccountSummary(TypedDict):
    """`GET /api/account`, and the page's `account`."""

    user: AccountUser | None
    budget: BudgetJson | None


def email_domain_allowed(email: str) -> bool:
    domains = settings.CHAT_SIGNUP_DOMAINS
    return not domains or email.rpartition("@")[2].lower() in domains


# allauth has no type information, so to mypy its adapters are Any: subclassing one is
# what `disallow_subclassing_any` refuses.
SIGNED_IN_MESSAGE = "account/messages/logged_in.txt"


class AccountAdapter(DefaultAccountAdapter):  # type: ignore[misc]
    def is_open_for_signup(self, request: HttpRequest) -> bool:
        return bool(settings.CHAT_SIGNUP)

    def clean_email(self, email: str) -> str:
        email = super().clean_email(email)
        if not email_domain_allowed(email):
            domains = ", ".join(settings.CHAT_SIGNUP_DOMAINS)
            raise ValidationError(f"Sign-up is open to addresses at {domains} only.")
        return email

    def login(self, request: HttpRequest, user: AbstractBaseUser) -> None:
        super().login(request, user)
        # Conversations this browser started anonymously now belong to the account; the
        # anonymous identity ends here, as it would at a logout.
        key = anonymous_key_from_cookie(request)
        if key:
            conversations_adopt(anonymous_key=key, user_id=user.pk)
            forget_anonymous(request)

    def add_message(
        self,
        request: HttpRequest,
        level: int,
        message_template: str | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        # Signing in lands on the chat page, which names who is signed in and shows no
        # messages: "Successfully signed in as …" would wait in the session for the next
        # page that does (an admin page, even the admin's refusal of a non-staff person).
        if message_template == SIGNED_IN_MESSAGE:
            return
        super().add_message(request, level, message_template, *args, **kwargs)


class SocialAccountAdapter(DefaultSocialAccountAdapter):  # type: ignore[misc]  # as above
    def is_open_for_signup(self, request: HttpRequest, sociallogin: SocialLogin) -> bool:
        """The company's identity provider decides who may sign in: a first SSO sign-in
        creates the account whatever CHAT_SIGNUP says, from CHAT_SIGNUP_DOMAINS only when
        that is set (a public provider such as Google would otherwise admit anyone), and
        then only for an address the provider says it verified."""
        if not settings.CHAT_SIGNUP_DOMAINS:
            return True
        verified = [a.email for a in sociallogin.email_addresses if a.verified]
        return any(email_domain_allowed(email) for email in verified)

    def authenticate_by_email(
        self, sociallogin: SocialLogin
    ) -> tuple[AbstractBaseUser, str] | None:
        """An SSO identity signs in as the existing person whose address it is, only where
        that address is vouched for here: verified, or set by staff on a person who has
        never managed addresses of their own. allauth's own match would also take an
        address someone merely added to their account, unverified: a takeover of the
        first SSO sign-in of whoever owns it."""
        for address in sociallogin.email_addresses:
            if not address.verified or not self.can_authenticate_by_email(
                sociallogin, address.email
            ):
                continue
            person = vouched_owner(address.email)
            if person is not None:
                return person, address.email
        return None


@receiver(user_logged_in, dispatch_uid="chat.access.accounts.groups_from_claim")
def groups_from_claim(sender: object, *, user: AbstractBaseUser, **kwargs: Any) -> None:
    """Single sign-on can say which groups a person is in (CHAT_OIDC_GROUPS_CLAIM, such as
    `groups`): at each sign-in their Django groups become exactly those named, created as
    needed, so group budgets follow the identity provider. A sign-in whose claims lack
    the claim leaves the groups as they are."""
    claim = settings.CHAT_OIDC_GROUPS_CLAIM
    sociallogin = kwargs.get("sociallogin")
    if not claim or sociallogin is None:
        return
    data = sociallogin.account.extra_data or {}
    sources = [data.get("userinfo") or {}, data.get("id_token") or {}, data]
    found = next((source[claim] for source in sources if claim in source), None)
    if found is None:
        return
    names = [found] if isinstance(found, str) else list(found)
    wanted = sorted({str(name).strip()[:150] for name in names if str(name).strip()})
    groups = [Group.objects.get_or_create(name=name)[0] for name in wanted]
    user.groups.set(groups)  # type: ignore[attr-defined]  # AbstractBaseUser lacks PermissionsMixin's
    budget_forget(user.pk)


def vouched_owner(email: str) -> AbstractBaseUser | None:
    """The one active person whose `email` is vouched for here (see above), if any."""
    found = EmailAddress.objects.filter(email__iexact=email, verified=True, user__is_active=True)
    verified = list(found.select_related("user")[:2])
    if len(verified) == 1:
        person: AbstractBaseUser = verified[0].user
        return person
    if verified:
        return None
    set_by_staff = list(
        get_user_model().objects.filter(
            email__iexact=email, is_active=True, emailaddress__isnull=True
        )[:2]
    )
    return set_by_staff[0] if len(set_by_staff) == 1 else None


async def account_summary(*, user_id: int | None) -> AccountSummary:
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


def entrance_context(request: HttpRequest) -> dict[str, bool]:
    """Template context for the sign-in pages: whether to offer sign-up at all."""
    return {"signup_open": settings.CHAT_SIGNUP}
