// The sidebar's list of conversations.
//
//   GET /api/conversations   the caller's conversations, newest first

import { api } from "./api.js";
import { el, formatWhen } from "./format.js";

export class ConversationList {
  // list: the <ul>; empty: the "no conversations" line. Hooks: titled(id, title).
  constructor({ list, empty, hooks }) {
    this.list = list;
    this.empty = empty;
    this.hooks = hooks;
    this.current = null;
  }

  async refresh() {
    let conversations;
    try {
      ({ conversations } = await api("/api/conversations"));
    } catch {
      return; // the sidebar keeps what it had; the chat itself still works
    }
    this.empty.hidden = conversations.length > 0;
    this.list.replaceChildren(...conversations.map((c) => this.item(c)));
    this.markCurrent(this.current);
    for (const c of conversations) this.hooks.titled(c.id, c.title);
  }

  item(c) {
    return el("li", {}, [
      el("a", { href: `#${c.id}`, "data-id": c.id }, [
        el("span", { class: "conversation-title", text: c.title || "Untitled" }),
        el("span", {
          class: "conversation-meta",
          text: `${formatWhen(c.updated_at)} · ${c.model}`,
        }),
      ]),
    ]);
  }

  markCurrent(id) {
    this.current = id;
    for (const link of this.list.querySelectorAll("a")) {
      if (link.dataset.id === id) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }
}
