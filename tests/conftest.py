import os
import socket
import uuid
from datetime import timedelta
from decimal import Decimal

import httpx2
import pytest
import pytest_asyncio
import redis
from django.utils import timezone

from chat import llm
from chat.models import ModelPrice
from chat.spend import prices
from tests.asgi import AsgiClient
from tests.upstream import ScriptedUpstream

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def django_db_modify_db_settings(tmp_path_factory, django_db_modify_db_settings_parallel_suffix):
    """Test on a SQLite file, as production does: an in-memory shared-cache database
    fails concurrent writers at once ("table is locked") instead of honouring WAL and the
    busy timeout, so it would test a database nobody runs."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        path = tmp_path_factory.mktemp("sqlite") / "test.sqlite3"
        database.setdefault("TEST", {})["NAME"] = str(path)


@pytest.fixture(scope="session", autouse=True)
def _close_leftover_connections(django_db_setup, django_db_blocker):
    """Async tests leave connections open in asgiref's executor threads; on PostgreSQL
    they would stop the test database from being dropped at the end of the run."""
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture
def upstream(settings):
    """The real SDK talking to a scripted fake upstream (an OpenAI-compatible server)."""
    settings.CHAT_PROVIDER = "openai"
    settings.OPENAI_API_KEY = "sk-test-secret-key-123456"
    settings.OPENAI_BASE_URL = "http://upstream.test/v1"
    settings.CHAT_API = "chat"
    settings.CHAT_MODEL = "gpt-4.1-mini"
    settings.CHAT_MODELS = ["gpt-4.1-mini", "gpt-4.1"]
    settings.CHAT_MAX_RETRIES = 0
    fake = ScriptedUpstream()
    llm.use_transport(httpx2.MockTransport(fake))
    yield fake
    llm.use_transport(None)


@pytest.fixture(autouse=True)
def _fresh_backend():
    llm.reset()
    # A flushed or rolled-back database does not call `ModelPrice.delete`.
    prices.prices_forget()
    yield
    llm.reset()


@pytest_asyncio.fixture
async def ada():
    """A signed-in person's client (cookie jar) through the ASGI app."""
    return await AsgiClient.logged_in("ada")


@pytest_asyncio.fixture
async def bob():
    """Another signed-in person, whose ids ada's requests must never reach."""
    return await AsgiClient.logged_in("bob")


@pytest_asyncio.fixture
async def mini_price():
    """gpt-4.1-mini's list price, valid since yesterday (transactional tests flush the
    prices the data migration seeds)."""
    return await ModelPrice.objects.acreate(
        model="gpt-4.1-mini",
        input_per_million=Decimal("0.40"),
        cached_input_per_million=Decimal("0.10"),
        output_per_million=Decimal("1.60"),
        valid_from=timezone.now() - timedelta(days=1),
    )


def redis_reachable() -> bool:
    url = redis.connection.parse_url(REDIS_URL)
    try:
        socket.create_connection((url.get("host", "127.0.0.1"), url.get("port", 6379)), 0.5)
    except OSError:
        return False
    return True


@pytest.fixture(params=["locmem", "redis"])
def shared_cache(request, settings):
    """Django's cache on a fresh namespace: never FLUSHALL, other tests share this Redis."""
    prefix = f"test-limits-{uuid.uuid4().hex}"
    if request.param == "redis":
        if not redis_reachable():
            if os.environ.get("CI"):
                pytest.fail(f"Redis at {REDIS_URL} is not reachable (CI must test it).")
            pytest.skip(f"Redis at {REDIS_URL} is not reachable.")
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": REDIS_URL,
                "KEY_PREFIX": prefix,
            }
        }
    else:
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "LOCATION": prefix,
            }
        }
    yield request.param
    if request.param == "redis":
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)


@pytest.fixture(scope="module")
def fake_upstream():
    """The benchmark's fake OpenAI-compatible server, in its own process; it counts the
    model calls it answers (`GET /_stats`)."""
    import sys

    from tests.servers import HOST, free_port, start, stop

    port = free_port()
    proc = start(
        [sys.executable, "-m", "bench.fake_upstream", "--port", str(port)], dict(os.environ), port
    )
    yield f"http://{HOST}:{port}"
    stop(proc)


@pytest.fixture
def local_storage(settings, tmp_path):
    """Attachments in a directory of this test's own."""
    settings.STORAGES = {
        **settings.STORAGES,
        "attachments": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "attachments")},
        },
    }
    return tmp_path / "attachments"


@pytest.fixture
def production(settings):
    """Anonymous use off, as with DEBUG=false by default: people sign in."""
    settings.CHAT_ALLOW_ANONYMOUS = False
    return settings
