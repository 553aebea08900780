// The chat page: a small module with no framework, talking only to the documented API.
//
//   POST /api/chat?stream=defer      stores the turn, returns {conversation, message, stream_url}
//   new EventSource(stream_url)      start, delta…, then end | error (closed on both; on a
//                                    network error the browser reconnects with Last-Event-ID
//                                    and the reply goes on where it was)
//   POST /api/messages/<id>/cancel   Stop
//   GET  /api/conversations[/<id>]   the sidebar and a conversation's history
//   GET  /api/account                 who is signed in, their spend and budget (account.js)
//
// The reply is written on the server whether or not this page is open: closing or reloading
// the page never stops it (only Stop does), and opening its stream URL again follows it on,
// never calling the model a second time. The page never re-posts a message on its own.

import { refreshAccount, showBudget } from "./account.js";
import DOMPurify from "./vendor/dompurify/purify.es.mjs";
import { marked } from "./vendor/marked/marked.esm.js";

const config = JSON.parse(document.getElementById("chat-config").textContent);
const $ = (id) => document.getElementById(id);
const els = {
  app: $("app"),
  sidebar: $("sidebar"),
  list: $("conversation-list"),
  listEmpty: $("conversation-empty"),
  newChat: $("new-chat"),
  sidebarOpen: $("sidebar-open"),
  sidebarClose: $("sidebar-close"),
  scrim: $("scrim"),
  title: $("title"),
  model: $("model"),
  transcript: $("transcript"),
  welcome: $("welcome"),
  messages: $("messages"),
  form: $("composer"),
  input: $("composer-input"),
  send: $("send"),
  stop: $("stop"),
  announcer: $("announcer"),
};

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const STOP_GRACE_MS = 3000;

// ---- Markdown: model text is parsed by marked, raw HTML in it is shown as text, and the
// result still goes through DOMPurify before it becomes DOM nodes (never innerHTML).

function escapeHtml(text) {
  return String(text).replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c],
  );
}

marked.use({
  gfm: true,
  breaks: true,
  renderer: {
    html({ text, block }) {
      return block ? `<p>${escapeHtml(text)}</p>` : escapeHtml(text);
    },
    // Images a model names could be trackers; show them as links the user may choose to open.
    image({ href, text }) {
      return `<a href="${escapeHtml(href)}">${escapeHtml(text || href)}</a>`;
    },
  },
});

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

const PURIFY = {
  RETURN_DOM_FRAGMENT: true,
  USE_PROFILES: { html: true },
  FORBID_TAGS: ["img", "style", "form", "input", "button", "textarea", "select", "video", "audio"],
  FORBID_ATTR: ["style"],
};

function renderMarkdown(element, text) {
  element.replaceChildren(DOMPurify.sanitize(marked.parse(text), PURIFY));
}

// ---- API

class ApiError extends Error {
  constructor(status, type, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.type = type;
    this.retryAfter = retryAfter;
  }
}

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") {
    headers["Content-Type"] = "application/json";
    headers["X-CSRFToken"] = csrfToken();
  }
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: method === "GET" ? undefined : JSON.stringify(body ?? {}),
      credentials: "same-origin",
    });
  } catch {
    throw new ApiError(0, "network", "Could not reach the server. Check your connection.");
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = data?.error ?? {};
    throw new ApiError(
      response.status,
      error.type || "http_error",
      error.message || `The server answered with HTTP ${response.status}.`,
      response.headers.get("Retry-After"),
    );
  }
  return data;
}

// A failure, in words a person can act on.
function describeFailure({ status, type = "", message = "", retryAfter = null }) {
  let headline = "Something went wrong";
  let retryable = true;
  if (status === 0 || type === "network") headline = "Can't reach the server";
  else if (type === "still_streaming") headline = "This reply is still being written";
  else if (type === "budget_exceeded") [headline, retryable] = ["Budget reached", false];
  else if (type === "authentication_required") [headline, retryable] = ["Signed out", false];
  else if (status === 429 && /quota/i.test(type)) headline = "Usage quota reached";
  else if (status === 429 && type.startsWith("upstream")) headline = "The model provider is busy";
  else if (status === 429) headline = "Too many messages at once";
  else if (type === "upstream_auth") headline = "The model is not set up correctly";
  else if (status === 504 || type === "upstream_timeout") headline = "The model took too long";
  else if (type.startsWith("upstream") || status === 502) headline = "The model is unavailable";
  else if (status === 413) [headline, retryable] = ["That message is too long", false];
  else if (status === 401 || status === 403) [headline, retryable] = ["Not allowed", false];
  else if (status === 404) [headline, retryable] = ["Not found", false];
  else if (status >= 400 && status < 500) [headline, retryable] = ["Message not accepted", false];
  else if (status >= 500) headline = "Something went wrong on our side";
  let detail = message;
  const seconds = Number.parseInt(retryAfter ?? "", 10);
  if (Number.isFinite(seconds) && seconds > 0) {
    detail += ` Try again in ${seconds} second${seconds === 1 ? "" : "s"}.`;
  }
  return { headline, detail: detail.trim(), retryable };
}

