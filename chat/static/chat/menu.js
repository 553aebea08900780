// A menu button's menu (the WAI-ARIA menu button pattern): it opens beside the button that
// opened it with focus on its first item; arrow keys, Home and End move between items;
// Esc, Tab or a click elsewhere closes it, Esc returning focus to the button.

export class Menu {
  constructor(element) {
    this.element = element;
    this.button = null;
    this.onKey = (event) => this.key(event);
    this.onPointer = (event) => {
      if (!this.element.contains(event.target) && !this.button?.contains(event.target)) {
        this.close({ focusButton: false });
      }
    };
    element.addEventListener("keydown", this.onKey);
    // Choosing an item (a click, Enter or Space on it) closes the menu.
    element.addEventListener("click", (event) => {
      if (event.target.closest('[role="menuitem"]')) this.close({ focusButton: false });
    });
  }

  get isOpen() {
    return this.button !== null;
  }

  items() {
    return [...this.element.querySelectorAll('[role="menuitem"]:not([hidden])')];
  }

  toggle(button) {
    if (this.button === button) this.close();
    else this.open(button);
  }

  open(button) {
    if (this.isOpen) this.close({ focusButton: false });
    this.button = button;
    button.setAttribute("aria-expanded", "true");
    this.element.hidden = false;
    this.place(button);
    for (const item of this.items()) item.tabIndex = -1;
    this.items()[0]?.focus();
    document.addEventListener("pointerdown", this.onPointer, true);
  }

  // The button was drawn again (the list refreshed): the open menu belongs to the new one.
  retarget(button) {
    this.button = button;
    button.setAttribute("aria-expanded", "true");
  }

  close({ focusButton = true } = {}) {
    if (!this.isOpen) return;
    const button = this.button;
    this.button = null;
    button.setAttribute("aria-expanded", "false");
    this.element.hidden = true;
    document.removeEventListener("pointerdown", this.onPointer, true);
    if (focusButton) button.focus();
  }

  // Under the button, inside the window; above it when there is no room below.
  place(button) {
    const rect = button.getBoundingClientRect();
    const menu = this.element.getBoundingClientRect();
    const margin = 8;
    let top = rect.bottom + 4;
    if (top + menu.height > window.innerHeight - margin) top = rect.top - menu.height - 4;
    const left = Math.min(rect.right - menu.width, window.innerWidth - menu.width - margin);
    this.element.style.top = `${Math.max(margin, top)}px`;
    this.element.style.left = `${Math.max(margin, left)}px`;
  }

  key(event) {
    const items = this.items();
    const at = items.indexOf(document.activeElement);
    const go = (index) => {
      event.preventDefault();
      items[(index + items.length) % items.length]?.focus();
    };
    if (event.key === "ArrowDown") go(at + 1);
    else if (event.key === "ArrowUp") go(at - 1);
    else if (event.key === "Home") go(0);
    else if (event.key === "End") go(items.length - 1);
    else if (event.key === "Escape") {
      event.preventDefault(); // the page's own Esc (Stop, close the drawer) waits its turn
      this.close();
    } else if (event.key === "Tab") this.close({ focusButton: false });
  }
}
