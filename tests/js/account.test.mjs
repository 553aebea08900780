// chat/static/chat/account.js: the sidebar's budget line, with Node's own test runner.
import assert from "node:assert/strict";
import { test } from "node:test";

import { budgetText } from "../../chat/static/chat/account.js";

const budget = (fields) => ({
  limit: "5.00",
  spent: "1.25",
  period: "month",
  resets_at: "2026-01-01T00:00:00+00:00",
  exceeded: false,
  ...fields,
});

test("spend against a limit, with the bar's fraction", () => {
  assert.deepEqual(budgetText(budget({})), {
    text: "$1.25 of $5.00 this month",
    fraction: 0.25,
    exceeded: false,
  });
});

test("each period reads naturally", () => {
  assert.equal(budgetText(budget({ period: "day" })).text, "$1.25 of $5.00 today");
  assert.equal(budgetText(budget({ period: "week" })).text, "$1.25 of $5.00 this week");
});

test("a reached budget says so, and the bar is full however far over", () => {
  const shown = budgetText(budget({ spent: "7.5", exceeded: true }));
  assert.equal(shown.text, "Budget reached: $7.50 of $5.00 this month");
  assert.equal(shown.fraction, 1);
  assert.equal(shown.exceeded, true);
});

test("no limit: spend alone, no bar", () => {
  assert.deepEqual(budgetText(budget({ limit: null, spent: "0.004" })), {
    text: "$0.00 spent this month",
    fraction: null,
    exceeded: false,
  });
});

test("a zero limit is reached at once and the bar is full", () => {
  const shown = budgetText(budget({ limit: "0.00", spent: "0", exceeded: true }));
  assert.equal(shown.fraction, 1);
  assert.match(shown.text, /^Budget reached: \$0\.00 of \$0\.00/);
});

test("an anonymous visitor has no budget line", () => {
  assert.equal(budgetText(null), null);
});
