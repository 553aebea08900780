// Model text as markdown: parsed by marked, raw HTML in it shown as text, and the result
// still put through DOMPurify before it becomes DOM nodes (never innerHTML).

import DOMPurify from "./vendor/dompurify/purify.es.mjs";
import { marked } from "./vendor/marked/marked.esm.js";

export function escapeHtml(text) {
  return String(text).replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c],
  );
}

marked.use({
  gfm: true,
  breaks: true,
  renderer: {
    html({ text, block }) {
      return block ? `<p>${escapeHtml(text)}</p>` : escapeHtml(text);
    },
    // Images a model names could be trackers; show them as links the user may choose to open.
    image({ href, text }) {
      return `<a href="${escapeHtml(href)}">${escapeHtml(text || href)}</a>`;
    },
  },
});

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

const PURIFY = {
  RETURN_DOM_FRAGMENT: true,
  USE_PROFILES: { html: true },
  FORBID_TAGS: ["img", "style", "form", "input", "button", "textarea", "select", "video", "audio"],
  FORBID_ATTR: ["style"],
};

export function renderMarkdown(element, text) {
  element.replaceChildren(DOMPurify.sanitize(marked.parse(text), PURIFY));
}
