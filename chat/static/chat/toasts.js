// Short-lived notes at the bottom of the page ("Deleted … Undo"), in a live region so they
// are read out. Whoever shows a toast closes it; a toast that held focus hands it on.

import { el } from "./format.js";

// actions: [[label, handler], …]; focusAfter(): where focus goes if the toast had it.
export function showToast(text, { actions = [], focus = false, focusAfter = () => null } = {}) {
  const region = document.getElementById("toasts");
  const buttons = actions.map(([label, handler]) =>
    el("button", { type: "button", class: "toast-action", text: label, onclick: handler }),
  );
  const toast = el("div", { class: "toast" }, [el("span", { class: "toast-text", text }), ...buttons]);
  region.append(toast);
  if (focus) buttons[0]?.focus();
  return {
    close() {
      const hadFocus = toast.contains(document.activeElement);
      toast.remove();
      if (hadFocus) focusAfter()?.focus();
    },
  };
}
