// One turn on screen: what the person wrote and the reply, in each of the turn's versions,
// with what acts on it: ‹ 1/2 › to switch versions, Regenerate, Edit.
//
//   POST /api/messages/<reply>/regenerate  {} or {"model"}   new version, same message
//   POST /api/messages/<user>/edit         {"message"}       new version, new message
//        → 201 {conversation, message, user_message, stream_url} (followed like any turn)
//   POST /api/messages/<id>/select         that version of the last turn becomes current
//
// Only the last turn changes: Regenerate and Edit act on its current version, and switching
// its versions chooses the one the next message is answered from. An earlier turn's other
// versions can be looked at, not chosen (later turns were answered from the current one).

import { api, describeFailure, failureOf, replyFailure } from "./api.js";
import { el } from "./format.js";
import { ReplyView, UserView, setChildren } from "./replies.js";

const UNFINISHED = new Set(["pending", "streaming"]);

export class TurnView {
  // host: the thread showing this turn (turns, conversation, config, chosenModel(),
  // isLast(view), busy(), announce(text), controlsChanged()). versions: a TurnVersions.
  // live: {index: ReplyView} for replies already on screen (a message just sent).
  constructor(host, versions, { live = {}, last = false } = {}) {
    this.host = host;
    this.versions = versions;
    this.views = new Map(Object.entries(live).map(([k, view]) => [Number(k), view]));
    this.offerRetry = last;
    this.requesting = false; // a regenerate or an edit is on its way
    this.selecting = null; // a select on its way (a promise)
    this.editing = null;
    const shown = versions.shownVersion;
    this.user = shown.user ? new UserView(shown.user.content, shown.user.attachments) : null;
    const hasReply = shown.reply !== null || this.views.has(versions.shown);
    this.reply = hasReply ? this.replyView(versions.shown) : null;
    this.buildControls();
    this.renderControls();
  }

  get items() {
    return [this.user?.item, this.reply?.item].filter(Boolean);
  }

  remove() {
    for (const item of this.items) item.remove();
  }

  has(view) {
    return [...this.views.values()].includes(view);
  }

  buildControls() {
    const step = (delta, label, text) =>
      el("button", {
        type: "button",
        class: "action version-step",
        "aria-label": label,
        text,
        onclick: () => this.step(delta),
      });
    this.previous = step(-1, "Previous version", "‹");
    this.next = step(1, "Next version", "›");
    this.position = el("span", { class: "version-label" });
    this.switcher = el("div", { class: "versions", role: "group", "aria-label": "Versions" }, [
      this.previous,
      this.position,
      this.next,
    ]);
    this.regenerate = el("button", {
      type: "button",
      class: "action",
      text: "Regenerate",
      onclick: () => this.regenerateReply(),
    });
    this.edit = el("button", {
      type: "button",
      class: "action",
      text: "Edit",
      onclick: () => this.startEdit(),
    });
  }

  // What may be done now: the last turn's current version changes, if nothing is running.
  renderControls() {
    const { versions } = this;
    const last = this.host.isLast(this);
    const busy = this.host.busy();
    const changeable = last && !busy && versions.isShowingCurrent() && !this.editing;
    const shown = versions.shownVersion;
    const replyDone = shown.reply?.id != null && Boolean(this.reply?.finished);
    const reply = [];
    let versionSwitch = null;
    if (versions.count > 1) {
      this.position.replaceChildren(
        el("span", { "aria-hidden": "true", text: versions.label }),
        el("span", { class: "visually-hidden", text: versions.describe }),
      );
      // The last turn's switch chooses the context, which cannot change under a live reply.
      const frozen = this.requesting || (last && busy);
      this.previous.disabled = frozen || !versions.canStep(-1);
      this.next.disabled = frozen || !versions.canStep(1);
      versionSwitch = this.switcher;
    }
    if (changeable && replyDone) reply.push(this.regenerate);
    this.reply?.setTurnActions(reply, versionSwitch);
    if (this.user) setChildren(this.user.actions, changeable && shown.user ? [this.edit] : []);
  }

