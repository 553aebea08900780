// The views of one turn's two messages: what the person wrote (UserView) and the reply
// (ReplyView: thinking, streaming, finished, failed). Views only draw; turns.js feeds a
// reply its events and thread.js places the views in the transcript.

import { describeFailure } from "./api.js";
import { fileLinks } from "./attachments.js";
import { addCodeCopyButtons, copyButton } from "./copy.js";
import { el, formatCost, formatMs } from "./format.js";
import { renderMarkdown } from "./markdown.js";
import { PartsView } from "./parts.js";
import { keepingBottom } from "./transcript.js";

// `nodes` as parent's children, leaving in place those already there: taking a focused
// button out and putting it back would lose its focus.
export function setChildren(parent, nodes) {
  for (const child of [...parent.children]) if (!nodes.includes(child)) child.remove();
  nodes.forEach((node, index) => {
    const there = parent.children[index] ?? null;
    if (there !== node) parent.insertBefore(node, there);
  });
}

export class UserView {
  // files: the message's attachments, as the API describes them.
  constructor(text, files = []) {
    this.bubble = el("div", { class: "bubble", text });
    this.files = el("div", { class: "message-files" });
    this.actions = el("div", { class: "message-actions" });
    this.item = el("li", { class: "message message-user", "data-role": "user" }, [
      el("span", { class: "visually-hidden", text: "You:" }),
      this.files,
      this.bubble,
      this.actions,
    ]);
    this.text = text;
    this.setFiles(files);
  }

  setText(text) {
    this.text = text;
    this.bubble.textContent = text;
  }

  setFiles(files = []) {
    this.files.replaceChildren(...fileLinks(files));
    this.files.hidden = files.length === 0;
  }
}

const LIVE = new Set(["thinking", "streaming"]);
const FINISHED = new Set(["completed", "cancelled", "incomplete", "failed"]);

export class ReplyView {
  constructor(model) {
    this.markdown = el("div", { class: "markdown", "aria-busy": "false" });
    this.details = el("p", { class: "details" });
    this.switch = el("div", { class: "reply-versions" }); // ‹ 1/2 ›, first: it never moves
    this.actions = el("div", { class: "message-actions" });
    this.notices = el("div", { class: "notices" });
    this.parts = new PartsView(); // thinking and tool cards, above the answer
    this.item = el("li", { class: "message message-assistant", "data-role": "assistant" }, [
      el("span", { class: "role", text: "Assistant" }),
      el("div", { class: "bubble" }, [this.parts.box, this.markdown, this.parts.sources]),
      el("div", { class: "reply-foot" }, [this.switch, this.details, this.actions]),
      this.notices,
    ]);
    this.model = model;
    this.text = "";
    this.frame = 0;
    this.copy = copyButton(() => this.text, { what: "reply as markdown" });
  }

  get state() {
    return this.item.dataset.state;
  }

  // Done being written, whichever way it ended (not while reconnecting).
  get finished() {
    return FINISHED.has(this.state);
  }

  setState(state) {
    this.item.dataset.state = state;
    // Screen readers hold back a busy region and read it once it is done.
    this.markdown.setAttribute("aria-busy", String(LIVE.has(state)));
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
    this.parts.fold();
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
    keepingBottom(() => {
      if (this.text) renderMarkdown(this.markdown, this.text);
      else this.markdown.replaceChildren();
      // Code is copied once it is all there, not while the model is still writing it.
      if (!LIVE.has(this.state)) addCodeCopyButtons(this.markdown);
    });
  }

  // The reply's words as a screen reader should hear them: the rendered text, without
  // markdown marks or the buttons' names.
  spokenText() {
    const copy = this.markdown.cloneNode(true);
    for (const button of copy.querySelectorAll("button")) button.remove();
    return copy.textContent.replace(/\s+/g, " ").trim();
  }

  finish(data, text = this.text) {
    this.parts.fold();
    this.text = text;
    this.setState(data.status || "completed");
    this.paint();
    this.showDetails(data);
    if (data.status === "cancelled") {
      this.notice(this.text ? "Stopped. The text so far was kept." : "Stopped before any text.");
    } else if (data.status === "incomplete" && data.finish_reason === "budget_exceeded") {
      this.notice("Stopped after a tool round: your budget for this period is used up.");
    } else if (data.status === "incomplete") {
      const reason = data.finish_reason ? ` (${data.finish_reason})` : "";
      this.notice(`The reply was cut short${reason}.`);
    }
  }

  showDetails(data) {
    const parts = [];
    const model = data.model || this.model;
    if (model) parts.push(["Model", model]);
    const usage = data.usage;
    if (usage) {
      const approx = data.usage_estimated ? "≈" : "";
      const thought = usage.reasoning_tokens ? ` (${approx}${usage.reasoning_tokens} thinking)` : "";
      parts.push([
        data.usage_estimated ? "Estimated tokens" : "Tokens",
        `${approx}${usage.input_tokens} in · ${approx}${usage.output_tokens} out${thought}`,
      ]);
    }
    if (data.cost != null) parts.push(["Cost", formatCost(Number(data.cost))]);
    else if (usage) parts.push(["Cost", "no price set"]);
    if (data.ttft_ms != null)
      parts.push(["Time to first token", `first token ${formatMs(data.ttft_ms)}`]);
    if (data.duration_ms != null) parts.push(["Duration", `${formatMs(data.duration_ms)} total`]);
    keepingBottom(() => {
      this.details.replaceChildren(
        ...parts.map(([label, value]) =>
          el("span", { title: label }, [
            el("span", { class: "visually-hidden", text: `${label}: ` }),
            value,
          ]),
        ),
      );
      this.renderActions();
    });
  }

  // The turn's controls (turn-view.js decides): its version switch, at the start of the
  // foot, and its buttons (Regenerate), followed by Copy once the reply is done.
  setTurnActions(nodes, versionSwitch = null) {
    this.turnActions = nodes;
    setChildren(this.switch, versionSwitch ? [versionSwitch] : []);
    this.renderActions();
  }

  renderActions() {
    const buttons = [...(this.turnActions ?? [])];
    if (this.text && !LIVE.has(this.state)) buttons.push(this.copy);
    setChildren(this.actions, buttons);
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
    keepingBottom(() => {
      this.notices.replaceChildren(
        el(
          "div",
          { class: error ? "notice notice-error" : "notice", role: error ? "alert" : "note" },
          children,
        ),
      );
    });
  }

  clearNotices() {
    this.notices.replaceChildren();
  }
}
