"""The chat page's HTML and static files, without a browser (tests/browser/ drives one)."""

import json
import re
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders

pytestmark = pytest.mark.django_db


def page_config(html: str) -> dict:
    match = re.search(r'<script id="chat-config" type="application/json">(.*?)</script>', html)
    assert match, "the page hands its settings to chat.js through json_script"
    return json.loads(match.group(1))


def test_page_sets_the_csrf_cookie_and_loads_its_module(client):
    response = client.get("/")
    assert response.status_code == 200
    assert "csrftoken" in response.cookies
    html = response.content.decode()
    assert '<script type="module" src="/static/chat/chat.js">' in html
    assert 'href="/static/chat/chat.css"' in html
    assert "cdn" not in html.lower()


def test_demo_backend_shows_the_banner_and_no_picker_for_one_model(client, settings):
    settings.CHAT_MODELS = []
    html = client.get("/").content.decode()
    assert page_config(html) == {
        "models": ["offline-demo"],
        "defaultModel": "offline-demo",
        "isDemo": True,
        "label": "offline demo model (no API key configured; replies are canned)",
        "account": {"user": None, "budget": None},
        "loginUrl": "/accounts/login/",
        "files": {"maxBytes": 20 * 1024 * 1024, "perMessage": 10},
    }
    assert 'id="demo-banner"' in html
    assert "<select" not in html


def test_a_model_allow_list_gets_a_picker(client, upstream):
    html = client.get("/").content.decode()
    assert page_config(html)["models"] == ["gpt-4.1-mini", "gpt-4.1"]
    assert page_config(html)["isDemo"] is False
    assert '<option value="gpt-4.1-mini" selected>' in html
    assert '<option value="gpt-4.1">' in html
    assert 'id="demo-banner"' not in html


@pytest.mark.parametrize(
    "path",
    [
        "chat/chat.js",
        "chat/account.js",
        "chat/api.js",
        "chat/markdown.js",
        "chat/chat.css",
        "chat/vendor/marked/marked.esm.js",
        "chat/vendor/marked/LICENSE",
        "chat/vendor/dompurify/purify.es.mjs",
        "chat/vendor/dompurify/LICENSE",
    ],
)
def test_static_files_are_vendored_with_their_licences(path):
    assert finders.find(path), f"{path} is missing from chat/static/"


# Every static import, also one spread over several lines (`import {\n  a,\n} from "./x.js";`).
IMPORT = re.compile(r'^import\s[^;]*?\bfrom\s+"([^"]*)";', re.MULTILINE)
# The page's scripts are loaded by templates; the rest only through chat.js's imports.
ENTRY_POINTS = {"chat.js", "entrance.js"}


def imports(module: Path) -> list[str]:
    return IMPORT.findall(module.read_text(encoding="utf-8"))


def test_page_modules_import_only_files_shipped_beside_them():
    folder = Path(finders.find("chat/chat.js")).parent
    modules = sorted(folder.glob("*.js"))
    assert {m.name for m in modules} >= {"chat.js", "account.js", "api.js", "markdown.js"}
    for module in modules:
        source = module.read_text(encoding="utf-8")
        for target in imports(module):
            assert target.startswith("./"), f"{module.name} imports {target}: not a local file"
            assert (folder / target).is_file(), f"{module.name} imports missing {target}"
        assert "import(" not in source, f"{module.name}: a dynamic import"
        assert ".innerHTML" not in source, module.name
        assert "insertAdjacentHTML" not in source and "outerHTML" not in source, module.name
    # Model text becomes DOM in one place, through DOMPurify.
    users = [m.name for m in modules if "./vendor/dompurify/purify.es.mjs" in imports(m)]
    assert users == ["markdown.js"]


def test_every_page_module_is_reached_from_an_entry_point():
    folder = Path(finders.find("chat/chat.js")).parent
    reached: set[str] = set()
    todo = list(ENTRY_POINTS)
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        todo += [t.removeprefix("./") for t in imports(folder / name) if "/" not in t[2:]]
    assert {m.name for m in folder.glob("*.js")} == reached


def test_the_page_preloads_every_module_chat_js_imports(client):
    """Without the preloads the browser finds each import level only after the one above,
    a waterfall; a module missing from the list still works, just later."""
    folder = Path(finders.find("chat/chat.js")).parent
    reached: set[str] = set()
    todo = ["chat.js"]
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        todo += [t.removeprefix("./") for t in imports(folder / name)]
    html = client.get("/").content.decode()
    preloaded = set(re.findall(r'<link rel="modulepreload" href="/static/chat/([^"]+)">', html))
    assert preloaded == reached - {"chat.js"}