// A stream's error event carries the error type, not the HTTP status it stands for.
function statusForType(type = "") {
  if (type === "upstream_rate_limit" || /quota|rate/.test(type)) return 429;
  if (type === "upstream_timeout") return 504;
  if (type === "still_streaming") return 409;
  return 502;
}

// ---- Formatting

const usd = new Intl.NumberFormat("en-US", {
  style: "currency",
  currency: "USD",
  maximumSignificantDigits: 3,
});

function formatCost(dollars) {
  return dollars === 0 ? "$0.00" : usd.format(dollars);
}

function formatMs(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function formatWhen(iso) {
  const date = new Date(iso);
  const sameDay = date.toDateString() === new Date().toDateString();
  return sameDay
    ? date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleDateString(undefined, { month: "short", day: "numeric" });
}

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function announce(text) {
  els.announcer.textContent = text;
}

// ---- Scrolling: follow the reply only while the reader is at the bottom.

function nearBottom() {
  const t = els.transcript;
  return t.scrollHeight - t.scrollTop - t.clientHeight < 96;
}

function keepBottom(wasNearBottom) {
  if (wasNearBottom) els.transcript.scrollTop = els.transcript.scrollHeight;
}

// ---- Message views

function appendUser(text) {
  const item = el("li", { class: "message message-user", "data-role": "user" }, [
    el("span", { class: "visually-hidden", text: "You:" }),
    el("div", { class: "bubble", text }),
  ]);
  const bottom = nearBottom();
  els.welcome.hidden = true;
  els.messages.append(item);
  keepBottom(bottom);
  return item;
}

class ReplyView {
  constructor(model) {
    this.markdown = el("div", { class: "markdown", "aria-busy": "false" });
    this.details = el("p", { class: "details" });
    this.notices = el("div", { class: "notices" });
    this.item = el("li", { class: "message message-assistant", "data-role": "assistant" }, [
      el("span", { class: "role", text: "Assistant" }),
      el("div", { class: "bubble" }, [this.markdown]),
      this.details,
      this.notices,
    ]);
    this.model = model;
    this.text = "";
    this.frame = 0;
    const bottom = nearBottom();
    els.welcome.hidden = true;
    els.messages.append(this.item);
    keepBottom(bottom);
  }

  setState(state) {
    this.item.dataset.state = state;
    // Screen readers hold back a busy region and read it once it is done.
    this.markdown.setAttribute("aria-busy", String(state === "thinking" || state === "streaming"));
  }

  thinking(label = "Thinking…") {
    this.setState("thinking");
    this.markdown.replaceChildren(
      el("span", { class: "thinking" }, [
        el("span", { class: "dots", "aria-hidden": "true" }, [el("span"), el("span"), el("span")]),
        el("span", { text: label }),
      ]),
    );
  }

  // Re-rendered at most once a frame: tokens can arrive faster than the screen repaints.
  update(text) {
    this.text = text;
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.setState("streaming");
      this.paint();
    });
  }

  paint() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
    const bottom = nearBottom();
    if (this.text) renderMarkdown(this.markdown, this.text);
    else this.markdown.replaceChildren();
    keepBottom(bottom);
  }

  finish(data, text = this.text) {
    this.text = text;
    this.setState(data.status || "completed");
    this.paint();
    this.showDetails(data);
    if (data.status === "cancelled") {
      this.notice(this.text ? "Stopped. The text so far was kept." : "Stopped before any text.");
    } else if (data.status === "incomplete") {
      const reason = data.finish_reason ? ` (${data.finish_reason})` : "";
      this.notice(`The reply was cut short${reason}.`);
    }
  }

  showDetails(data) {
    const bottom = nearBottom();
    const parts = [];
    const model = data.model || this.model;
    if (model) parts.push(["Model", model]);
    const usage = data.usage;
    if (usage) {
      const approx = data.usage_estimated ? "≈" : "";
      parts.push([
        data.usage_estimated ? "Estimated tokens" : "Tokens",
        `${approx}${usage.input_tokens} in · ${approx}${usage.output_tokens} out`,
      ]);
    }
    if (data.cost != null) parts.push(["Cost", formatCost(Number(data.cost))]);
    else if (usage) parts.push(["Cost", "no price set"]);
    if (data.ttft_ms != null)
      parts.push(["Time to first token", `first token ${formatMs(data.ttft_ms)}`]);
    if (data.duration_ms != null) parts.push(["Duration", `${formatMs(data.duration_ms)} total`]);
    this.details.replaceChildren(
      ...parts.map(([label, value]) =>
        el("span", { title: label }, [
          el("span", { class: "visually-hidden", text: `${label}: ` }),
          value,
        ]),
      ),
    );
    if (this.text && navigator.clipboard) this.details.append(this.copyButton());
    keepBottom(bottom);
  }

  copyButton() {
    const button = el("button", { type: "button", class: "copy", text: "Copy" });
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(this.text);
        button.textContent = "Copied";
      } catch {
        button.textContent = "Copy failed";
      }
      setTimeout(() => {
        button.textContent = "Copy";
      }, 1500);
    });
    button.setAttribute("aria-label", "Copy this reply as markdown");
    return button;
  }

  failure(failure, actions = []) {
    this.setState("failed");
    this.paint();
    const { headline, detail } = describeFailure(failure);
    this.notice(detail, { headline, error: true, actions });
    return headline;
  }

  notice(text, { headline = "", error = false, actions = [] } = {}) {
    const children = [];
    if (headline) children.push(el("strong", { text: headline }));
    if (text) children.push(el("span", { text }));
    for (const [label, handler] of actions) {
      children.push(
        el("button", { type: "button", class: "button", text: label, onclick: handler }),
      );
    }
    const bottom = nearBottom();
    this.notices.replaceChildren(
      el(
        "div",
        { class: error ? "notice notice-error" : "notice", role: error ? "alert" : "note" },
        children,
      ),
    );
    keepBottom(bottom);
  }

  clearNotices() {
    this.notices.replaceChildren();
  }
}

