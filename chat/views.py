"""HTTP translation only: parse, identify the caller, call a service, encode the result."""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import aclosing
from typing import Any, NotRequired, TypedDict

from django.conf import settings
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import render, resolve_url
from django.views.decorators.csrf import csrf_exempt, ensure_csrf_cookie

from chat import conversations, llm
from chat.access.accounts import account_summary
from chat.access.identity import request_owner
from chat.access.owners import Owner
from chat.errors import ChatError
from chat.files.selectors import file_find
from chat.files.serving import file_response
from chat.files.uploads import file_upload
from chat.ops import metrics
from chat.payloads import (
    parse_chat_request,
    parse_edit_request,
    parse_regenerate_request,
    parse_rename_request,
    request_body,
    uploaded_file,
)
from chat.seams import ClosingStreamingResponse
from chat.spend import limits
from chat.streams import StreamEvent, encode_ndjson, encode_sse, fold, sse_retry
from chat.turns import (
    NewVersion,
    Turn,
    TurnLog,
    stream_url,
    turn_cancel,
    turn_claim,
    turn_detach,
    turn_edit,
    turn_follow,
    turn_log_find,
    turn_regenerate,
    turn_replay,
    turn_select,
    turn_start,
    turn_stream,
)

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
JSON = "application/json"
SSE_RETRY_MS = 3000

# What Django serves asynchronously, and what django-stubs' `path()` takes: a coroutine function.
View = Callable[..., Coroutine[Any, Any, HttpResponseBase]]


