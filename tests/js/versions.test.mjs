// chat/static/chat/versions.js: a conversation's turns and the versions of each.
import assert from "node:assert/strict";
import { test } from "node:test";

import { TurnVersions, turnsOf, versionsOf } from "../../chat/static/chat/versions.js";

// A message dict as the detail gives it, with its other versions.
function message(id, role, content, { previous = [], later = [] } = {}) {
  const bare = (v) => ({ id: v.id, role, content: v.content, status: "completed" });
  return {
    ...bare({ id, content }),
    version: previous.length + 1,
    versions: previous.length + 1 + later.length,
    previous_versions: previous.map(bare),
    later_versions: later.map(bare),
  };
}

const contents = (turn) =>
  turn.versions.map((v) => [v.user?.content ?? null, v.reply?.content ?? null]);

test("one version: the message itself, current", () => {
  const only = message(1, "user", "hi");
  assert.deepEqual(versionsOf(only), { all: [only], current: 0 });
});

test("a turn's versions pair user message k with reply k, the newest current", () => {
  const turns = turnsOf([
    message(1, "user", "first"),
    message(2, "assistant", "reply 1"),
    message(5, "user", "second, edited", { previous: [{ id: 3, content: "second" }] }),
    message(6, "assistant", "reply 2b", { previous: [{ id: 4, content: "reply 2" }] }),
  ]);
  assert.equal(turns.length, 2);
  assert.deepEqual(contents(turns[0]), [["first", "reply 1"]]);
  assert.deepEqual(contents(turns[1]), [
    ["second", "reply 2"],
    ["second, edited", "reply 2b"],
  ]);
  assert.equal(turns[1].current, 1);
  assert.equal(turns[1].shown, 1);
  assert.equal(turns[1].label, "2/2");
});

test("an earlier version chosen again is current, with the newer ones after it", () => {
  const [turn] = turnsOf([
    message(1, "user", "q", { later: [{ id: 3, content: "q" }] }),
    message(2, "assistant", "a", { later: [{ id: 4, content: "a2" }] }),
  ]);
  assert.deepEqual(contents(turn), [
    ["q", "a"],
    ["q", "a2"],
  ]);
  assert.equal(turn.current, 0);
  assert.equal(turn.label, "1/2");
  assert.equal(turn.describe, "Version 1 of 2");
});

test("a message with no reply yet, and a reply with no message before it", () => {
  const turns = turnsOf([
    message(1, "assistant", "orphan"),
    message(2, "user", "waiting"),
    { id: 9, role: "system", content: "be brief" },
  ]);
  assert.deepEqual(turns.map(contents), [[[null, "orphan"]], [["waiting", null]]]);
});

test("stepping stays within the versions", () => {
  const turn = new TurnVersions([{ n: 1 }, { n: 2 }, { n: 3 }]);
  assert.equal(turn.shown, 2);
  assert.equal(turn.canStep(1), false);
  assert.equal(turn.step(1), false);
  assert.equal(turn.step(-1), true);
  assert.equal(turn.step(-1), true);
  assert.equal(turn.step(-1), false);
  assert.equal(turn.shownVersion.n, 1);
  assert.equal(turn.isShowingCurrent(), false);
  turn.chooseShown();
  assert.equal(turn.current, 0);
  assert.equal(turn.isShowingCurrent(), true);
});

test("a new version is current and shown; a refused one goes away again", () => {
  const turn = new TurnVersions([{ n: 1 }, { n: 2 }]);
  turn.step(-1);
  turn.chooseShown();
  assert.equal(turn.add({ n: 3 }), 2);
  assert.deepEqual([turn.current, turn.shown, turn.label], [2, 2, "3/3"]);
  turn.dropNewest(0);
  assert.deepEqual([turn.count, turn.current, turn.shown], [2, 0, 0]);
});
