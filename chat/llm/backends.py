"""Which model server `CHAT_PROVIDER` and its neighbours point at, resolved once from
settings, with no secret in it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Literal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from chat.llm.demo import DEMO_MODEL

Api = Literal["responses", "chat"]
APIS: tuple[Api, ...] = ("responses", "chat")
BackendName = Literal["demo", "openai", "compatible", "azure"]
DEMO_BASE_URL = "http://offline-demo.invalid/v1"


@dataclass(frozen=True, slots=True)
class Backend:
    """What `CHAT_PROVIDER` resolved to, without any secret in it."""

    name: BackendName
    api: Api
    default_model: str
    models: tuple[str, ...]
    base_url: str

    @property
    def is_demo(self) -> bool:
        return self.name == "demo"

    @property
    def label(self) -> str:
        if self.is_demo:
            return "offline demo model (no API key configured; replies are canned)"
        where = {"openai": "OpenAI", "azure": "Azure OpenAI"}.get(self.name, "OpenAI-compatible")
        return f"{where} at {self.base_url} ({self.api} API, model {self.default_model})"


@cache
def backend() -> Backend:
    choice = settings.CHAT_PROVIDER.lower()
    if choice == "auto":
        if settings.AZURE_OPENAI_ENDPOINT:
            choice = "azure"
        elif settings.OPENAI_API_KEY or settings.OPENAI_BASE_URL:
            choice = "openai"
        else:
            choice = "demo"
    if choice not in {"demo", "openai", "azure"}:
        raise ImproperlyConfigured("CHAT_PROVIDER must be auto, demo, openai or azure.")

    name: BackendName
    if choice == "demo":
        name, base_url, default_model = "demo", DEMO_BASE_URL, DEMO_MODEL
    elif choice == "azure":
        if not settings.AZURE_OPENAI_ENDPOINT:
            raise ImproperlyConfigured("CHAT_PROVIDER=azure needs AZURE_OPENAI_ENDPOINT.")
        name, base_url, default_model = "azure", settings.AZURE_OPENAI_ENDPOINT, "gpt-4.1-mini"
    else:
        base_url = settings.OPENAI_BASE_URL or "https://api.openai.com/v1"
        is_openai = "api.openai.com" in base_url
        if is_openai and not settings.OPENAI_API_KEY:
            raise ImproperlyConfigured("CHAT_PROVIDER=openai needs OPENAI_API_KEY.")
        name = "openai" if is_openai else "compatible"
        default_model = "gpt-4.1-mini"

    api = _api(settings.CHAT_API or ("responses" if name == "openai" else "chat"))
    model = settings.CHAT_MODEL or default_model
    models = tuple(dict.fromkeys([model, *settings.CHAT_MODELS]))
    return Backend(name=name, api=api, default_model=model, models=models, base_url=base_url)


def api_named(value: str) -> Api | None:
    """`value` as one of the model APIs, typed as one; None when it is none of them."""
    return next((api for api in APIS if api == value), None)


def _api(value: str) -> Api:
    api = api_named(value)
    if api is None:
        raise ImproperlyConfigured("CHAT_API must be 'responses' or 'chat'.")
    return api
