"""chat/access/tokens.py and the API-token admin: hashed at rest, shown once, revocable."""

import re
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from chat.access.tokens import token_create, token_revoke, token_verify
from chat.models import ApiToken


@pytest.fixture
def user(db):
    return get_user_model().objects.create_user("ada", password="pw-not-secret-123")


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_superuser("root", password="pw-not-secret-123")


def test_create_returns_the_raw_token_once_and_stores_only_its_hash(user):
    token, raw = token_create(user=user, name="laptop script")
    stored = ApiToken.objects.get(pk=token.pk)
    assert raw.startswith("chat_") and len(raw) > 40
    assert stored.token_hash == ApiToken.hash(raw) and raw not in stored.token_hash
    assert stored.prefix == raw[:10]
    assert raw not in {str(value) for value in ApiToken.objects.values().get().values()}


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_verify_accepts_the_token_and_refuses_unknown_revoked_and_inactive():
    user = await get_user_model().objects.acreate(username="bob")
    token, raw = await sync_to_async(token_create)(user=user, name="ci")
    assert (await token_verify(raw)).user_id == user.pk
    assert await token_verify(raw + "x") is None
    assert await token_verify("") is None
    user.is_active = False
    await user.asave()
    assert await token_verify(raw) is None
    user.is_active = True
    await user.asave()
    await sync_to_async(token_revoke)(token)
    assert await token_verify(raw) is None


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_last_used_is_written_at_most_once_a_minute():
    user = await get_user_model().objects.acreate(username="cy")
    token, raw = await sync_to_async(token_create)(user=user, name="ci")
    await token_verify(raw)
    first = (await ApiToken.objects.aget(pk=token.pk)).last_used_at
    assert first is not None
    await token_verify(raw)
    assert (await ApiToken.objects.aget(pk=token.pk)).last_used_at == first
    earlier = timezone.now() - timedelta(minutes=5)
    await ApiToken.objects.filter(pk=token.pk).aupdate(last_used_at=earlier)
    await token_verify(raw)
    assert (await ApiToken.objects.aget(pk=token.pk)).last_used_at > earlier


def test_admin_shows_a_new_token_once_and_revokes(staff, user):
    client = Client()
    client.force_login(staff)
    response = client.post(
        "/admin/chat/apitoken/add/", {"user": user.pk, "name": "deploy bot"}, follow=True
    )
    assert response.status_code == 200
    page = response.content.decode()
    [raw] = re.findall(r"chat_[A-Za-z0-9_\-]{40,}", page)
    token = ApiToken.objects.get()
    assert token.user == user and token.token_hash == ApiToken.hash(raw)
    # Shown once: the change page and the list never contain it again.
    for url in ("/admin/chat/apitoken/", f"/admin/chat/apitoken/{token.pk}/change/"):
        again = client.get(url)
        assert again.status_code == 200 and raw not in again.content.decode()
        assert token.prefix in again.content.decode()

    client.post(
        "/admin/chat/apitoken/",
        {"action": "revoke", "_selected_action": [token.pk]},
        follow=True,
    )
    token.refresh_from_db()
    assert token.revoked_at is not None
