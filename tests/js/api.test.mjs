// chat/static/chat/api.js: requests as the API wants them, failures in words.
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";

import {
  ApiError,
  api,
  describeFailure,
  failureOf,
  replyFailure,
} from "../../chat/static/chat/api.js";

const realFetch = globalThis.fetch;
afterEach(() => {
  globalThis.fetch = realFetch;
});

// fetch() answering `status` with `body` (an object as JSON, or null for no body).
function answer(status, body = null, headers = {}) {
  const calls = [];
  globalThis.fetch = async (path, init) => {
    calls.push({ path, ...init });
    return new Response(body === null ? null : JSON.stringify(body), { status, headers });
  };
  return calls;
}

test("a POST sends JSON with its Content-Type, `{}` when there is no body", async () => {
  const calls = answer(201, { message: 7 });
  assert.deepEqual(await api("/api/messages/3/regenerate", { method: "POST" }), { message: 7 });
  assert.equal(calls[0].method, "POST");
  assert.equal(calls[0].body, "{}");
  assert.equal(calls[0].headers["Content-Type"], "application/json");
  assert.equal(calls[0].credentials, "same-origin");
});

test("a PATCH sends its body as JSON", async () => {
  const calls = answer(200, { id: "c", title: "New" });
  await api("/api/conversations/c", { method: "PATCH", body: { title: "New" } });
  assert.equal(calls[0].body, '{"title":"New"}');
  assert.equal(calls[0].headers["Content-Type"], "application/json");
});

test("a DELETE has no body and no Content-Type; its 204 reads as null", async () => {
  const calls = answer(204);
  assert.equal(await api("/api/conversations/c", { method: "DELETE", keepalive: true }), null);
  assert.equal(calls[0].body, undefined);
  assert.equal(calls[0].headers["Content-Type"], undefined);
  assert.equal(calls[0].keepalive, true);
});

test("a GET asks for JSON and sends nothing else", async () => {
  const calls = answer(200, { conversations: [], next: null });
  await api("/api/conversations?q=pears");
  assert.deepEqual(calls[0].headers, { Accept: "application/json" });
  assert.equal(calls[0].body, undefined);
});

test("an error answer becomes an ApiError with its type, message and Retry-After", async () => {
  answer(429, { error: { type: "rate_limited", message: "Slow down." } }, { "Retry-After": "3" });
  const error = await api("/api/chat", { method: "POST", body: {} }).catch((e) => e);
  assert.ok(error instanceof ApiError);
  assert.deepEqual(failureOf(error), {
    status: 429,
    type: "rate_limited",
    message: "Slow down.",
    retryAfter: "3",
  });
});

test("an error without a JSON body still says what happened", async () => {
  answer(502);
  const error = await api("/api/conversations").catch((e) => e);
  assert.equal(error.type, "http_error");
  assert.equal(error.message, "The server answered with HTTP 502.");
});

test("no network is status 0, type network", async () => {
  globalThis.fetch = async () => {
    throw new TypeError("Failed to fetch");
  };
  const error = await api("/api/conversations").catch((e) => e);
  assert.equal(error.status, 0);
  assert.equal(describeFailure(error).headline, "Can't reach the server");
});

test("failures read as what the person can do next", () => {
  const cases = [
    [{ status: 413, type: "message_too_long" }, "That message is too long", false],
    [{ status: 413, type: "file_too_large" }, "File not accepted", false],
    [{ status: 415, type: "unsupported_file_type" }, "File not accepted", false],
    [{ status: 413, type: "too_many_files" }, "Too many files", false],
    [{ status: 400, type: "model_cannot_see_images" }, "This model can't read images or PDFs", false],
    [{ status: 429, type: "rate_limited" }, "Too many messages at once", true],
    [{ status: 429, type: "quota_exceeded" }, "Usage quota reached", true],
    [{ status: 429, type: "upstream_rate_limit" }, "The model provider is busy", true],
    [{ status: 429, type: "budget_exceeded" }, "Budget reached", false],
    [{ status: 409, type: "turn_in_progress" }, "A reply is still being written", true],
    [{ status: 409, type: "not_last_turn" }, "Only the last turn can change", false],
    [{ status: 404, type: "not_found" }, "Not found", false],
    [{ status: 400, type: "invalid_title" }, "Message not accepted", false],
    [{ status: 504, type: "" }, "The model took too long", true],
    [{ status: 502, type: "upstream_auth" }, "The model is not set up correctly", true],
    [{ status: 500, type: "internal" }, "Something went wrong on our side", true],
  ];
  for (const [failure, headline, retryable] of cases) {
    const described = describeFailure(failure);
    assert.equal(described.headline, headline, JSON.stringify(failure));
    assert.equal(described.retryable, retryable, JSON.stringify(failure));
  }
});

test("Retry-After is added to the detail in words", () => {
  assert.equal(
    describeFailure({ status: 429, type: "rate_limited", message: "Slow down.", retryAfter: "1" })
      .detail,
    "Slow down. Try again in 1 second.",
  );
  assert.equal(
    describeFailure({ status: 429, type: "rate_limited", message: "", retryAfter: "30" }).detail,
    "Try again in 30 seconds.",
  );
  assert.equal(describeFailure({ status: 429, retryAfter: "soon" }).detail, "");
});

test("a missing type (null from a stored row) is no type", () => {
  assert.equal(describeFailure({ status: 502, type: null }).headline, "The model is unavailable");
});

test("a reply's error carries the HTTP status it stands for", () => {
  const cases = [
    [{ type: "upstream_rate_limit", message: "Busy.", http_status: 429 }, "12", 429],
    [{ type: "upstream_timeout", message: "Slow.", http_status: 504 }, null, 504],
    [{ type: "still_streaming", message: "Later.", http_status: 409 }, null, 409],
    [{ type: "upstream_bad_request", message: "No.", http_status: 400 }, null, 400],
  ];
  for (const [error, retryAfter, status] of cases) {
    assert.deepEqual(replyFailure(error, retryAfter), {
      status,
      type: error.type,
      message: error.message,
      retryAfter,
    });
  }
  assert.equal(
    describeFailure(replyFailure(cases[0][0], "12")).headline,
    "The model provider is busy",
  );
});

test("a reply's error without a status (or no error at all) stands for a bad gateway", () => {
  assert.deepEqual(replyFailure({ type: "upstream_error", message: "Down." }), {
    status: 502,
    type: "upstream_error",
    message: "Down.",
    retryAfter: null,
  });
  assert.equal(replyFailure(undefined).status, 502);
  assert.equal(describeFailure(replyFailure(null)).headline, "The model is unavailable");
});
