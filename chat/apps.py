from django.apps import AppConfig
from django.core.signals import setting_changed


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"

    def ready(self) -> None:
        from django.core import checks

        from chat import llm
        from chat.access import accounts, identity  # noqa: F401 (their receivers)
        from chat.ops.workers import workers_check
        from chat.tools.registry import tools_check

        checks.register(tools_check)
        checks.register(workers_check)

        def forget_backend(*, setting: str, **kwargs: object) -> None:
            # The backend is resolved once from settings; tests change them at runtime.
            if setting.startswith(("CHAT_", "OPENAI_", "AZURE_OPENAI_")):
                llm.reset()

        setting_changed.connect(forget_backend, weak=False, dispatch_uid="chat.llm.reset")
