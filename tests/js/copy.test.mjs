// chat/static/chat/copy.js: the Clipboard API first, the selection fallback when it fails.
import assert from "node:assert/strict";
import { test } from "node:test";

import { copyText } from "../../chat/static/chat/copy.js";

const never = () => assert.fail("the fallback was used");

test("the Clipboard API copies when it may", async () => {
  const written = [];
  const clipboard = { writeText: async (text) => written.push(text) };
  assert.equal(await copyText('print("hi")', { clipboard, fallback: never }), true);
  assert.deepEqual(written, ['print("hi")']);
});

test("a refused Clipboard API falls back to copying a selection", async () => {
  const clipboard = {
    writeText: async () => {
      throw new DOMException("Write permission denied.", "NotAllowedError");
    },
  };
  const fallen = [];
  const fallback = (text) => fallen.push(text) > 0;
  assert.equal(await copyText("code", { clipboard, fallback }), true);
  assert.deepEqual(fallen, ["code"]);
});

test("no Clipboard API (plain http): the fallback, and its answer", async () => {
  assert.equal(await copyText("code", { clipboard: undefined, fallback: () => false }), false);
  assert.equal(await copyText("code", { clipboard: {}, fallback: () => true }), true);
});
