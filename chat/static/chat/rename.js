// Renaming in place: a text box where the title was. Enter saves, Esc cancels, leaving the
// box saves; a title the server refuses keeps the box open with the server's reason.

import { el } from "./format.js";

let seq = 0;

// `target` is hidden while the box is shown after it; save(title) resolves to the saved
// title or throws an ApiError. Resolves to the saved title, or null when nothing changed.
export function renameInPlace({ target, title, save, returnFocus = null, className = "" }) {
  const errorId = `rename-error-${++seq}`;
  const input = el("input", {
    type: "text",
    class: "rename-input",
    "aria-label": "Conversation title",
    maxlength: "200",
    autocomplete: "off",
    spellcheck: "false",
  });
  input.value = title;
  const error = el("p", { class: "rename-error", id: errorId, role: "alert", hidden: true });
  const form = el("form", { class: `rename-form ${className}`.trim(), novalidate: true }, [
    input,
    error,
  ]);

  return new Promise((resolve) => {
    let busy = false;
    let closed = false;
    let refused = null; // the value the server last refused
    const finish = (result, { focus = true } = {}) => {
      closed = true;
      const hadFocus = form.contains(document.activeElement);
      form.remove();
      target.hidden = false;
      if (focus && hadFocus) (returnFocus ?? target).focus?.();
      resolve(result);
    };
    const commit = async ({ focus = true } = {}) => {
      if (busy || closed) return;
      if (input.value.trim() === title) return finish(null, { focus });
      busy = true;
      input.setAttribute("aria-busy", "true");
      try {
        const saved = await save(input.value);
        finish(saved, { focus });
      } catch (failure) {
        refused = input.value;
        error.textContent = failure.message || "The title was not saved.";
        error.hidden = false;
        input.setAttribute("aria-invalid", "true");
        input.setAttribute("aria-describedby", errorId);
      } finally {
        busy = false;
        input.removeAttribute("aria-busy");
      }
    };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      commit();
    });
    input.addEventListener("keydown", (event) => {
      if (event.key !== "Escape") return;
      event.preventDefault(); // not the page's Esc (Stop, close the drawer)
      finish(null);
    });
    input.addEventListener("input", () => {
      error.hidden = true;
      input.removeAttribute("aria-invalid");
    });
    // Leaving the box saves; leaving it again with a title just refused gives up.
    input.addEventListener("blur", () => {
      if (busy || closed) return;
      if (refused !== null && input.value === refused) finish(null, { focus: false });
      else commit({ focus: false });
    });
    // As tall as what it stands in for: the list under a renamed item does not jump.
    form.style.minHeight = `${target.getBoundingClientRect().height}px`;
    target.hidden = true;
    target.after(form);
    input.focus();
    input.select();
  });
}