  // The reply view of version `index`, made from its stored message the first time.
  replyView(index) {
    if (this.views.has(index)) return this.views.get(index);
    const message = this.versions.versions[index].reply;
    const live = this.host.turns.forMessage(message.id);
    const view = live ? live.view : this.storedView(message);
    this.views.set(index, view);
    return view;
  }

  storedView(message) {
    const view = new ReplyView(message.model);
    view.text = message.content;
    if (!UNFINISHED.has(message.status)) view.parts.show(message.parts);
    if (UNFINISHED.has(message.status)) {
      // Reopening the stream never re-runs the turn: a pending one is claimed once, a
      // streaming one (the reply was being written when the page went away) is replayed or
      // waited for from the stored row.
      const turn = this.host.turns.add({
        conversation: this.host.conversation,
        prompt: this.versions.shownVersion.user?.content ?? "",
        view,
        messageId: message.id,
        following: message.status === "streaming",
      });
      this.host.turns.follow(turn, message.stream_url || `/api/messages/${message.id}/stream`);
      return view;
    }
    if (message.status === "failed") {
      const failure = replyFailure(message.error);
      view.failure(failure, this.offerRetry ? [["Retry", () => this.retry()]] : []);
      view.showDetails(message);
      return view;
    }
    view.finish(message);
    return view;
  }

  // Show versions.shown: its message text and its reply, in place.
  showShown() {
    const version = this.versions.shownVersion;
    if (this.user && version.user) {
      this.user.setText(version.user.content);
      this.user.setFiles(version.user.attachments);
    }
    const view = this.replyView(this.versions.shown);
    if (view !== this.reply) {
      this.reply.item.replaceWith(view.item);
      this.reply = view;
    }
    this.renderControls();
  }

  step(delta) {
    const before = this.versions.shown;
    // One choice at a time (the buttons stay enabled, so focus stays on them).
    if (this.selecting || !this.versions.step(delta)) return;
    this.showShown();
    this.host.announce(this.versions.describe);
    this.focusSwitcher(delta);
    if (!this.host.isLast(this)) return; // an earlier turn: only looked at
    // A message sent meanwhile waits for this (thread.send), so it is answered from the
    // version on screen.
    this.selecting = this.choose(this.versions.shownVersion, before);
    this.host.controlsChanged();
  }

  async choose(version, before) {
    try {
      await api(`/api/messages/${version.reply?.id ?? version.user.id}/select`, {
        method: "POST",
        body: {},
      });
      this.versions.chooseShown();
    } catch (error) {
      this.versions.shown = before;
      this.showShown();
      this.refusedNotice(error);
    } finally {
      this.selecting = null;
      this.host.controlsChanged();
    }
  }

  // After a click the button may be disabled (the first or last version): keep focus in
  // the switch rather than losing it to the page.
  focusSwitcher(delta) {
    const button = delta < 0 ? this.previous : this.next;
    const other = delta < 0 ? this.next : this.previous;
    if (!this.switcher.contains(document.activeElement) && document.activeElement !== document.body)
      return;
    (button.disabled ? other : button).focus();
  }

  refusedNotice(error) {
    const { headline, detail } = describeFailure(failureOf(error));
    this.reply.notice(detail, { headline, error: true });
    this.host.announce(headline);
  }

  // A failed reply's Retry: on the last turn a new version, never the message sent twice.
  retry() {
    if (this.host.isLast(this)) this.regenerateReply();
  }

  async regenerateReply() {
    await this.selecting; // the version chosen a moment ago is the one regenerated
    const version = this.versions.versions[this.versions.current];
    if (version.reply?.id == null || this.host.busy()) return;
    const model = this.host.chosenModel();
    let created;
    try {
      created = await this.requestVersion(
        `/api/messages/${version.reply.id}/regenerate`,
        model ? { model } : {},
      );
    } catch (error) {
      this.refusedNotice(error);
      return;
    }
    this.follow(created, { content: version.user?.content ?? "", model });
    this.host.announce("Regenerating. The assistant is thinking.");
  }