def api_view(*methods: str) -> Callable[[View], View]:
    """Allow only `methods`, answering anything else with a JSON 405. Exempt from
    Django's token CSRF: the API refuses cross-site requests by where they come from and
    by their content type instead (`chat.middleware.CrossOriginProtectionMiddleware`)."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method not in methods:
                raise ChatError(
                    "method_not_allowed",
                    f"Use {' or '.join(methods)} here.",
                    headers={"Allow": ", ".join(methods)},
                )
            return await view(request, *args, **kwargs)

        return csrf_exempt(wrapper)

    return decorate


@ensure_csrf_cookie
async def index(request: HttpRequest) -> HttpResponse:
    backend = llm.backend()
    user = await request.auser()
    account = await account_summary(user_id=user.pk if user.is_authenticated else None)
    # The page's script reads this through json_script, never through inline JS.
    chat_config = {
        "models": list(backend.models),
        "defaultModel": backend.default_model,
        "isDemo": backend.is_demo,
        "label": backend.label,
        "account": account,
        "loginUrl": resolve_url(settings.LOGIN_URL),
        "files": {
            "maxBytes": settings.CHAT_FILES_MAX_BYTES,
            "perMessage": settings.CHAT_FILES_PER_MESSAGE,
        },
    }
    context = {"backend": backend, "chat_config": chat_config, "account": account}
    return render(request, "chat/index.html", context)


@api_view("GET")
async def account(request: HttpRequest) -> HttpResponse:
    owner = await request_owner(request)
    return JsonResponse(await account_summary(user_id=owner.user_id))


@api_view("POST")
async def chat(request: HttpRequest) -> HttpResponseBase:
    accept = request.get_preferred_type([JSON, SSE, NDJSON])
    if accept is None:
        raise ChatError("not_acceptable", f"Accept {JSON}, {SSE} or {NDJSON}.")
    payload = parse_chat_request(
        request_body(request),
        max_message_chars=settings.CHAT_MAX_MESSAGE_CHARS,
        max_system_chars=settings.CHAT_MAX_SYSTEM_CHARS,
        max_files=settings.CHAT_FILES_PER_MESSAGE,
    )
    owner = await request_owner(request)
    key = limits.limits_key(request, owner.user_id)
    defer = request.GET.get("stream") == "defer"
    resumable = request.GET.get("stream") == "resumable"
    async with limits.admitted(key=key, streaming=not defer, user_id=owner.user_id) as slot:
        turn = await turn_start(
            owner=owner,
            message=payload.message,
            conversation_id=payload.conversation,
            model=payload.model,
            system=payload.system,
            attachments=payload.attachments,
            defer=defer,
        )
    if defer:
        return JsonResponse(turn_reply(turn, pending=True), status=201)
    if resumable:
        # Detached: runs on when this client leaves (for the grace period); the start
        # event names the stream_url to resume from.
        log = await turn_detach(
            turn=turn, key=key, slot=slot, user_id=owner.user_id, resumable_url=True
        )
        if accept == SSE:
            return sse_frames(log.frames_after(0))
        events = log.events_after(0)
    else:
        # A script that hangs up wants to stop paying: this stream ends with its client.
        events = await turn_events(turn, key=key, slot=slot, user_id=owner.user_id)
    if accept == SSE:
        return sse_response(events)
    if accept == NDJSON:
        return ndjson_response(events)
    return await json_reply(events)


@api_view("GET")
async def message_stream(request: HttpRequest, message_id: int) -> HttpResponseBase:
    if request.get_preferred_type([SSE]) is None:
        raise ChatError("not_acceptable", f"This endpoint streams {SSE}.")
    after = last_event_id(request)
    owner = await request_owner(request)
    key = limits.limits_key(request, owner.user_id)
    # The slot is taken before the claim: refusing after it would strand the row.
    async with limits.admitted(
        key=key, streaming=True, new_turn=False, user_id=owner.user_id, opening=message_id
    ) as slot:
        claimed = await turn_claim(owner=owner, message_id=message_id)
    log: TurnLog | None
    if isinstance(claimed, Turn):
        log = await turn_detach(turn=claimed, key=key, slot=slot, user_id=owner.user_id)
    else:
        if slot:
            await limits.stream_release(key)
        log = await turn_log_find(message=claimed)
        if log is None:
            # No log (it expired, or a direct request streams the turn): from the stored row.
            if claimed.status in claimed.FINAL_STATUSES:
                return sse_response(_aiter(turn_replay(claimed)))
            return sse_response(turn_follow(message=claimed))
    return sse_frames(log.frames_after(after))


def last_event_id(request: HttpRequest) -> int:
    """Where a resuming reader left off: `Last-Event-ID` (EventSource sends it when it
    reconnects) or `?last_event_id=`; 0, the start, without either."""
    raw = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id") or "0"
    try:
        after = int(raw)
    except ValueError:
        after = -1
    if after < 0:
        raise ChatError("invalid_request", "Last-Event-ID must be a whole number.")
    return after


@api_view("POST")
async def message_cancel(request: HttpRequest, message_id: int) -> HttpResponse:
    owner = await request_owner(request)
    message = await turn_cancel(owner=owner, message_id=message_id)
    reply: CancelReply = {"message": message.pk, "status": message.status}
    return JsonResponse(reply, status=202)


@api_view("POST")
async def message_regenerate(request: HttpRequest, message_id: int) -> HttpResponse:
    model = parse_regenerate_request(request_body(request))
    return await new_version(
        request, lambda owner: turn_regenerate(owner=owner, message_id=message_id, model=model)
    )


@api_view("POST")
async def message_edit(request: HttpRequest, message_id: int) -> HttpResponse:
    edit = parse_edit_request(
        request_body(request),
        max_message_chars=settings.CHAT_MAX_MESSAGE_CHARS,
        max_files=settings.CHAT_FILES_PER_MESSAGE,
    )
    return await new_version(
        request,
        lambda owner: turn_edit(
            owner=owner, message_id=message_id, message=edit.message, attachments=edit.attachments
        ),
    )


async def new_version(
    request: HttpRequest, make: Callable[[Owner], Awaitable[NewVersion]]
) -> JsonResponse:
    """A new version of the last turn, admitted like a new turn (it will call the model)."""
    owner = await request_owner(request)
    async with limits.admitted(
        key=limits.limits_key(request, owner.user_id), streaming=False, user_id=owner.user_id
    ):
        version = await make(owner)
    return JsonResponse(turn_reply(version, pending=True), status=201)


@api_view("POST")
async def message_select(request: HttpRequest, message_id: int) -> HttpResponse:
    owner = await request_owner(request)
    return JsonResponse(turn_reply(await turn_select(owner=owner, message_id=message_id)))


class TurnReply(TypedDict):
    """A new turn, or a version of the last one: its reply's and its user message's rows."""

    conversation: str
    message: int
    user_message: int | None
    stream_url: NotRequired[str]  # a reply still to be streamed


class CancelReply(TypedDict):
    message: int
    status: str


def turn_reply(turn: Turn | NewVersion, *, pending: bool = False) -> TurnReply:
    """`pending`: its reply is yet to be streamed, from the `stream_url`."""
    reply: TurnReply = {
        "conversation": str(turn.conversation_id),
        "message": turn.message_id,
        "user_message": turn.user_message_id,
    }
    if pending:
        reply["stream_url"] = stream_url(turn.message_id)
    return reply


@api_view("GET")
async def conversation_list(request: HttpRequest) -> HttpResponse:
    owner = await request_owner(request)
    page = await conversations.conversation_page(
        owner=owner,
        q=request.GET.get("q", ""),
        before=request.GET.get("before") or None,
        limit=conversations.page_size(request.GET.get("limit")),
    )
    return JsonResponse(page)


@api_view("GET", "PATCH", "DELETE")
async def conversation_detail(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    owner = await request_owner(request)
    if request.method == "PATCH":
        title = parse_rename_request(request_body(request))
        renamed = await conversations.conversation_rename(
            owner=owner, conversation_id=conversation_id, title=title
        )
        return JsonResponse(renamed)
    if request.method == "DELETE":
        await conversations.conversation_delete(owner=owner, conversation_id=conversation_id)
        return HttpResponse(status=204)
    detail = await conversations.conversation_detail(owner=owner, conversation_id=conversation_id)
    return JsonResponse(detail)


@api_view("GET")
async def conversation_export(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    owner = await request_owner(request)
    export = await conversations.conversation_export(
        owner=owner, conversation_id=conversation_id, format=request.GET.get("format", "md")
    )
    response = HttpResponse(export.body, content_type=export.content_type)
    response["Content-Disposition"] = f'attachment; filename="{export.filename}"'
    return response


@api_view("POST")
async def file_create(request: HttpRequest) -> HttpResponse:
    owner = await request_owner(request)
    upload = await uploaded_file(request, max_bytes=settings.CHAT_FILES_MAX_BYTES)
    key = limits.limits_key(request, owner.user_id)
    return JsonResponse(await file_upload(owner=owner, upload=upload, limits_key=key), status=201)


@api_view("GET")
async def file_detail(request: HttpRequest, file_id: uuid.UUID) -> HttpResponseBase:
    owner = await request_owner(request)
    return file_response(await file_find(owner=owner, file_id=file_id))


@csrf_exempt  # any method: a 404, never a CSRF refusal (see `api_view`)
async def api_not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    raise ChatError("not_found", f"No API endpoint at {request.path}.")


async def turn_events(
    turn: Turn, *, key: str, slot: bool, user_id: int | None
) -> AsyncGenerator[StreamEvent, None]:
    """The turn's events for a response body, its slot, quota and budget settled at the end."""
    return await started(
        limits.guarded(
            turn_stream(turn=turn),
            key=key,
            message_id=turn.message_id,
            slot=slot,
            user_id=user_id,
        )
    )


