// chat/static/chat/attachments.js: what the page refuses before uploading, and sizes.
import assert from "node:assert/strict";
import { test } from "node:test";

import { formatSize, refusalOf } from "../../chat/static/chat/attachments.js";

const LIMITS = { maxBytes: 20 * 1024 * 1024, perMessage: 2 };

test("accepted types go through, by type or by extension when the browser gives none", () => {
  assert.equal(refusalOf({ name: "shot.png", type: "image/png", size: 10 }, LIMITS), null);
  assert.equal(refusalOf({ name: "paper.pdf", type: "application/pdf", size: 10 }, LIMITS), null);
  assert.equal(refusalOf({ name: "notes.md", type: "", size: 10 }, LIMITS), null);
  assert.equal(refusalOf({ name: "data.csv", type: "text/csv", size: 10 }, LIMITS), null);
});

test("SVG, other types, empty, too large and too many files say why", () => {
  assert.match(refusalOf({ name: "logo.svg", type: "image/svg+xml", size: 10 }, LIMITS), /SVG/);
  const exe = { name: "tool.exe", type: "application/x-msdownload", size: 10 };
  assert.match(refusalOf(exe, LIMITS), /Attach PNG/);
  assert.match(refusalOf({ name: "run", type: "", size: 10 }, LIMITS), /Attach PNG/);
  const empty = { name: "a.txt", type: "text/plain", size: 0 };
  assert.equal(refusalOf(empty, LIMITS), "The file is empty.");
  const big = { name: "big.pdf", type: "application/pdf", size: 21 * 1024 * 1024 };
  assert.equal(
    refusalOf(big, LIMITS),
    "The file is 21.0 MB; files of up to 20.0 MB are accepted.",
  );
  const third = { name: "c.png", type: "image/png", size: 1 };
  assert.match(refusalOf(third, LIMITS, 2), /At most 2 files/);
});

test("sizes in B, KB and MB", () => {
  assert.equal(formatSize(512), "512 B");
  assert.equal(formatSize(2048), "2 KB");
  assert.equal(formatSize(5 * 1024 * 1024), "5.0 MB");
});
