// What a reply did besides its text: the model's thinking and the tools it called, shown
// above the answer. Thinking streams live in an open section that folds, saying how long it
// took, once the answer (or a tool call) starts; each tool call is a card with its
// arguments, then its result or error; a hosted web search says what it searches, and the
// sources the answer cites are numbered under it. Everything is set as text, never as
// HTML, and only http(s) sources become links.

import { el, formatMs } from "./format.js";
import { keepingBottom } from "./transcript.js";

export class PartsView {
  constructor() {
    this.box = el("div", { class: "reply-parts" });
    this.sources = el("ol", { class: "sources", "aria-label": "Sources" });
    this.reset();
  }

  reset() {
    this.box.replaceChildren();
    this.sources.replaceChildren();
    this.cited = new Set(); // source URLs listed
    this.searches = new Map(); // web search cards by item id
    this.thought = null; // the open thinking section, while the model thinks
    this.cards = new Map(); // tool cards by call id
  }

  // A piece of thinking: into the open section, or a new one.
  reasoning(text, durationMs = null) {
    keepingBottom(() => {
      if (!this.thought) {
        const body = el("div", { class: "thinking-text" });
        const label = el("span", { text: "Thinking…" });
        const section = el("details", { class: "thinking-section", open: true }, [
          el("summary", {}, [label]),
          body,
        ]);
        this.thought = { section, body, label, started: performance.now() };
        this.box.append(section);
      }
      this.thought.body.textContent += text;
      if (durationMs != null) this.fold(durationMs);
    });
  }

  // The thinking is over: fold it and say how long it took.
  fold(durationMs = null) {
    const thought = this.thought;
    if (!thought) return;
    this.thought = null;
    const took = durationMs ?? performance.now() - thought.started;
    thought.label.textContent = `Thought for ${formatMs(Math.round(took))}`;
    thought.section.open = false;
  }

  toolCall({ id, name, arguments: args }) {
    this.fold();
    keepingBottom(() => {
      const status = el("span", { class: "tool-status", text: "running…" });
      const card = el("details", { class: "tool-card", "data-state": "running" }, [
        el("summary", {}, [el("span", { class: "tool-name", text: `🔧 ${name}` }), " ", status]),
        el("div", { class: "tool-label", text: "Arguments" }),
        el("pre", { class: "tool-arguments", text: args || "{}" }),
      ]);
      this.cards.set(id, { card, status });
      this.box.append(card);
    });
  }

  toolResult({ id, name, output, error, duration_ms: durationMs }) {
    if (!this.cards.has(id)) this.toolCall({ id, name, arguments: "" });
    const { card, status } = this.cards.get(id);
    keepingBottom(() => {
      card.dataset.state = error ? "failed" : "done";
      const took = durationMs != null ? ` in ${formatMs(durationMs)}` : "";
      status.textContent = error ? `failed${took}` : `done${took}`;
      card.append(
        el("div", { class: "tool-label", text: error ? "Error" : "Result" }),
        el("pre", { class: "tool-output", text: output ?? "" }),
      );
    });
  }

  webSearch({ id, status, query }) {
    this.fold();
    keepingBottom(() => {
      let card = this.searches.get(id);
      if (!card) {
        card = el("div", { class: "web-search" });
        this.searches.set(id, card);
        this.box.append(card);
      }
      card.dataset.state = status;
      card.textContent =
        status === "completed"
          ? `🔎 Searched the web${query ? `: ${query}` : ""}`
          : `🔎 Searching${query ? `: ${query}` : " the web…"}`;
    });
  }

  citation({ url, title }) {
    if (!url || this.cited.has(url)) return;
    this.cited.add(url);
    const label = title || url;
    const web = /^https?:\/\//i.test(url);
    keepingBottom(() => {
      this.sources.append(
        el("li", {}, [
          web
            ? el("a", { href: url, target: "_blank", rel: "noopener noreferrer", text: label })
            : el("span", { text: label }),
        ]),
      );
    });
  }

  // A stored reply's parts (the message JSON), drawn as they streamed.
  show(parts = []) {
    this.reset();
    for (const part of parts) {
      if (part.type === "reasoning" && part.text) this.reasoning(part.text, part.duration_ms ?? 0);
      else if (part.type === "tool_call") this.toolCall(part);
      else if (part.type === "tool_result") this.toolResult(part);
      else if (part.type === "web_search") this.webSearch(part);
      else if (part.type === "citation") this.citation(part);
    }
    this.fold();
  }
}