// ---- Turns: one live EventSource per reply being written.

const state = {
  conversation: null, // the conversation on screen (null: a new chat)
  turns: new Map(), // live turns by a local key
  lost: new Set(), // turns whose stream the browser gave up on (reopened when the tab shows)
  routeSeq: 0,
};
let turnSeq = 0;

function liveTurn() {
  for (const turn of state.turns.values()) {
    if (turn.conversation === state.conversation) return turn;
  }
  return null;
}

function syncComposer() {
  const turn = liveTurn();
  els.send.hidden = Boolean(turn);
  els.stop.hidden = !turn;
  els.stop.disabled = Boolean(turn?.stopping);
}

// Back to this conversation after signing in (the sign-in page keeps `next`).
function signIn() {
  const here = location.pathname + location.hash;
  location.assign(`${config.loginUrl}?next=${encodeURIComponent(here)}`);
}

function endTurn(turn) {
  turn.source?.close();
  clearTimeout(turn.stopTimer);
  state.turns.delete(turn.key);
  syncComposer();
}

async function send(text) {
  if (liveTurn()) return;
  const seq = state.routeSeq;
  const model = els.model?.value || undefined;
  const userItem = appendUser(text);
  const view = new ReplyView(model || config.defaultModel);
  view.thinking();
  const turn = {
    key: ++turnSeq,
    conversation: state.conversation,
    prompt: text,
    view,
    messageId: null,
  };
  state.turns.set(turn.key, turn);
  syncComposer();
  announce("Sent. The assistant is thinking.");
  let created;
  try {
    created = await api("/api/chat?stream=defer", {
      method: "POST",
      body: { message: text, conversation: state.conversation, ...(model ? { model } : {}) },
    });
  } catch (error) {
    endTurn(turn);
    const failure = {
      status: error.status,
      type: error.type,
      message: error.message,
      retryAfter: error.retryAfter,
    };
    const { retryable } = describeFailure(failure);
    // Nothing was stored, so retrying re-sends the same text in place of this attempt.
    const retry = () => {
      userItem.remove();
      view.item.remove();
      send(text);
    };
    const edit = () => {
      userItem.remove();
      view.item.remove();
      els.input.value = text;
      autosize();
      els.input.focus();
    };
    let actions = retryable
      ? [
          ["Retry", retry],
          ["Edit", edit],
        ]
      : [["Edit message", edit]];
    if (error.type === "authentication_required") actions = [["Sign in", signIn]];
    if (error.type === "budget_exceeded") refreshAccount();
    const headline = view.failure(failure, actions);
    announce(headline);
    return;
  }
  turn.messageId = created.message;
  const isNew = turn.conversation === null;
  turn.conversation = created.conversation;
  if (isNew && seq === state.routeSeq) {
    state.conversation = created.conversation;
    // The URL names the conversation so a reload comes back to it.
    history.replaceState(null, "", `#${created.conversation}`);
  }
  if (isNew) refreshList();
  if (turn.stopping) await requestCancel(turn);
  follow(turn, created.stream_url);
}

