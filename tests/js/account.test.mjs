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
    warning: false,
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
    warning: false,
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

test("from the warning share on, the line warns with the share used", () => {
  const shown = budgetText(budget({ spent: "4.10", warn_percent: 80 }));
  assert.equal(shown.warning, true);
  assert.equal(shown.exceeded, false);
  assert.equal(shown.text, "$4.10 of $5.00 this month (82% used)");
  assert.equal(budgetText(budget({ spent: "3.90", warn_percent: 80 })).warning, false);
});

test("a group's limit closer to its end than one's own is the one shown, named", () => {
  const groups = [{ name: "Research", limit: "10.00", spent: "9.50", exceeded: false }];
  const shown = budgetText(budget({ groups, warn_percent: 80 }));
  assert.equal(shown.text, "Research: $9.50 of $10.00 this month (95% used)");
  assert.equal(shown.fraction, 0.95);
});

test("a group at its limit reaches the budget even with one's own to spare", () => {
  const groups = [{ name: "Support", limit: "2.00", spent: "2.00", exceeded: true }];
  const shown = budgetText(budget({ groups, exceeded: true }));
  assert.equal(shown.exceeded, true);
  assert.equal(shown.text, "Budget reached: Support: $2.00 of $2.00 this month");
});

test("only a group limit: the group's line, no personal one", () => {
  const groups = [{ name: "Ops", limit: "4.00", spent: "1.00", exceeded: false }];
  assert.equal(budgetText(budget({ limit: null, groups })).text, "Ops: $1.00 of $4.00 this month");
});
