import httpx2
import pytest

from chat import pricing, provider
from tests.upstream import FakeUpstream


@pytest.fixture(scope="session")
def django_db_modify_db_settings(tmp_path_factory, django_db_modify_db_settings_parallel_suffix):
    """Test on a SQLite file, as production does: an in-memory shared-cache database
    fails concurrent writers at once ("table is locked") instead of honouring WAL and the
    busy timeout, so it would test a database nobody runs."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] in ("django.db.backends.sqlite3", "chatsite.sqlite"):
        path = tmp_path_factory.mktemp("sqlite") / "test.sqlite3"
        database.setdefault("TEST", {})["NAME"] = str(path)


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
    fake = FakeUpstream()
    provider.use_transport(httpx2.MockTransport(fake))
    yield fake
    provider.use_transport(None)


@pytest.fixture(autouse=True)
def _fresh_backend():
    provider.reset()
    # A flushed or rolled-back database does not call `ModelPrice.delete`.
    pricing.prices_forget()
    yield
    provider.reset()
