"""What a conversation sent to the model is made of, and how each API wants its parts.

A message is `{"role", "content"}` as before, plus the files a person attached
(`InputFile`); an earlier reply's tool calls and results come as input items already in
the API's shape (`chat.llm.context`) and go through unchanged. Written for the Responses
API, an image is an `input_image` part and a PDF an `input_file` part; for Chat
Completions, an `image_url` part and a `file` part. Both carry the bytes as a base64
`data:` URL, encoded as JSON once and spliced into the request as it is sent
(`chat.llm.bodies`). A text file goes in as text, for either API. A message
without files keeps its plain string content, so a text turn's request is what it always
was.

Which models take images and PDFs is a setting (`CHAT_VISION_MODELS`); the offline demo
model always does. For a model that does not, files in earlier turns are named in a line
of text instead (a new message with them is refused before this, in `chat.turns`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from django.conf import settings

from chat.llm.bodies import Pieces
from chat.llm.demo import DEMO_MODEL
from chat.llm.events import FILE_TOKENS_ESTIMATE

FileKind = Literal["image", "pdf", "text"]
FILE_KINDS: tuple[FileKind, ...] = ("image", "pdf", "text")


@dataclass(frozen=True, slots=True)
class InputFile:
    """One attached file as the model gets it: an image or a PDF as a base64 `data:` URL
    already encoded as a JSON string (`data_url_json`, `chat.llm.bodies`), a text file
    as its text."""

    kind: FileKind
    name: str
    content_type: str
    data_url_json: bytes = b""
    text: str = ""

    def as_text(self) -> str:
        """A text file inline: its name, then its content."""
        return f"Attached file {self.name}:\n\n{self.text}"


# A message `{"role", "content"}`, with `files` (`InputFile`s) when a person attached
# some; or an input item already in the API's shape (an earlier reply's tool call or
# result, `chat.llm.context`), which goes as it is.
ContextMessage = dict[str, Any]


def sees_images(model: str) -> bool:
    """Whether `model` takes images and PDFs: listed in `CHAT_VISION_MODELS` (a dated
    snapshot as its base name), or the offline demo."""
    if model == DEMO_MODEL:
        return True
    return any(model == seen or _is_snapshot(model, seen) for seen in settings.CHAT_VISION_MODELS)


def _is_snapshot(model: str, base: str) -> bool:
    """`gpt-4.1-2025-04-14` is a snapshot of `gpt-4.1`; `gpt-4.1-mini` is not."""
    rest = model.removeprefix(base + "-")
    return rest != model and rest[:4].isdigit()


def responses_input(
    messages: Sequence[ContextMessage], *, model: str, pieces: Pieces
) -> list[dict[str, Any]]:
    """`input` of a Responses API request; its files' URLs are placeholders from `pieces`."""
    return [_message(m, model=model, parts=_responses_part, pieces=pieces) for m in messages]


def chat_messages(
    messages: Sequence[ContextMessage], *, model: str, pieces: Pieces
) -> list[dict[str, Any]]:
    """`messages` of a Chat Completions request (without the system message); its files'
    URLs are placeholders from `pieces`."""
    return [_message(m, model=model, parts=_chat_part, pieces=pieces) for m in messages]


def _message(message: ContextMessage, *, model: str, parts: Any, pieces: Pieces) -> dict[str, Any]:
    files = message.get("files")
    if not files:
        return message
    text_type = "input_text" if parts is _responses_part else "text"
    content: list[dict[str, Any]] = [{"type": text_type, "text": message["content"]}]
    sees = sees_images(model)
    for file in files:
        if file.kind == "text":
            content.append({"type": text_type, "text": file.as_text()})
        elif sees:
            content.append(parts(file, pieces.placeholder(file.data_url_json)))
        else:
            note = f"[{file.name} was attached here; this model cannot read images or PDFs.]"
            content.append({"type": text_type, "text": note})
    return {"role": message["role"], "content": content}


def _responses_part(file: InputFile, url: str) -> dict[str, Any]:
    if file.kind == "image":
        return {"type": "input_image", "image_url": url, "detail": "auto"}
    return {"type": "input_file", "filename": file.name, "file_data": url}


def _chat_part(file: InputFile, url: str) -> dict[str, Any]:
    if file.kind == "image":
        return {"type": "image_url", "image_url": {"url": url}}
    return {"type": "file", "file": {"filename": file.name, "file_data": url}}


def files_estimate(messages: Sequence[ContextMessage]) -> int:
    """Input tokens the files of `messages` may have cost, for an estimate."""
    return sum(
        len(file.text) // 4 if file.kind == "text" else FILE_TOKENS_ESTIMATE
        for m in messages
        for file in m.get("files", ())
    )


def file_kind(value: str) -> FileKind:
    """A stored kind as one of `FileKind`."""
    for kind in FILE_KINDS:
        if kind == value:
            return kind
    raise ValueError(f"not a file kind: {value!r}")