  // POST for a new version of this turn (regenerate, edit): the turn's controls wait
  // while it is on its way.
  async requestVersion(path, body) {
    this.requesting = true;
    this.host.controlsChanged();
    try {
      return await api(path, { method: "POST", body });
    } finally {
      this.requesting = false;
      this.host.controlsChanged();
    }
  }

  // A new version the server stored: shown at once, its reply followed to its end.
  follow(created, { content, model }) {
    const view = new ReplyView(model || this.host.config.defaultModel);
    view.thinking();
    // Regenerate and edit keep the message's files.
    const attachments = this.versions.shownVersion.user?.attachments ?? [];
    const index = this.versions.add({
      user: { id: created.user_message, role: "user", content, attachments },
      reply: { id: created.message, role: "assistant", status: "pending", model },
    });
    this.views.set(index, view);
    this.showShown();
    const turn = this.host.turns.add({ conversation: created.conversation, prompt: content, view });
    this.host.turns.started(turn, created);
  }

  // ---- Edit: the last message in a text box where it was; Enter or Save sends it as a
  // new version, Esc or Cancel puts it back.

  startEdit() {
    if (this.editing || this.host.busy()) return;
    const text = this.versions.shownVersion.user.content;
    const box = el("textarea", { class: "edit-input", "aria-label": "Edit your message" });
    box.value = text;
    const error = el("p", { class: "edit-error", role: "alert", hidden: true });
    const save = el("button", { type: "submit", class: "button button-primary", text: "Save" });
    const cancel = el("button", { type: "button", class: "button", text: "Cancel" });
    const form = el("form", { class: "edit-form", novalidate: true }, [
      box,
      error,
      el("div", { class: "edit-buttons" }, [cancel, save]),
    ]);
    const autosize = () => {
      box.style.height = "auto";
      box.style.height = `${box.scrollHeight + 2}px`;
    };
    this.editing = { form, box, error, save };
    this.user.bubble.hidden = true;
    this.user.bubble.after(form);
    this.renderControls();
    autosize();
    box.focus();
    box.setSelectionRange(text.length, text.length);
    box.addEventListener("input", () => {
      autosize();
      error.hidden = true;
    });
    box.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault(); // the edit's own Esc, not the page's
        this.endEdit();
      } else if (event.key === "Enter" && !event.shiftKey && !event.altKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    cancel.addEventListener("click", () => this.endEdit());
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.saveEdit(box.value);
    });
  }

  endEdit() {
    if (!this.editing) return;
    const hadFocus = this.editing.form.contains(document.activeElement);
    this.editing.form.remove();
    this.editing = null;
    this.user.bubble.hidden = false;
    this.renderControls();
    if (hadFocus) (this.edit.isConnected ? this.edit : this.user.bubble).focus?.();
  }

  editFailed(message) {
    const { error, box } = this.editing;
    error.textContent = message;
    error.hidden = false;
    box.focus();
  }

  async saveEdit(text) {
    await this.selecting;
    if (!this.editing) return;
    const { save } = this.editing;
    const version = this.versions.versions[this.versions.current];
    if (!text.trim()) return this.editFailed("A message needs some text.");
    if (text === version.user.content) return this.endEdit(); // nothing changed
    if (this.requesting || this.host.busy()) return;
    save.disabled = true;
    let created;
    try {
      created = await this.requestVersion(`/api/messages/${version.user.id}/edit`, {
        message: text,
      });
    } catch (error) {
      save.disabled = false;
      const { headline, detail } = describeFailure(failureOf(error));
      this.editFailed(`${headline}. ${detail}`.trim());
      return;
    }
    this.endEdit();
    this.follow(created, { content: text, model: this.host.chosenModel() });
    this.host.announce("Edited. The assistant is thinking.");
  }
}