// `resume`: reopened by the page (Reconnect, a tab brought back), so only the events after
// the last one shown are asked for; otherwise the whole reply so far, then live events.
function follow(turn, streamUrl, { resume = false } = {}) {
  const { view } = turn;
  turn.streamUrl = streamUrl;
  turn.done = false;
  state.lost.delete(turn);
  view.clearNotices();
  if (!resume) turn.text = "";
  if (!turn.text) view.thinking(turn.following ? "Finishing the reply…" : "Thinking…");
  const after = resume && turn.lastEventId;
  const url = after ? `${streamUrl}?last_event_id=${encodeURIComponent(after)}` : streamUrl;
  const source = new EventSource(url);
  turn.source = source;
  // The browser reconnects on its own after a network error, sending Last-Event-ID, and
  // the server sends only what came after it; the page closes the stream only on its end.
  const seen = (event) => {
    if (event.lastEventId) turn.lastEventId = event.lastEventId;
    if (turn.reconnecting) {
      turn.reconnecting = false;
      view.clearNotices();
    }
  };

  source.addEventListener("start", (event) => {
    seen(event);
    const data = JSON.parse(event.data);
    // A replay starts from the beginning: its text replaces what was shown.
    turn.text = "";
    view.model = data.model;
  });
  source.addEventListener("delta", (event) => {
    seen(event);
    const first = !turn.text;
    turn.text += JSON.parse(event.data).text;
    view.update(turn.text);
    if (first) announce("The assistant is replying.");
  });
  source.addEventListener("end", (event) => {
    const data = JSON.parse(event.data);
    turn.done = true;
    endTurn(turn);
    view.text = turn.text;
    view.finish(data);
    announce(data.status === "cancelled" ? "Reply stopped." : "Reply finished.");
    refreshList();
    refreshAccount();
  });
  // The stream's own `error` event (a MessageEvent with data) and EventSource's connection
  // error share the name; only the first carries data.
  source.addEventListener("error", (event) => {
    if (event instanceof MessageEvent && event.data) {
      turn.done = true;
      endTurn(turn);
      view.text = turn.text;
      const data = JSON.parse(event.data);
      const failure = {
        status: statusForType(data.error?.type),
        type: data.error?.type,
        message: data.error?.message,
        retryAfter: data.retry_after,
      };
      const actions = [["Retry", () => retryTurn(turn)]];
      announce(view.failure(failure, actions));
      view.showDetails(data);
      refreshAccount();
      return;
    }
    if (turn.source !== source) return; // an old connection, already replaced
    const retrying = source.readyState === EventSource.CONNECTING;
    if (!retrying) {
      // The browser gave up (the server refused the stream): the person may try again.
      endTurn(turn);
      state.lost.add(turn);
    }
    if (turn.reconnecting) return;
    turn.reconnecting = retrying;
    view.setState("disconnected");
    view.paint();
    const lost = turn.text ? "What arrived is shown above." : "No reply has arrived yet.";
    const next = retrying ? "Reconnecting; the reply goes on meanwhile." : "Reconnect to follow it.";
    view.notice(`${lost} ${next} It is never sent again.`, {
      headline: "Connection lost.",
      error: true,
      actions: [["Reconnect", () => reconnect(turn)]],
    });
    announce("Connection lost.");
  });
}

