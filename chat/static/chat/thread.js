// The conversation on screen: its turns (each a TurnView, with its versions), the title
// above it, and sending a message.
//
//   POST /api/chat?stream=defer      stores the turn, returns {conversation, message, stream_url}
//   GET  /api/conversations/<id>     a conversation's history, the current version of each turn
//
// The page never re-posts a message on its own: Retry after a refused POST is the person's.

import { refreshAccount } from "./account.js";
import { api, describeFailure, failureOf } from "./api.js";
import { ReplyView } from "./replies.js";
import { appendToTranscript, clearTranscript, scrollToEnd } from "./transcript.js";
import { TurnView } from "./turn-view.js";
import { Turns } from "./turns.js";
import { TurnVersions, turnsOf } from "./versions.js";

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
    this.turnViews = []; // the turns on screen, in order
    this.announce = hooks.announce;
    this.turns = new Turns({
      announce: hooks.announce,
      changed: () => this.controlsChanged(),
      settled: () => {
        hooks.listChanged();
        refreshAccount();
      },
      retry: (turn) => this.retry(turn),
    });
  }

  // ---- What the turn views ask of the thread (their host)

  liveTurn() {
    return this.turns.in(this.conversation);
  }

  // A reply is being written here, or a new version is being asked for.
  busy() {
    return Boolean(this.liveTurn()) || this.turnViews.some((view) => view.requesting);
  }

  isLast(turnView) {
    return turnView === this.turnViews.at(-1);
  }

  chosenModel() {
    return this.model?.value || undefined;
  }

  controlsChanged() {
    for (const view of this.turnViews) view.renderControls();
    this.hooks.composerChanged();
  }

  // ----

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

  show(turnView) {
    this.turnViews.push(turnView);
    appendToTranscript(...turnView.items);
    this.controlsChanged();
  }

  clear() {
    this.turnViews = [];
    clearTranscript();
  }

  // `files`: uploaded attachments ({id, name, kind, url, …}) going with the message.
  async send(text, files = []) {
    if (this.busy()) return;
    const seq = this.routeSeq;
    const model = this.chosenModel();
    const view = new ReplyView(model || this.config.defaultModel);
    view.thinking();
    const versions = new TurnVersions([
      {
        user: { id: null, role: "user", content: text, attachments: files },
        reply: { id: null, role: "assistant", status: "pending", model },
      },
    ]);
    const turnView = new TurnView(this, versions, { live: { 0: view }, last: true });
    const turn = this.turns.add({ conversation: this.conversation, prompt: text, view });
    this.show(turnView);
    this.announce("Sent. The assistant is thinking.");
    let created;
    try {
      await Promise.all(this.turnViews.map((v) => v.selecting)); // the version to answer from
      created = await api("/api/chat?stream=defer", {
        method: "POST",
        body: {
          message: text,
          conversation: this.conversation,
          ...(model ? { model } : {}),
          ...(files.length ? { attachments: files.map((file) => file.id) } : {}),
        },
      });
    } catch (error) {
      this.turns.end(turn);
      this.refused(error, { turnView, view, text, files });
      return;
    }
    versions.versions[0].reply.id = created.message;
    versions.versions[0].user.id = created.user_message;
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
  refused(error, { turnView, view, text, files = [] }) {
    const failure = failureOf(error);
    const discard = () => {
      turnView.remove();
      this.turnViews = this.turnViews.filter((v) => v !== turnView);
      this.controlsChanged();
    };
    const retry = () => {
      discard();
      this.send(text, files);
    };
    const edit = () => {
      discard();
      this.hooks.editInComposer(text, files);
    };
    let actions = describeFailure(failure).retryable
      ? [
          ["Retry", retry],
          ["Edit", edit],
        ]
      : [["Edit message", edit]];
    if (error.type === "authentication_required") actions = [["Sign in", this.hooks.signIn]];
    if (error.type === "budget_exceeded") refreshAccount();
    this.announce(view.failure(failure, actions));
  }

  // A reply that failed while being written: on the last turn Retry asks for a new version;
  // otherwise (a stale view) its prompt is sent again as a new turn.
  retry(turn) {
    const turnView = this.turnViews.find((v) => v.has(turn.view));
    if (turnView && this.isLast(turnView)) {
      turn.view.clearNotices();
      turnView.regenerateReply();
    } else if (!this.busy()) {
      turn.view.clearNotices();
      this.send(turn.prompt);
    }
  }

  showNewChat() {
    this.conversation = null;
    this.routeSeq++;
    this.clear();
    this.setTitle("New chat");
    if (this.model) this.model.value = this.config.defaultModel;
    this.hooks.shown(null);
    this.controlsChanged();
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
    this.clear();
    this.setTitle(detail.title || "Untitled");
    if (this.model && this.config.models.includes(detail.model)) this.model.value = detail.model;
    const turns = turnsOf(detail.messages);
    turns.forEach((versions, index) => {
      this.show(new TurnView(this, versions, { last: index === turns.length - 1 }));
    });
    scrollToEnd();
    this.controlsChanged();
  }

  unavailable(error) {
    this.hooks.unavailable();
    this.clear();
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
}