async def started(
    events: AsyncGenerator[StreamEvent, None],
) -> AsyncGenerator[StreamEvent, None]:
    """`events` with its first event already taken, so the turn is inside its `try` before
    the response leaves the view. If the client is gone before Django ever iterates the
    body, the dropped, started generator is closed by the event loop's async-generator
    finaliser and its `finally` records the turn (an unstarted one would run nothing)."""
    first = await anext(events)

    async def resumed() -> AsyncGenerator[StreamEvent, None]:
        async with aclosing(events):
            yield first
            async for event in events:
                yield event

    return resumed()


def sse_response(events: AsyncGenerator[StreamEvent, None]) -> StreamingHttpResponse:
    async def frames() -> AsyncIterator[bytes]:
        n = 0
        # aclosing: if the client leaves while we wait on `send`, closing this generator
        # must close the turn's too, so its row is finished now rather than at GC.
        async with aclosing(events), metrics.stream_open():
            yield sse_retry(SSE_RETRY_MS)
            async for event in events:
                if event.type == "idle":  # not an event of the turn: no id
                    yield encode_sse(event)
                    continue
                n += 1
                yield encode_sse(event, id=n)

    return _streaming(frames(), f"{SSE}; charset=utf-8")


def sse_frames(frames: AsyncGenerator[bytes | StreamEvent, None]) -> StreamingHttpResponse:
    """A detached turn's log as SSE: its frames as stored, so a resumed reader gets the
    same bytes as the first."""

    async def body() -> AsyncIterator[bytes]:
        async with aclosing(frames), metrics.stream_open():
            yield sse_retry(SSE_RETRY_MS)
            async for frame in frames:
                yield frame if isinstance(frame, bytes) else encode_sse(frame)

    return _streaming(body(), f"{SSE}; charset=utf-8")


def ndjson_response(events: AsyncGenerator[StreamEvent, None]) -> StreamingHttpResponse:
    async def lines() -> AsyncIterator[bytes]:
        async with aclosing(events), metrics.stream_open():
            async for event in events:
                if event.type != "idle":
                    yield encode_ndjson(event)

    return _streaming(lines(), f"{NDJSON}; charset=utf-8")


def _streaming(body: AsyncIterator[bytes], content_type: str) -> StreamingHttpResponse:
    response = ClosingStreamingResponse(body, content_type=content_type)
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass every frame through at once
    return response


async def json_reply(events: AsyncIterator[StreamEvent]) -> JsonResponse:
    reply = fold([event async for event in events])
    error = reply.get("error")
    if not error:
        return JsonResponse(reply)
    status = error["http_status"]
    retry_after = reply.pop("retry_after", None)
    headers = {"Retry-After": retry_after} if retry_after else None
    return JsonResponse(reply, status=status, headers=headers)


async def _aiter(events: list[StreamEvent]) -> AsyncGenerator[StreamEvent, None]:
    for event in events:
        yield event
