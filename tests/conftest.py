import httpx2
import pytest

from chat import provider
from tests.upstream import FakeUpstream


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
    yield
    provider.reset()