// Follow a turn again from the last event shown (never re-running it).
function reconnect(turn) {
  if (turn.done) return;
  turn.source?.close();
  turn.following = true;
  turn.reconnecting = false;
  state.turns.set(turn.key, turn);
  syncComposer();
  follow(turn, turn.streamUrl, { resume: true });
}

// A phone that brings the tab back may have dropped its connections meanwhile; reconnect
// at once rather than after the browser's backoff.
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState !== "visible") return;
  for (const turn of [...state.turns.values(), ...state.lost]) {
    if (turn.done || !turn.streamUrl) continue;
    if (!turn.source || turn.source.readyState !== EventSource.OPEN) reconnect(turn);
  }
});

// A failed turn stays in the history; retrying sends its prompt again as a new turn.
function retryTurn(turn) {
  if (liveTurn()) return;
  turn.view.clearNotices();
  send(turn.prompt);
}

async function requestCancel(turn) {
  try {
    await api(`/api/messages/${turn.messageId}/cancel`, { method: "POST", body: {} });
  } catch {
    // The turn may have just finished; its `end` event (or the fallback below) settles it.
  }
}

async function stop() {
  const turn = liveTurn();
  if (!turn || turn.stopping) return;
  turn.stopping = true;
  syncComposer();
  announce("Stopping…");
  if (turn.messageId == null) return; // send() cancels as soon as the turn exists
  await requestCancel(turn);
  // The server answers with `end` (status cancelled, partial text, usage). If that does not
  // arrive soon, show it stopped anyway: the cancel request has reached the server.
  turn.stopTimer = setTimeout(() => {
    if (turn.done) return;
    turn.done = true;
    endTurn(turn);
    turn.view.finish({ status: "cancelled" });
    announce("Reply stopped.");
  }, STOP_GRACE_MS);
}

// ---- Conversations

async function refreshList() {
  let conversations;
  try {
    ({ conversations } = await api("/api/conversations"));
  } catch {
    return; // the sidebar keeps what it had; the chat itself still works
  }
  els.listEmpty.hidden = conversations.length > 0;
  els.list.replaceChildren(
    ...conversations.map((c) =>
      el("li", {}, [
        el("a", { href: `#${c.id}`, "data-id": c.id }, [
          el("span", { class: "conversation-title", text: c.title || "Untitled" }),
          el("span", {
            class: "conversation-meta",
            text: `${formatWhen(c.updated_at)} · ${c.model}`,
          }),
        ]),
      ]),
    ),
  );
  markCurrent();
  const current = conversations.find((c) => c.id === state.conversation);
  if (current) setTitle(current.title || "Untitled");
}

