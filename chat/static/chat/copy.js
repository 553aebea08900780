// Copying text: the Clipboard API where the browser allows it, else a hidden textarea and
// execCommand("copy") (plain http on another host, older browsers, a denied permission).
// copyText is importable by Node with its collaborators passed in (tests/js/copy.test.mjs).

import { el } from "./format.js";

const FEEDBACK_MS = 1500;

function copyBySelection(text) {
  const area = el("textarea", { readonly: true, "aria-hidden": "true", class: "copy-buffer" });
  area.value = text;
  document.body.append(area);
  const focused = document.activeElement;
  area.select();
  let copied = false;
  try {
    copied = document.execCommand("copy");
  } catch {
    copied = false;
  }
  area.remove();
  focused?.focus?.();
  return copied;
}

export async function copyText(
  text,
  { clipboard = globalThis.navigator?.clipboard, fallback = copyBySelection } = {},
) {
  if (clipboard?.writeText) {
    try {
      await clipboard.writeText(text);
      return true;
    } catch {
      // Not allowed here (no permission, not a secure context): try the old way.
    }
  }
  return fallback(text);
}

// A button that copies `getText()` and says "Copied" (or "Copy failed") for a moment.
// `what` is read only by screen readers: "Copy code", "Copy reply".
export function copyButton(getText, { what = "", className = "copy" } = {}) {
  const label = () => [
    "Copy",
    ...(what ? [el("span", { class: "visually-hidden", text: ` ${what}` })] : []),
  ];
  const button = el("button", { type: "button", class: className }, label());
  let timer = 0;
  button.addEventListener("click", async () => {
    const copied = await copyText(getText());
    button.textContent = copied ? "Copied" : "Copy failed";
    button.dataset.copied = String(copied);
    clearTimeout(timer);
    timer = setTimeout(() => {
      button.replaceChildren(...label());
      delete button.dataset.copied;
    }, FEEDBACK_MS);
  });
  return button;
}

// A copy button on every code block of rendered markdown (markdown.js gives each a head
// naming its language), copying the code as written.
export function addCodeCopyButtons(root) {
  for (const head of root.querySelectorAll(".code-block > .code-head")) {
    if (head.querySelector(".code-copy")) continue;
    const code = head.parentElement.querySelector("pre code");
    head.append(copyButton(() => code.textContent, { what: "code", className: "code-copy" }));
  }
}
