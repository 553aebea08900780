"""Single sign-on rules of chat/access/accounts.py: which existing person an SSO identity may
sign in as, and whom a first SSO sign-in may create (the browser test signs in through a
real OpenID Connect provider; these pin the rules allauth asks our adapter about)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

User = get_user_model()
PASSWORD = "a long, unusual passphrase 42"


def _sso_login(email: str, *, verified: bool = True):
    """What allauth builds from an OpenID Connect provider's answer, before it decides
    which account the identity signs in to."""
    from allauth.socialaccount.adapter import get_adapter
    from django.contrib.sessions.backends.db import SessionStore
    from django.test import RequestFactory

    request = RequestFactory().get("/")
    request.session = SessionStore()
    provider = get_adapter().get_provider(request, "sso")
    return provider.sociallogin_from_response(
        request, {"userinfo": {"sub": f"id-{email}", "email": email, "email_verified": verified}}
    )


@pytest.fixture
def sso(settings):
    settings.SOCIALACCOUNT_PROVIDERS = {
        "openid_connect": {
            "APPS": [
                {
                    "provider_id": "sso",
                    "name": "SSO",
                    "client_id": "c",
                    "secret": "s",
                    "settings": {"server_url": "https://idp.example"},
                }
            ]
        }
    }
    return settings


@pytest.mark.django_db(transaction=True)
def test_an_address_someone_added_unverified_never_captures_an_sso_sign_in(production, sso):
    from allauth.account.models import EmailAddress
    from allauth.socialaccount.adapter import get_adapter
    from django.test import Client as SyncClient

    mallory = User.objects.create_user("mallory", "mallory@example.com", PASSWORD)
    ceo = User.objects.create_user("ceo", "ceo@example.com", PASSWORD)  # made by staff
    client = SyncClient()
    client.post("/accounts/login/", {"login": "mallory", "password": PASSWORD})
    client.post("/accounts/email/", {"action_add": "", "email": "boss@example.com"})
    assert EmailAddress.objects.filter(email="boss@example.com", user=mallory).exists()

    adapter = get_adapter()
    # Mallory added boss@ but never proved it: the boss's first SSO sign-in is not hers.
    assert adapter.authenticate_by_email(_sso_login("boss@example.com")) is None
    # The address staff set on the CEO's account is vouched for: SSO finds the CEO.
    assert adapter.authenticate_by_email(_sso_login("ceo@example.com")) == (ceo, "ceo@example.com")
    # An identity provider that did not verify the address is not trusted with it.
    assert adapter.authenticate_by_email(_sso_login("ceo@example.com", verified=False)) is None


@pytest.mark.django_db(transaction=True)
def test_sign_up_domains_admit_only_verified_sso_addresses(production, sso):
    from allauth.socialaccount.adapter import get_adapter

    production.CHAT_SIGNUP_DOMAINS = ["example.com"]
    adapter = get_adapter()
    assert adapter.is_open_for_signup(None, _sso_login("new@example.com"))
    assert not adapter.is_open_for_signup(None, _sso_login("new@example.com", verified=False))
    assert not adapter.is_open_for_signup(None, _sso_login("new@elsewhere.test"))
    production.CHAT_SIGNUP_DOMAINS = []
    assert adapter.is_open_for_signup(None, _sso_login("anyone@elsewhere.test"))


@pytest.mark.django_db(transaction=True)
def test_the_groups_claim_sets_a_persons_groups_at_each_sign_in(settings, sso):
    from allauth.account.signals import user_logged_in
    from django.contrib.auth.models import Group

    settings.CHAT_OIDC_GROUPS_CLAIM = "groups"
    person = User.objects.create_user("dana", "dana@example.com", PASSWORD)
    Group.objects.create(name="Old team")
    person.groups.add(Group.objects.get(name="Old team"))

    def sign_in(claims: dict) -> None:
        sociallogin = _sso_login("dana@example.com")
        sociallogin.account.extra_data["userinfo"].update(claims)
        user_logged_in.send(sender=User, request=None, user=person, sociallogin=sociallogin)

    sign_in({"groups": ["Research", "Support", "Research", " "]})
    assert sorted(person.groups.values_list("name", flat=True)) == ["Research", "Support"]
    sign_in({"groups": "Support"})  # a single name, as some providers send it
    assert list(person.groups.values_list("name", flat=True)) == ["Support"]
    sign_in({})  # no claim this time: left as they are
    assert list(person.groups.values_list("name", flat=True)) == ["Support"]
    settings.CHAT_OIDC_GROUPS_CLAIM = ""
    sign_in({"groups": ["Research"]})  # the setting off: the claim is ignored
    assert list(person.groups.values_list("name", flat=True)) == ["Support"]