function markCurrent() {
  for (const link of els.list.querySelectorAll("a")) {
    if (link.dataset.id === state.conversation) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function setTitle(title) {
  els.title.textContent = title;
  document.title = title === "New chat" ? "Chat" : `${title} · Chat`;
}

function clearTranscript() {
  els.messages.replaceChildren();
  els.welcome.hidden = false;
}

function showNewChat() {
  state.conversation = null;
  state.routeSeq++;
  clearTranscript();
  setTitle("New chat");
  if (els.model) els.model.value = config.defaultModel;
  markCurrent();
  syncComposer();
}

async function openConversation(id) {
  const seq = ++state.routeSeq;
  state.conversation = id;
  markCurrent();
  syncComposer();
  let detail;
  try {
    detail = await api(`/api/conversations/${id}`);
  } catch (error) {
    if (seq !== state.routeSeq) return;
    clearTranscript();
    setTitle("Conversation unavailable");
    const view = new ReplyView("");
    view.failure(
      {
        status: error.status,
        type: error.type,
        message:
          error.status === 404
            ? "This conversation does not exist, or is not yours."
            : error.message,
      },
      [["Start a new chat", newChat]],
    );
    return;
  }
  if (seq !== state.routeSeq) return; // the person has moved on
  clearTranscript();
  setTitle(detail.title || "Untitled");
  if (els.model && config.models.includes(detail.model)) els.model.value = detail.model;
  const live = new Map([...state.turns.values()].map((t) => [t.messageId, t]));
  const assistants = detail.messages.filter((m) => m.role === "assistant");
  const last = assistants[assistants.length - 1];
  let prompt = "";
  for (const message of detail.messages) {
    if (message.role === "user") {
      prompt = message.content;
      appendUser(message.content);
    } else if (message.role === "assistant") {
      showStored(message, prompt, live.get(message.id), message === last);
    }
  }
  els.transcript.scrollTop = els.transcript.scrollHeight;
  syncComposer();
}

function showStored(message, prompt, liveTurnForIt, isLast) {
  if (liveTurnForIt) {
    // Still streaming in this tab: move its live view back in place.
    els.messages.append(liveTurnForIt.view.item);
    return;
  }
  const view = new ReplyView(message.model);
  view.text = message.content;
  if (message.status === "pending" || message.status === "streaming") {
    // Reopening the stream never re-runs the turn: a pending one is claimed once, a
    // streaming one (the reply was being written when the page went away) is replayed or
    // waited for from the stored row.
    const turn = {
      key: ++turnSeq,
      conversation: state.conversation,
      prompt,
      view,
      messageId: message.id,
      following: message.status === "streaming",
    };
    state.turns.set(turn.key, turn);
    follow(turn, message.stream_url || `/api/messages/${message.id}/stream`);
    return;
  }
  if (message.status === "failed") {
    const failure = {
      status: statusForType(message.error?.type),
      type: message.error?.type,
      message: message.error?.message,
    };
    const turn = { prompt, view };
    view.failure(failure, isLast ? [["Retry", () => retryTurn(turn)]] : []);
    view.showDetails(message);
    return;
  }
  view.finish(message);
}

function route() {
  const id = location.hash.slice(1);
  closeSidebar(false);
  if (UUID.test(id)) {
    if (id !== state.conversation || !els.messages.childElementCount) openConversation(id);
  } else if (state.conversation !== null) {
    showNewChat();
  }
}

function newChat() {
  if (location.hash) history.pushState(null, "", location.pathname + location.search);
  showNewChat();
  closeSidebar(false);
  els.input.focus();
}

// ---- Sidebar on narrow screens

function openSidebar() {
  els.app.classList.add("sidebar-visible");
  els.sidebarOpen.setAttribute("aria-expanded", "true");
  els.newChat.focus();
}

function closeSidebar(returnFocus = true) {
  if (!els.app.classList.contains("sidebar-visible")) return;
  els.app.classList.remove("sidebar-visible");
  els.sidebarOpen.setAttribute("aria-expanded", "false");
  if (returnFocus) els.sidebarOpen.focus();
}

// ---- Composer

function autosize() {
  els.input.style.height = "auto";
  els.input.style.height = `${els.input.scrollHeight + 2}px`;
}

function submit() {
  const text = els.input.value;
  if (!text.trim() || liveTurn()) return;
  els.input.value = "";
  autosize();
  send(text);
}

els.form.addEventListener("submit", (event) => {
  event.preventDefault();
  submit();
});
els.input.addEventListener("keydown", (event) => {
  // isComposing: Enter that confirms an IME composition must not send.
  if (event.key === "Enter" && !event.shiftKey && !event.altKey && !event.isComposing) {
    event.preventDefault();
    submit();
  }
});
els.input.addEventListener("input", autosize);
const banner = $("demo-banner");
const BANNER_KEY = "chat.demoBannerHidden";
if (banner) {
  banner.hidden = localStorage.getItem(BANNER_KEY) === "1";
  $("demo-banner-dismiss").addEventListener("click", () => {
    banner.hidden = true;
    localStorage.setItem(BANNER_KEY, "1");
    els.input.focus();
  });
}
els.stop.addEventListener("click", stop);
els.newChat.addEventListener("click", newChat);
els.sidebarOpen.addEventListener("click", openSidebar);
els.sidebarClose.addEventListener("click", () => closeSidebar());
els.scrim.addEventListener("click", () => closeSidebar());
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  if (els.app.classList.contains("sidebar-visible")) closeSidebar();
  else if (liveTurn()) stop();
});
window.addEventListener("hashchange", route);
window.addEventListener("popstate", route);

showBudget(config.account?.budget);
refreshList();
route();
if (matchMedia("(pointer: fine)").matches) els.input.focus();
