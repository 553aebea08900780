// The HTTP API as the page uses it: api() for JSON requests, and what a failure means to
// the person reading it (failureOf, replyFailure and describeFailure: pure, tested with
// `node --test`).
//
// The API refuses cross-site requests by Origin / Sec-Fetch-Site and needs
// `Content-Type: application/json` on a POST; the CSRF token is sent as well so the same
// calls keep working behind Django's token CSRF.

export class ApiError extends Error {
  constructor(status, type, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.type = type;
    this.retryAfter = retryAfter;
  }
}

function csrfToken() {
  const match = (globalThis.document?.cookie ?? "").match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

// `keepalive`: the request outlives the page (a delete sent as the page is left).
export async function api(path, { method = "GET", body, keepalive = false } = {}) {
  const headers = { Accept: "application/json" };
  // GET and DELETE have no body; every other method sends JSON, `{}` at the least.
  const withBody = method !== "GET" && method !== "DELETE";
  if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
  if (withBody) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: withBody ? JSON.stringify(body ?? {}) : undefined,
      credentials: "same-origin",
      keepalive,
    });
  } catch {
    throw new ApiError(0, "network", "Could not reach the server. Check your connection.");
  }
  const data = await response.json().catch(() => null); // null for 204
  if (!response.ok) {
    const error = data?.error ?? {};
    throw new ApiError(
      response.status,
      error.type || "http_error",
      error.message || `The server answered with HTTP ${response.status}.`,
      response.headers.get("Retry-After"),
    );
  }
  return data;
}

// The fields describeFailure reads, from an ApiError (or anything shaped like one).
export function failureOf(error) {
  return {
    status: error.status,
    type: error.type,
    message: error.message,
    retryAfter: error.retryAfter,
  };
}

// A failure, in words a person can act on.
export function describeFailure({ status, type = "", message = "", retryAfter = null }) {
  let headline = "Something went wrong";
  let retryable = true;
  type = type || "";
  if (status === 0 || type === "network") headline = "Can't reach the server";
  else if (type === "still_streaming") headline = "This reply is still being written";
  else if (type === "turn_in_progress") headline = "A reply is still being written";
  else if (type === "not_last_turn") [headline, retryable] = ["Only the last turn can change", false];
  else if (type === "budget_exceeded") [headline, retryable] = ["Budget reached", false];
  else if (type === "authentication_required") [headline, retryable] = ["Signed out", false];
  else if (type === "model_cannot_see_images") {
    [headline, retryable] = ["This model can't read images or PDFs", false];
  } else if (type === "too_many_files") [headline, retryable] = ["Too many files", false];
  else if (/file|image/.test(type)) [headline, retryable] = ["File not accepted", false];
  else if (status === 429 && /quota/i.test(type)) headline = "Usage quota reached";
  else if (status === 429 && type.startsWith("upstream")) headline = "The model provider is busy";
  else if (status === 429) headline = "Too many messages at once";
  else if (type === "upstream_auth") headline = "The model is not set up correctly";
  else if (status === 504 || type === "upstream_timeout") headline = "The model took too long";
  else if (type.startsWith("upstream") || status === 502) headline = "The model is unavailable";
  else if (status === 413) [headline, retryable] = ["That message is too long", false];
  else if (status === 401 || status === 403) [headline, retryable] = ["Not allowed", false];
  else if (status === 404) [headline, retryable] = ["Not found", false];
  else if (status >= 400 && status < 500) [headline, retryable] = ["Message not accepted", false];
  else if (status >= 500) headline = "Something went wrong on our side";
  let detail = message || "";
  const seconds = Number.parseInt(retryAfter ?? "", 10);
  if (Number.isFinite(seconds) && seconds > 0) {
    detail += ` Try again in ${seconds} second${seconds === 1 ? "" : "s"}.`;
  }
  return { headline, detail: detail.trim(), retryable };
}

// A reply's error (a stream's `error` event, or a failed message read back) as a failure:
// the error carries the HTTP status it stands for, as a stream has answered 200 before it
// fails; without one (a server older than the field), a bad gateway.
export function replyFailure(error, retryAfter = null) {
  return {
    status: error?.http_status ?? 502,
    type: error?.type,
    message: error?.message,
    retryAfter,
  };
}
