// chat/static/chat/listing.js: the sidebar list's paging, search timing and pending deletes.
import assert from "node:assert/strict";
import { mock, test } from "node:test";

import {
  PendingDeletes,
  UNDO_MS,
  appendPage,
  attachmentName,
  dayGroup,
  debounce,
  groupByDay,
  listPath,
  markMatches,
  mergeFirstPage,
  searchWords,
  withLiveText,
} from "../../chat/static/chat/listing.js";

const at = (minute) => new Date(Date.UTC(2026, 0, 1, 12, minute)).toISOString();
const c = (id, minute) => ({ id, title: id, updated_at: at(minute) });

test("paths: the plain list, a search, and the page after a cursor", () => {
  assert.equal(listPath(), "/api/conversations");
  assert.equal(listPath({ q: "   " }), "/api/conversations");
  assert.equal(listPath({ q: " café & pears " }), "/api/conversations?q=caf%C3%A9+%26+pears");
  assert.equal(listPath({ before: "abc=" }), "/api/conversations?before=abc%3D");
  assert.equal(listPath({ q: "pears", before: "x" }), "/api/conversations?q=pears&before=x");
});

test("debounce: one call, with the last arguments, after the typing stops", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const calls = [];
  const search = debounce((q) => calls.push(q), 250);
  search("p");
  t.mock.timers.tick(100);
  search("pe");
  t.mock.timers.tick(100);
  search("pea");
  t.mock.timers.tick(249);
  assert.deepEqual(calls, []);
  t.mock.timers.tick(1);
  assert.deepEqual(calls, ["pea"]);
  search("pear");
  search.cancel();
  t.mock.timers.tick(1000);
  assert.deepEqual(calls, ["pea"]);
});

test("a first page that holds everything replaces the list", () => {
  const shown = [c("b", 2), c("a", 1)];
  const merged = mergeFirstPage({ shown, next: null }, { conversations: [c("c", 3)], next: null });
  assert.deepEqual(merged, { conversations: [c("c", 3)], next: null });
});

test("a fresh first page keeps the older conversations Load more brought in", () => {
  // Shown: two pages of two. A new conversation pushes "b" off the fresh first page.
  const shown = [c("d", 4), c("c", 3), c("b", 2), c("a", 1)];
  const page = { conversations: [c("e", 5), c("d", 4)], next: "after-d" };
  const merged = mergeFirstPage({ shown, next: "after-a" }, page);
  assert.deepEqual(
    merged.conversations.map((x) => x.id),
    ["e", "d", "c", "b", "a"],
  );
  assert.equal(merged.next, "after-a");
});

test("a conversation that moved to the top is not listed twice", () => {
  const shown = [c("c", 3), c("b", 2), c("a", 1)];
  const page = { conversations: [c("a", 9), c("c", 3)], next: "after-c" };
  const merged = mergeFirstPage({ shown, next: "after-a" }, page);
  assert.deepEqual(
    merged.conversations.map((x) => x.id),
    ["a", "c", "b"],
  );
});

test("nothing loaded beyond the first page: the fresh page and its cursor", () => {
  const shown = [c("b", 2), c("a", 1)];
  const page = { conversations: [c("b", 2), c("a", 1)], next: "after-a" };
  assert.deepEqual(mergeFirstPage({ shown, next: "after-a" }, page), page);
});

test("a following page leaves out what is shown already", () => {
  const shown = [c("c", 3), c("b", 2)];
  const page = { conversations: [c("b", 2), c("a", 1)], next: null };
  assert.deepEqual(
    appendPage(shown, page).map((x) => x.id),
    ["c", "b", "a"],
  );
});

test("a delete is sent only when its undo time is over", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const sent = [];
  const pending = new PendingDeletes({ commit: (id, item) => sent.push([id, item.title]) });
  pending.schedule("a", c("a", 1));
  assert.equal(pending.has("a"), true);
  assert.deepEqual(pending.visible([c("b", 2), c("a", 1)]).map((x) => x.id), ["b"]);
  t.mock.timers.tick(UNDO_MS - 1);
  assert.deepEqual(sent, []);
  t.mock.timers.tick(1);
  assert.deepEqual(sent, [["a", "a"]]);
  assert.equal(pending.has("a"), false);
});

test("undo gives the conversation back and nothing is sent", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const commit = mock.fn();
  const pending = new PendingDeletes({ commit });
  pending.schedule("a", c("a", 1));
  assert.deepEqual(pending.undo("a"), c("a", 1));
  assert.equal(pending.undo("a"), null);
  t.mock.timers.tick(UNDO_MS * 2);
  assert.equal(commit.mock.callCount(), 0);
});

