// chat/static/chat/format.js: figures under a reply and dates in the list.
import assert from "node:assert/strict";
import { test } from "node:test";

import { formatCost, formatMs, formatWhen } from "../../chat/static/chat/format.js";

test("cost: three significant digits, and a plain zero", () => {
  assert.equal(formatCost(0), "$0.00");
  assert.equal(formatCost(0.000123456), "$0.000123");
  assert.equal(formatCost(1.23456), "$1.23");
  assert.equal(formatCost(1234.5), "$1,230");
});

test("durations: milliseconds under a second, then seconds", () => {
  assert.equal(formatMs(0), "0 ms");
  assert.equal(formatMs(12.6), "13 ms");
  assert.equal(formatMs(999), "999 ms");
  assert.equal(formatMs(1000), "1.0 s");
  assert.equal(formatMs(12_345), "12.3 s");
});

test("when: the time for today, the date before", () => {
  const now = new Date(2026, 2, 14, 18, 0);
  const today = new Date(2026, 2, 14, 9, 5).toISOString();
  const earlier = new Date(2026, 2, 2, 9, 5).toISOString();
  assert.match(formatWhen(today, now), /09.05/);
  assert.match(formatWhen(earlier, now), /Mar.*2|2.*Mar/);
});
