// The sidebar list's rules, without the DOM (tested with `node --test`): which page to ask
// for, waiting for the person to stop typing, folding a fresh first page into a longer
// list, and deletes that wait for their Undo to expire.
//
//   GET /api/conversations?q=words&before=<cursor>   {conversations: [...], next: cursor|null}

export const UNDO_MS = 6000;
export const SEARCH_DELAY_MS = 250;

export function listPath({ q = "", before = null } = {}) {
  const params = new URLSearchParams();
  const words = q.trim();
  if (words) params.set("q", words);
  if (before) params.set("before", before);
  const query = params.toString();
  return query ? `/api/conversations?${query}` : "/api/conversations";
}

// `fn` runs once, `ms` after the last call; cancel() drops a waiting call.
export function debounce(fn, ms, timers = globalThis) {
  let timer = null;
  const debounced = (...args) => {
    timers.clearTimeout(timer);
    timer = timers.setTimeout(() => {
      timer = null;
      fn(...args);
    }, ms);
  };
  debounced.cancel = () => {
    timers.clearTimeout(timer);
    timer = null;
  };
  return debounced;
}

// The server's order: newest first, ties by id, largest first.
function listedAfter(a, b) {
  const at = Date.parse(a.updated_at);
  const bt = Date.parse(b.updated_at);
  return at < bt || (at === bt && a.id < b.id);
}

// A fresh first page in place of the first page of `shown`, keeping the older conversations
// "Load more" had brought in (and the cursor after them), so refreshing after a reply does
// not fold the list back up. `next` is the cursor `shown` had.
export function mergeFirstPage({ shown, next }, page) {
  const fresh = page.conversations;
  if (!page.next || fresh.length === 0) return { conversations: fresh, next: page.next };
  const ids = new Set(fresh.map((c) => c.id));
  const last = fresh[fresh.length - 1];
  const older = shown.filter((c) => !ids.has(c.id) && listedAfter(c, last));
  if (older.length === 0) return { conversations: fresh, next: page.next };
  return { conversations: [...fresh, ...older], next };
}

// A following page after `shown`, without any conversation shown already (one that moved
// between the two requests would otherwise appear twice).
export function appendPage(shown, page) {
  const ids = new Set(shown.map((c) => c.id));
  return [...shown, ...page.conversations.filter((c) => !ids.has(c.id))];
}

// Deletes that happen only when their Undo expires, or when flush() is called as the page
// is left. commit(id, item) sends the delete; undo(id) returns the item and forgets it.
export class PendingDeletes {
  constructor({ commit, delay = UNDO_MS, timers = globalThis }) {
    this.commit = commit;
    this.delay = delay;
    this.timers = timers;
    this.waiting = new Map(); // id → {item, timer}
  }

  has(id) {
    return this.waiting.has(id);
  }

  schedule(id, item) {
    this.undo(id);
    const timer = this.timers.setTimeout(() => this.settle(id), this.delay);
    this.waiting.set(id, { item, timer });
  }

  undo(id) {
    const entry = this.waiting.get(id);
    if (!entry) return null;
    this.timers.clearTimeout(entry.timer);
    this.waiting.delete(id);
    return entry.item;
  }

  settle(id) {
    const item = this.undo(id);
    if (item !== null) this.commit(id, item);
  }

  flush() {
    for (const id of [...this.waiting.keys()]) this.settle(id);
  }

  // What the list should show: everything but what is waiting to be deleted.
  visible(conversations) {
    return conversations.filter((c) => !this.waiting.has(c.id));
  }
}

// Which part of the list a conversation goes under, by the day it was last active (local
// time): "Today", "Yesterday", "Previous 7 days" or "Earlier".
export function dayGroup(iso, now = new Date()) {
  const midnight = (d) => new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
  const days = Math.round((midnight(now) - midnight(new Date(iso))) / 86_400_000);
  if (days <= 0) return "Today";
  if (days === 1) return "Yesterday";
  if (days < 7) return "Previous 7 days";
  return "Earlier";
}

// The list in runs of one day group each, in the list's own order:
// [{group, conversations: [...]}, ...].
export function groupByDay(conversations, now = new Date()) {
  const runs = [];
  for (const c of conversations) {
    const group = dayGroup(c.updated_at, now);
    if (runs.at(-1)?.group !== group) runs.push({ group, conversations: [] });
    runs.at(-1).conversations.push(c);
  }
  return runs;
}

// `text` cut into [{text, match}] pieces, match true where a searched word begins (the
// search matches words by prefix, ignoring case). The page shows the pieces as text nodes
// and <mark>s: the text never becomes markup.
export function markMatches(text, words) {
  const wanted = words.filter(Boolean).map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  if (!wanted.length) return [{ text, match: false }];
  const pattern = new RegExp(`(?<![\\p{L}\\p{N}])(?:${wanted.join("|")})`, "giu");
  const pieces = [];
  let from = 0;
  for (const found of text.matchAll(pattern)) {
    if (found.index > from) pieces.push({ text: text.slice(from, found.index), match: false });
    pieces.push({ text: found[0], match: true });
    from = found.index + found[0].length;
  }
  if (from < text.length) pieces.push({ text: text.slice(from), match: false });
  return pieces;
}

// The words a search looks for, as the server splits them (letters and digits).
export function searchWords(query) {
  return query.match(/[\p{L}\p{N}_]+/gu) ?? [];
}

const NO_TEXT = "*(no text)*";

// The server's Markdown export of a conversation whose last reply is still being written,
// with the text the page has on screen instead of what the server had: nothing, or a
// checkpoint of the text from a second or two ago (a streaming turn saves one now and
// then, so a crash loses little).
export function withLiveText(markdown, text) {
  const heading = markdown.lastIndexOf("## Assistant (");
  if (heading < 0 || !text) return markdown;
  const headingEnd = markdown.indexOf("\n", heading);
  if (headingEnd < 0) return markdown;
  const start = headingEnd + 2; // after the blank line below the heading
  const rest = markdown.slice(start);
  const attached = rest.indexOf("\n\n*Attached: ");
  const body = attached < 0 ? rest.replace(/\n+$/, "") : rest.slice(0, attached);
  const streaming = /, (streaming|pending)\)$/.test(markdown.slice(heading, headingEnd));
  if (!streaming && body !== NO_TEXT) return markdown;
  const note = "\n\n*(still being written when exported)*";
  return markdown.slice(0, start) + text + note + rest.slice(body.length);
}

// The file name a Content-Disposition header gives, or `fallback`.
export function attachmentName(disposition, fallback) {
  return /filename="([^"]+)"/.exec(disposition ?? "")?.[1] ?? fallback;
}
