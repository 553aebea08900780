// The conversation on screen: its history, the title above it, and sending a message.
//
//   POST /api/chat?stream=defer      stores the turn, returns {conversation, message, stream_url}
//   GET  /api/conversations/<id>     a conversation's history
//
// The page never re-posts a message on its own: Retry after a refused POST is the person's.

import { refreshAccount } from "./account.js";
import { api, describeFailure, failureOf, statusForType } from "./api.js";
import { ReplyView, UserView } from "./replies.js";
import { appendToTranscript, clearTranscript, scrollToEnd } from "./transcript.js";
import { Turns } from "./turns.js";

export class Thread {
  // config: the page's settings; model: the model <select> (or null); titleElement: the
  // top bar's title. Hooks: announce(text), composerChanged(), listChanged(),
  // shown(conversation), unavailable(), editInComposer(text), newChat(), signIn().
  constructor({ config, model, titleElement, hooks }) {
    this.config = config;
    this.model = model;
    this.titleElement = titleElement;
    this.hooks = hooks;
    this.conversation = null; // the conversation on screen (null: a new chat)
    this.routeSeq = 0; // bumped whenever the page moves to another conversation
    this.turns = new Turns({
      announce: hooks.announce,
      changed: hooks.composerChanged,
      settled: () => {
        hooks.listChanged();
        refreshAccount();
      },
      retry: (turn) => this.retry(turn),
    });
  }

  liveTurn() {
    return this.turns.in(this.conversation);
  }

  stop() {
    return this.turns.stop(this.liveTurn());
  }

  setTitle(title) {
    this.titleElement.textContent = title;
    document.title = title === "New chat" ? "Chat" : `${title} · Chat`;
  }

  // A title changed elsewhere (the list, a rename): shown if it is this conversation's.
  titleChanged(conversation, title) {
    if (conversation === this.conversation) this.setTitle(title || "Untitled");
  }

  async send(text) {
    if (this.liveTurn()) return;
    const seq = this.routeSeq;
    const model = this.model?.value || undefined;
    const user = new UserView(text);
    const view = new ReplyView(model || this.config.defaultModel);
    view.thinking();
    appendToTranscript(user.item, view.item);
    const turn = this.turns.add({ conversation: this.conversation, prompt: text, view });
    this.hooks.announce("Sent. The assistant is thinking.");
    let created;
    try {
      created = await api("/api/chat?stream=defer", {
        method: "POST",
        body: { message: text, conversation: this.conversation, ...(model ? { model } : {}) },
      });
    } catch (error) {
      this.turns.end(turn);
      this.refused(error, { user, view, text });
      return;
    }
    const isNew = turn.conversation === null;
    turn.conversation = created.conversation;
    if (isNew && seq === this.routeSeq) {
      this.conversation = created.conversation;
      // The URL names the conversation so a reload comes back to it.
      history.replaceState(null, "", `#${created.conversation}`);
      this.hooks.shown(created.conversation);
    }
    if (isNew) this.hooks.listChanged();
    await this.turns.started(turn, created);
  }

  // The POST was refused, so nothing was stored: retrying re-sends the same text in place
  // of this attempt, and editing puts it back in the message box.
  refused(error, { user, view, text }) {
    const failure = failureOf(error);
    const discard = () => {
      user.item.remove();
      view.item.remove();
    };
    const retry = () => {
      discard();
      this.send(text);
    };
    const edit = () => {
      discard();
      this.hooks.editInComposer(text);
    };
    let actions = describeFailure(failure).retryable
      ? [
          ["Retry", retry],
          ["Edit", edit],
        ]
      : [["Edit message", edit]];
    if (error.type === "authentication_required") actions = [["Sign in", this.hooks.signIn]];
    if (error.type === "budget_exceeded") refreshAccount();
    this.hooks.announce(view.failure(failure, actions));
  }

  // A failed turn stays in the history; retrying sends its prompt again as a new turn.
  retry(turn) {
    if (this.liveTurn()) return;
    turn.view.clearNotices();
    this.send(turn.prompt);
  }

  showNewChat() {
    this.conversation = null;
    this.routeSeq++;
    clearTranscript();
    this.setTitle("New chat");
    if (this.model) this.model.value = this.config.defaultModel;
    this.hooks.shown(null);
    this.hooks.composerChanged();
  }

  async open(id) {
    const seq = ++this.routeSeq;
    this.conversation = id;
    this.hooks.shown(id);
    this.hooks.composerChanged();
    let detail;
    try {
      detail = await api(`/api/conversations/${id}`);
    } catch (error) {
      if (seq !== this.routeSeq) return;
      this.unavailable(error);
      return;
    }
    if (seq !== this.routeSeq) return; // the person has moved on
    clearTranscript();
    this.setTitle(detail.title || "Untitled");
    if (this.model && this.config.models.includes(detail.model)) this.model.value = detail.model;
    const assistants = detail.messages.filter((m) => m.role === "assistant");
    const last = assistants[assistants.length - 1];
    let prompt = "";
    for (const message of detail.messages) {
      if (message.role === "user") {
        prompt = message.content;
        appendToTranscript(new UserView(message.content).item);
      } else if (message.role === "assistant") {
        appendToTranscript(this.storedReply(message, prompt, message === last));
      }
    }
    scrollToEnd();
    this.hooks.composerChanged();
  }

  unavailable(error) {
    this.hooks.unavailable();
    clearTranscript();
    this.setTitle("Conversation unavailable");
    const view = new ReplyView("");
    appendToTranscript(view.item);
    view.failure(
      {
        status: error.status,
        type: error.type,
        message:
          error.status === 404
            ? "This conversation does not exist, or is not yours."
            : error.message,
      },
      [["Start a new chat", this.hooks.newChat]],
    );
  }

  // A stored reply's view item; an unfinished one is followed to its end.
  storedReply(message, prompt, isLast) {
    const live = this.turns.forMessage(message.id);
    if (live) return live.view.item; // still streaming in this tab: its live view, in place
    const view = new ReplyView(message.model);
    view.text = message.content;
    if (message.status === "pending" || message.status === "streaming") {
      // Reopening the stream never re-runs the turn: a pending one is claimed once, a
      // streaming one (the reply was being written when the page went away) is replayed or
      // waited for from the stored row.
      const turn = this.turns.add({
        conversation: this.conversation,
        prompt,
        view,
        messageId: message.id,
        following: message.status === "streaming",
      });
      this.turns.follow(turn, message.stream_url || `/api/messages/${message.id}/stream`);
      return view.item;
    }
    if (message.status === "failed") {
      const failure = {
        status: statusForType(message.error?.type),
        type: message.error?.type,
        message: message.error?.message,
      };
      const turn = { prompt, view };
      view.failure(failure, isLast ? [["Retry", () => this.retry(turn)]] : []);
      view.showDetails(message);
      return view.item;
    }
    view.finish(message);
    return view.item;
  }
}
