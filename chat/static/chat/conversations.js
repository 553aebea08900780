// The sidebar's conversations: the list and its pages, search, and each conversation's
// menu (rename, export, delete with Undo).
//
//   GET    /api/conversations?q=…&before=…        the list, newest first; search with snippets
//   PATCH  /api/conversations/<id> {"title"}       rename
//   DELETE /api/conversations/<id>                 delete, sent once its Undo has expired
//   GET    /api/conversations/<id>/export?format=md|json   a download (plain links)

import { api, describeFailure, failureOf } from "./api.js";
import { el, formatWhen } from "./format.js";
import {
  PendingDeletes,
  SEARCH_DELAY_MS,
  appendPage,
  debounce,
  groupByDay,
  listPath,
  markMatches,
  mergeFirstPage,
  attachmentName,
  searchWords,
  withLiveText,
} from "./listing.js";
import { Menu } from "./menu.js";
import { renameInPlace } from "./rename.js";
import { showToast } from "./toasts.js";

const EXPORTS = { "export-md": "md", "export-json": "json" };

// `text` with the searched words in <mark>: text nodes and elements, never markup.
function marked(text, words) {
  return markMatches(text, words).map(({ text: piece, match }) =>
    match ? el("mark", { text: piece }) : piece,
  );
}

export class ConversationList {
  // Elements: list (<ul>), empty (its "nothing here" line), search (<input type=search>),
  // more (Load more), menu (the shared menu), status (search result count, read out).
  // Hooks: titled(id, title), deleted(id), restored(id, wasOpen), announce(text),
  // liveText(id) (the text on screen of a reply being written there, else null),
  // titleTarget() and titleMenuButton() (the title above the open conversation, renamed in
  // place, and its menu button), focusAfter() (where focus goes when its element goes).
  constructor({ elements, hooks }) {
    this.els = elements;
    this.hooks = hooks;
    this.current = null;
    this.query = ""; // what the list shows: "" for all, else a search
    this.shown = []; // summaries, in the server's order
    this.next = null; // cursor for Load more
    this.seq = 0; // bumped by every load, so a slow old answer is dropped
    this.menu = new Menu(elements.menu);
    this.menuFor = null; // {id, title, from: "list" | "title"}
    this.renaming = null; // the id whose title is being typed in the list
    this.stale = false; // a render waited for that
    this.pending = new PendingDeletes({ commit: (id, entry) => this.commitDelete(id, entry) });

    const search = debounce(() => this.searchFor(elements.search.value), SEARCH_DELAY_MS);
    elements.search.addEventListener("input", search);
    elements.search.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && elements.search.value) {
        event.preventDefault(); // clears the search, not the page's Esc
        elements.search.value = "";
        search.cancel();
        this.searchFor("");
      } else if (event.key === "Enter") {
        search.cancel();
        this.searchFor(elements.search.value);
      }
    });
    elements.more.addEventListener("click", () => this.loadMore());
    elements.menu.addEventListener("click", (event) => this.chosen(event));
    // Leaving the page is the end of every Undo: the deletes go out now, outliving the page.
    window.addEventListener("pagehide", () => this.pending.flush());
  }

  // The first page of what the list shows, folded into what "Load more" had added.
  async refresh() {
    const seq = ++this.seq;
    const query = this.query;
    let page;
    try {
      page = await api(listPath({ q: query }));
    } catch {
      return; // the sidebar keeps what it had; the chat itself still works
    }
    if (seq !== this.seq || query !== this.query) return;
    ({ conversations: this.shown, next: this.next } = mergeFirstPage(
      { shown: this.shown, next: this.next },
      page,
    ));
    this.render();
    for (const c of page.conversations) this.hooks.titled(c.id, c.title);
  }

  async searchFor(text) {
    const query = text.trim();
    if (query === this.query) return;
    this.query = query;
    this.shown = [];
    this.next = null;
    await this.refresh();
    if (query === this.query && query) {
      const count = this.pending.visible(this.shown).length;
      this.hooks.announce(
        count ? `${count}${this.next ? "+" : ""} found.` : `Nothing matches “${query}”.`,
      );
    }
  }

  async loadMore() {
    if (!this.next) return;
    const seq = ++this.seq;
    const query = this.query;
    this.els.more.disabled = true;
    let page;
    try {
      page = await api(listPath({ q: query, before: this.next }));
    } catch (error) {
      this.els.more.disabled = false;
      this.hooks.announce(describeFailure(failureOf(error)).headline);
      return;
    }
    if (seq !== this.seq || query !== this.query) return;
    this.shown = appendPage(this.shown, page);
    this.next = page.next;
    this.render();
  }

  render() {
    // A list refresh (after any reply) waits while a title is being typed in the list.
    if (this.renaming) {
      this.stale = true;
      return;
    }
    const visible = this.pending.visible(this.shown);
    const focused = document.activeElement;
    const focusedId = focused?.closest?.("#conversation-list li")?.dataset.id;
    const focusedButton = focused?.classList?.contains("conversation-actions");
    const now = new Date();
    this.els.list.replaceChildren(
      ...groupByDay(visible, now).flatMap(({ group, conversations }) => [
        el("li", { class: "conversation-group" }, [
          el("h3", { class: "conversation-group-title", text: group }),
        ]),
        ...conversations.map((c) => this.item(c, now)),
      ]),
    );
    this.els.empty.hidden = visible.length > 0;
    this.els.empty.textContent = this.query
      ? `Nothing matches “${this.query}”.`
      : "No conversations yet.";
    this.els.more.hidden = !this.next;
    this.els.more.disabled = false;
    this.markCurrent(this.current);
    // The same things keep focus and the open menu, in the new items.
    const again = (id, button) =>
      this.itemFor(id)?.querySelector(button ? ".conversation-actions" : "a") ?? null;
    if (focusedId) again(focusedId, focusedButton)?.focus();
    if (this.menu.isOpen && this.menuFor?.from === "list") {
      const button = again(this.menuFor.id, true);
      if (button) this.menu.retarget(button);
      else this.menu.close({ focusButton: false });
    }
  }

  item(c, now = new Date()) {
    const title = c.title || "Untitled";
    const words = searchWords(this.query);
    const parts = [
      el("span", { class: "conversation-title" }, marked(title, words)),
      el("span", {
        class: "conversation-meta",
        text: `${formatWhen(c.updated_at, now)} · ${c.model}`,
      }),
    ];
    // The snippet is the server's plain text around the match: shown as text, never markup.
    if (this.query && c.snippet) {
      parts.push(el("span", { class: "conversation-snippet" }, marked(c.snippet, words)));
    }
    const actions = el("button", {
      type: "button",
      class: "conversation-actions",
      "aria-label": `Actions for “${title}”`,
      "aria-haspopup": "menu",
      "aria-expanded": "false",
      "aria-controls": this.els.menu.id,
      text: "⋯",
    });
    actions.addEventListener("click", () => this.openMenu(actions, c.id, title, "list"));
    return el("li", { class: "conversation", "data-id": c.id }, [
      el("a", { href: `#${c.id}`, "data-id": c.id }, parts),
      actions,
    ]);
  }

  itemFor(id) {
    return [...this.els.list.children].find((li) => li.dataset.id === id) ?? null;
  }

  markCurrent(id) {
    this.current = id;
    for (const link of this.els.list.querySelectorAll("a")) {
      if (link.dataset.id === id) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  // ---- The menu: one element, opened for whichever conversation's button was pressed.

  openMenu(button, id, title, from) {
    if (this.menu.button === button) {
      this.menu.close();
      return;
    }
    this.menuFor = { id, title, from };
    for (const link of this.els.menu.querySelectorAll("[data-action^=export]")) {
      const format = EXPORTS[link.dataset.action];
      link.href = `/api/conversations/${id}/export?format=${format}`;
    }
    this.els.menu.setAttribute("aria-label", `Actions for “${title}”`);
    this.menu.open(button);
  }

  chosen(event) {
    const item = event.target.closest('[role="menuitem"]');
    if (!item || !this.menuFor) return;
    const { id, title, from } = this.menuFor;
    const live = this.hooks.liveText(id);
    if (item.dataset.action === "rename") this.rename(id, title, from);
    else if (item.dataset.action === "delete") this.remove(id, title);
    else if (item.dataset.action === "export-md" && live) {
      event.preventDefault(); // the plain link would save "(no text)" for the live reply
      this.exportLive(item.href, live);
    }
  }

  // A Markdown export while a reply is written: the server's, with the text on screen.
  async exportLive(href, text) {
    let response;
    try {
      response = await fetch(href, { credentials: "same-origin" });
    } catch {
      response = null;
    }
    if (!response?.ok) {
      this.hooks.announce("The export failed. Try again when the reply has ended.");
      return;
    }
    const markdown = withLiveText(await response.text(), text);
    const url = URL.createObjectURL(new Blob([markdown], { type: "text/markdown" }));
    const name = attachmentName(response.headers.get("Content-Disposition"), "conversation.md");
    const link = el("a", { href: url, download: name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000); // once the download has surely begun
  }

  // ---- Rename, in the list or in the title above the open conversation.

  async rename(id, title, from = "list") {
    const li = this.itemFor(id);
    const inTitle = from === "title" || !li;
    const target = inTitle ? this.hooks.titleTarget() : li.querySelector("a");
    if (!inTitle) this.renaming = id;
    const saved = await renameInPlace({
      target,
      title,
      className: inTitle ? "rename-title" : "rename-item",
      returnFocus: inTitle ? this.hooks.titleMenuButton() : li.querySelector("a"),
      save: async (text) => {
        const renamed = await api(`/api/conversations/${id}`, {
          method: "PATCH",
          body: { title: text },
        });
        return renamed.title;
      },
    });
    const stale = this.stale;
    this.renaming = null;
    this.stale = false;
    if (saved === null) {
      if (stale) this.render();
      return;
    }
    for (const c of this.shown) if (c.id === id) c.title = saved;
    this.render();
    this.hooks.titled(id, saved);
    this.hooks.announce(`Renamed to “${saved}”.`);
  }

  // ---- Delete: hidden at once, sent when the Undo expires (or the page is left).

  remove(id, title) {
    const wasOpen = id === this.current;
    const index = this.pending.visible(this.shown).findIndex((c) => c.id === id);
    const toast = showToast(`Deleted “${title || "Untitled"}”.`, {
      actions: [["Undo", () => this.undoDelete(id)]],
      focus: true,
      focusAfter: () => this.focusNear(index),
    });
    this.pending.schedule(id, { title, wasOpen, toast });
    this.render();
    if (wasOpen) this.hooks.deleted(id);
  }

  undoDelete(id) {
    const entry = this.pending.undo(id);
    if (!entry) return;
    entry.toast.close();
    this.render();
    this.hooks.announce(`“${entry.title || "Untitled"}” is back.`);
    this.hooks.restored(id, entry.wasOpen);
    this.itemFor(id)?.querySelector("a")?.focus();
  }

  async commitDelete(id, { title, toast }) {
    toast.close();
    try {
      await api(`/api/conversations/${id}`, { method: "DELETE", keepalive: true });
    } catch (error) {
      if (error.status === 404) return; // gone already (another tab deleted it)
      const { headline, detail } = describeFailure(failureOf(error));
      const failed = showToast(`“${title || "Untitled"}” was not deleted. ${headline}. ${detail}`, {
        actions: [["Dismiss", () => failed.close()]],
      });
      this.render(); // it is still on the server, so back in the list
      return;
    }
    this.shown = this.shown.filter((c) => c.id !== id);
    this.render();
  }

  focusNear(index) {
    const links = this.els.list.querySelectorAll("a");
    return links[Math.min(index, links.length - 1)] ?? this.hooks.focusAfter();
  }
}
