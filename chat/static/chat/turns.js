// Replies being written: one EventSource per turn, Stop, and reconnecting.
//
//   new EventSource(stream_url)      start, then reasoning, tool_call, tool_result and delta
//                                    events, then end | error (closed on both; on a
//                                    network error the browser reconnects with Last-Event-ID
//                                    and the reply goes on where it was)
//   POST /api/messages/<id>/cancel   Stop
//
// Opening a stream URL again follows the same turn and never calls the model a second time,
// so reconnecting is always safe; re-posting a message is not, and this module never does.

import { api, replyFailure } from "./api.js";

const STOP_GRACE_MS = 3000;

export class Turns {
  // announce(text): for screen readers; changed(): the set of live turns changed;
  // settled(turn): a turn ended (spend and the list may have moved); retry(turn): the
  // person asked to send a failed turn's prompt again.
  constructor({ announce, changed, settled, retry }) {
    this.hooks = { announce, changed, settled, retry };
    this.live = new Map(); // turns being written, by a local key
    this.lost = new Set(); // turns whose stream the browser gave up on
    this.seq = 0;
    // A phone that brings the tab back may have dropped its connections meanwhile;
    // reconnect at once rather than after the browser's backoff.
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.resumeDropped();
    });
  }

  // The turn being written in `conversation` (null: a new chat's first turn).
  in(conversation) {
    for (const turn of this.live.values()) {
      if (turn.conversation === conversation) return turn;
    }
    return null;
  }

  forMessage(messageId) {
    for (const turn of this.live.values()) {
      if (turn.messageId === messageId) return turn;
    }
    return null;
  }

  // A turn before its stream exists: it counts as live at once, so the composer shows Stop.
  add({ conversation, prompt, view, messageId = null, following = false }) {
    const turn = { key: ++this.seq, conversation, prompt, view, messageId, following };
    this.live.set(turn.key, turn);
    this.hooks.changed();
    return turn;
  }

  end(turn) {
    turn.source?.close();
    clearTimeout(turn.stopTimer);
    this.live.delete(turn.key);
    this.hooks.changed();
  }

  // The server stored the turn: follow its stream (or cancel it, if Stop came first).
  async started(turn, { message, stream_url: streamUrl }) {
    turn.messageId = message;
    if (turn.stopping) await this.cancel(turn);
    this.follow(turn, streamUrl);
  }

  // `resume`: reopened by the page (Reconnect, a tab brought back), so only the events after
  // the last one shown are asked for; otherwise the whole reply so far, then live events.
  follow(turn, streamUrl, { resume = false } = {}) {
    const { view } = turn;
    const { announce } = this.hooks;
    turn.streamUrl = streamUrl;
    turn.done = false;
    this.lost.delete(turn);
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
      view.parts.reset();
      view.model = data.model;
    });
    source.addEventListener("reasoning", (event) => {
      seen(event);
      const data = JSON.parse(event.data);
      view.parts.reasoning(data.text, data.duration_ms);
    });
    source.addEventListener("tool_call", (event) => {
      seen(event);
      const data = JSON.parse(event.data);
      view.parts.toolCall(data);
      announce(`Calling the tool ${data.name}.`);
    });
    source.addEventListener("web_search", (event) => {
      seen(event);
      view.parts.webSearch(JSON.parse(event.data));
    });
    source.addEventListener("citation", (event) => {
      seen(event);
      view.parts.citation(JSON.parse(event.data));
    });
    source.addEventListener("tool_result", (event) => {
      seen(event);
      view.parts.toolResult(JSON.parse(event.data));
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
      view.text = turn.text;
      view.finish(data);
      this.end(turn); // after finish: what listens for the change sees the finished reply
      // Said once, whole, when it is done: the transcript itself is not a live region, so
      // a screen reader is not read each piece of a reply as it is redrawn.
      const spoken = view.spokenText();
      if (data.status === "cancelled") announce("Reply stopped.");
      else announce(spoken ? `Reply finished. ${spoken}` : "Reply finished.");
      this.hooks.settled(turn);
    });
    // The stream's own `error` event (a MessageEvent with data) and EventSource's connection
    // error share the name; only the first carries data.
    source.addEventListener("error", (event) => {
      if (event instanceof MessageEvent && event.data) {
        turn.done = true;
        view.text = turn.text;
        const data = JSON.parse(event.data);
        const failure = replyFailure(data.error, data.retry_after);
        announce(view.failure(failure, [["Retry", () => this.hooks.retry(turn)]]));
        view.showDetails(data);
        this.end(turn);
        this.hooks.settled(turn);
        return;
      }
      if (turn.source !== source) return; // an old connection, already replaced
      const retrying = source.readyState === EventSource.CONNECTING;
      if (!retrying) {
        // The browser gave up (the server refused the stream): the person may try again.
        this.end(turn);
        this.lost.add(turn);
      }
      if (turn.reconnecting) return;
      turn.reconnecting = retrying;
      view.setState("disconnected");
      view.paint();
      const lost = turn.text ? "What arrived is shown above." : "No reply has arrived yet.";
      const next = retrying
        ? "Reconnecting; the reply goes on meanwhile."
        : "Reconnect to follow it.";
      view.notice(`${lost} ${next} It is never sent again.`, {
        headline: "Connection lost.",
        error: true,
        actions: [["Reconnect", () => this.reconnect(turn)]],
      });
      announce("Connection lost.");
    });
  }

  // Follow a turn again from the last event shown (never re-running it).
  reconnect(turn) {
    if (turn.done) return;
    turn.source?.close();
    turn.following = true;
    turn.reconnecting = false;
    this.live.set(turn.key, turn);
    this.hooks.changed();
    this.follow(turn, turn.streamUrl, { resume: true });
  }

  resumeDropped() {
    for (const turn of [...this.live.values(), ...this.lost]) {
      if (turn.done || !turn.streamUrl) continue;
      if (!turn.source || turn.source.readyState !== EventSource.OPEN) this.reconnect(turn);
    }
  }

  async cancel(turn) {
    try {
      await api(`/api/messages/${turn.messageId}/cancel`, { method: "POST", body: {} });
    } catch {
      // The turn may have just finished; its `end` event (or stop's fallback) settles it.
    }
  }

  async stop(turn) {
    if (!turn || turn.stopping) return;
    turn.stopping = true;
    this.hooks.changed();
    this.hooks.announce("Stopping…");
    if (turn.messageId == null) return; // started() cancels as soon as the turn exists
    await this.cancel(turn);
    // The server answers with `end` (status cancelled, partial text, usage). If that does
    // not arrive soon, show it stopped anyway: the cancel request has reached the server.
    turn.stopTimer = setTimeout(() => {
      if (turn.done) return;
      turn.done = true;
      turn.view.finish({ status: "cancelled" });
      this.end(turn);
      this.hooks.announce("Reply stopped.");
    }, STOP_GRACE_MS);
  }
}