test("leaving the page sends every waiting delete at once, each once", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const sent = [];
  const pending = new PendingDeletes({ commit: (id) => sent.push(id) });
  pending.schedule("a", c("a", 1));
  pending.schedule("b", c("b", 2));
  pending.flush();
  assert.deepEqual(sent.sort(), ["a", "b"]);
  t.mock.timers.tick(UNDO_MS);
  pending.flush();
  assert.deepEqual(sent.sort(), ["a", "b"]);
});

test("day groups: today, yesterday, the week before, and earlier, in local time", () => {
  const now = new Date(2026, 2, 14, 0, 30); // just after midnight
  const local = (day, hour) => new Date(2026, 2, day, hour).toISOString();
  assert.equal(dayGroup(local(14, 0), now), "Today");
  assert.equal(dayGroup(local(13, 23), now), "Yesterday"); // an hour ago, but yesterday
  assert.equal(dayGroup(local(12, 12), now), "Previous 7 days");
  assert.equal(dayGroup(local(8, 1), now), "Previous 7 days");
  assert.equal(dayGroup(local(7, 23), now), "Earlier");
  assert.equal(dayGroup(new Date(2025, 11, 31).toISOString(), now), "Earlier");
});

test("grouped runs keep the list's order and each conversation once", () => {
  const now = new Date(2026, 2, 14, 18);
  const on = (id, day) => ({ id, updated_at: new Date(2026, 2, day, 9).toISOString() });
  const list = [on("a", 14), on("b", 14), on("c", 13), on("d", 10), on("e", 1)];
  const runs = groupByDay(list, now);
  assert.deepEqual(
    runs.map(({ group, conversations }) => [group, conversations.map((c) => c.id)]),
    [
      ["Today", ["a", "b"]],
      ["Yesterday", ["c"]],
      ["Previous 7 days", ["d"]],
      ["Earlier", ["e"]],
    ],
  );
  assert.deepEqual(groupByDay([], now), []);
});

test("matches: the searched words where a word begins, any case, as text pieces", () => {
  const words = searchWords("  Stream café! ");
  assert.deepEqual(words, ["Stream", "café"]);
  assert.deepEqual(markMatches("Streaming: upstream streams. Café", words), [
    { text: "Stream", match: true },
    { text: "ing: upstream ", match: false }, // "stream" inside a word is not a match
    { text: "stream", match: true },
    { text: "s. ", match: false },
    { text: "Café", match: true },
  ]);
  // Markup in the text stays text: the pieces are never parsed.
  assert.deepEqual(markMatches("<b>x</b> b", ["b"]), [
    { text: "<", match: false },
    { text: "b", match: true },
    { text: ">x</", match: false },
    { text: "b", match: true },
    { text: "> ", match: false },
    { text: "b", match: true },
  ]);
  // Characters that mean something to a regular expression are searched for as such.
  assert.deepEqual(markMatches("a.b a+b", ["a+b"]), [
    { text: "a.b ", match: false },
    { text: "a+b", match: true },
  ]);
  assert.deepEqual(markMatches("nothing here", []), [{ text: "nothing here", match: false }]);
});

test("a Markdown export during a reply gets the text on screen in place of none", () => {
  const exported = [
    "# Pears",
    "",
    "## You",
    "",
    "hi",
    "",
    "## Assistant (offline-demo, completed)",
    "",
    "*(no text)*",
    "",
    "## You",
    "",
    "more",
    "",
    "## Assistant (offline-demo, streaming)",
    "",
    "*(no text)*",
    "",
  ].join("\n");
  const live = withLiveText(exported, "Half a **reply**");
  assert.ok(live.endsWith("Half a **reply**\n\n*(still being written when exported)*\n"));
  // Only the last reply's "(no text)": an earlier empty reply stays as the server said.
  assert.equal(live.split("*(no text)*").length, 2);
  assert.equal(withLiveText(exported, ""), exported);
  assert.equal(withLiveText("# Nothing yet\n", "text"), "# Nothing yet\n");
  // A checkpoint of the text the server saved a moment ago gives way to the screen's.
  const checkpointed = exported.replace(/\*\(no text\)\*\n$/, "Half a\n");
  assert.equal(withLiveText(checkpointed, "Half a **reply**"), live);
  const withFile = checkpointed + "\n*Attached: a.png*\n";
  assert.ok(
    withLiveText(withFile, "Half a **reply**").endsWith(
      "Half a **reply**\n\n*(still being written when exported)*\n\n*Attached: a.png*\n",
    ),
  );
  // A finished reply is exported as the server has it.
  const done = checkpointed.replace(", streaming)", ", completed)");
  assert.equal(withLiveText(done, "Half a **reply**"), done);
});

test("the download's name comes from Content-Disposition", () => {
  const header = 'attachment; filename="pears-1a2b3c4d.md"';
  assert.equal(attachmentName(header, "x.md"), "pears-1a2b3c4d.md");
  assert.equal(attachmentName(null, "conversation.md"), "conversation.md");
});
