// Model text as markdown: parsed by marked, raw HTML in it shown as text, code blocks
// labelled with their language and coloured by highlight.js, and the result still put
// through DOMPurify before it becomes DOM nodes (never innerHTML).

import DOMPurify from "./vendor/dompurify/purify.es.mjs";
import hljs from "./vendor/highlight/highlight.min.js";
import { marked } from "./vendor/marked/marked.esm.js";

export function escapeHtml(text) {
  return String(text).replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c],
  );
}

// The language a fence names ("```python title=x" → "python"), kept short: it is a label.
export function fenceLanguage(info) {
  return (info || "").trim().split(/\s+/)[0].slice(0, 24).toLowerCase();
}

// A code block: a head naming its language (where Copy goes once the reply is done) and
// the code coloured when highlight.js knows the language. highlight.js escapes the code
// and adds only <span class>; DOMPurify still checks the whole reply after this.
function codeBlock({ text, lang }) {
  // Ending in one newline, as marked's own renderer has it (Copy copies that).
  const code = `${text.replace(/\n$/, "")}\n`;
  const language = fenceLanguage(lang);
  const known = language && hljs.getLanguage(language);
  const body = known
    ? hljs.highlight(code, { language, ignoreIllegals: true }).value
    : escapeHtml(code);
  const name = known?.name ?? language;
  const kind = known ? ` hljs language-${escapeHtml(language)}` : "";
  return (
    `<div class="code-block"><div class="code-head">` +
    `<span class="code-lang">${escapeHtml(name || "text")}</span></div>` +
    `<pre><code class="code${kind}">${body}</code></pre></div>\n`
  );
}

marked.use({
  gfm: true,
  breaks: true,
  renderer: {
    code: codeBlock,
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
