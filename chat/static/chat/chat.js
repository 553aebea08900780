// The chat page: small ES modules with no framework, talking only to the documented API.
// This entry wires them to the page's elements; each module says what it does:
//
//   api.js            fetch wrapper, what a failure means to a person
//   format.js         money, durations, dates, el()
//   markdown.js       marked + DOMPurify (never innerHTML)
//   copy.js           copy buttons (Clipboard API, with a fallback)
//   transcript.js     the transcript's scrolling and contents
//   replies.js        a user message's and a reply's views
//   turns.js          replies being written: EventSource, Stop, reconnecting
//   thread.js         the conversation on screen: its turns, sending
//   turn-view.js      one turn: its versions (‹ 1/2 ›), Regenerate, Edit
//   versions.js       turns and versions from the API's detail, without the DOM
//   conversations.js  the sidebar: list, search, rename, delete with Undo, downloads
//   listing.js        the list's rules without the DOM: paging, debounce, pending deletes
//   menu.js, rename.js, toasts.js   a menu button's menu, renaming in place, Undo toasts
//   account.js        who is signed in, their spend and budget
//   attachments.js    files for the next message: attach, drop, paste, upload, thumbnails
//
// The reply is written on the server whether or not this page is open: closing or reloading
// the page never stops it (only Stop does), and opening its stream URL again follows it on,
// never calling the model a second time. The page never re-posts a message on its own.

import { showBudget } from "./account.js";
import { AttachmentTray } from "./attachments.js";
import { ConversationList } from "./conversations.js";
import { Thread } from "./thread.js";

const config = JSON.parse(document.getElementById("chat-config").textContent);
const $ = (id) => document.getElementById(id);
const els = {
  app: $("app"),
  newChat: $("new-chat"),
  sidebarOpen: $("sidebar-open"),
  sidebarClose: $("sidebar-close"),
  scrim: $("scrim"),
  model: $("model"),
  input: $("composer-input"),
  send: $("send"),
  stop: $("stop"),
  announcer: $("announcer"),
  titleActions: $("title-actions"),
};

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function announce(text) {
  els.announcer.textContent = text;
}

// Back to this conversation after signing in (the sign-in page keeps `next`).
function signIn() {
  const here = location.pathname + location.hash;
  location.assign(`${config.loginUrl}?next=${encodeURIComponent(here)}`);
}

const sidebar = new ConversationList({
  elements: {
    list: $("conversation-list"),
    empty: $("conversation-empty"),
    search: $("conversation-search"),
    more: $("conversation-more"),
    menu: $("conversation-menu"),
  },
  hooks: {
    announce,
    titled: (id, title) => thread.titleChanged(id, title),
    // The open conversation was deleted: a new chat takes its place (focus stays on Undo).
    deleted() {
      if (location.hash) history.pushState(null, "", location.pathname + location.search);
      thread.showNewChat();
    },
    restored(id, wasOpen) {
      if (wasOpen) location.hash = id;
    },
    liveText(id) {
      const turn = thread.turns.in(id);
      return turn ? turn.view.text : null;
    },
    titleTarget: () => $("title"),
    titleMenuButton: () => els.titleActions,
    focusAfter: () => els.newChat,
  },
});

const thread = new Thread({
  config,
  model: els.model,
  titleElement: $("title"),
  hooks: {
    announce,
    composerChanged: syncComposer,
    listChanged: () => sidebar.refresh(),
    shown(id) {
      sidebar.markCurrent(id);
      els.titleActions.hidden = id === null;
    },
    unavailable: () => {
      els.titleActions.hidden = true;
    },
    editInComposer(text, files = []) {
      tray.clear();
      tray.restore(files);
      els.input.value = text;
      autosize();
      els.input.focus();
    },
    newChat,
    signIn,
  },
});

function syncComposer() {
  const turn = thread.liveTurn();
  els.send.hidden = Boolean(turn);
  els.stop.hidden = !turn;
  els.stop.disabled = Boolean(turn?.stopping);
}

// ---- Routing: the URL's #<uuid> names the conversation on screen.

function route() {
  const id = location.hash.slice(1);
  closeSidebar(false);
  if (UUID.test(id)) {
    if (id !== thread.conversation || !$("messages").childElementCount) thread.open(id);
  } else if (thread.conversation !== null) {
    thread.showNewChat();
  }
}

function newChat() {
  if (location.hash) history.pushState(null, "", location.pathname + location.search);
  thread.showNewChat();
  closeSidebar(false);
  els.input.focus();
}

// ---- Sidebar on narrow screens

function openSidebar() {
  els.app.classList.add("sidebar-visible");
  els.sidebarOpen.setAttribute("aria-expanded", "true");
  els.newChat.focus();
}

function closeSidebar(returnFocus = true) {
  if (!els.app.classList.contains("sidebar-visible")) return;
  els.app.classList.remove("sidebar-visible");
  els.sidebarOpen.setAttribute("aria-expanded", "false");
  if (returnFocus) els.sidebarOpen.focus();
}

// ---- Composer

function autosize() {
  els.input.style.height = "auto";
  els.input.style.height = `${els.input.scrollHeight + 2}px`;
}

const tray = new AttachmentTray({
  elements: {
    tray: $("attachments"),
    input: $("attach-input"),
    button: $("attach"),
    dropTarget: $("main"),
    textarea: els.input,
  },
  limits: config.files,
  hooks: { announce, changed: () => {} },
});

function submit() {
  const text = els.input.value;
  if (!text.trim() || thread.busy()) return;
  if (tray.uploading()) {
    announce("Wait for the files to finish uploading.");
    return;
  }
  const files = tray.files();
  els.input.value = "";
  tray.clear();
  autosize();
  thread.send(text, files);
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  submit();
});
els.input.addEventListener("keydown", (event) => {
  // isComposing: Enter that confirms an IME composition must not send.
  if (event.key === "Enter" && !event.shiftKey && !event.altKey && !event.isComposing) {
    event.preventDefault();
    submit();
  }
});
els.input.addEventListener("input", autosize);
const banner = $("demo-banner");
const BANNER_KEY = "chat.demoBannerHidden";
if (banner) {
  banner.hidden = localStorage.getItem(BANNER_KEY) === "1";
  $("demo-banner-dismiss").addEventListener("click", () => {
    banner.hidden = true;
    localStorage.setItem(BANNER_KEY, "1");
    els.input.focus();
  });
}
els.stop.addEventListener("click", () => thread.stop());
els.titleActions.addEventListener("click", () => {
  const title = $("title").textContent;
  sidebar.openMenu(els.titleActions, thread.conversation, title, "title");
});
els.newChat.addEventListener("click", newChat);
els.sidebarOpen.addEventListener("click", openSidebar);
els.sidebarClose.addEventListener("click", () => closeSidebar());
els.scrim.addEventListener("click", () => closeSidebar());
document.addEventListener("keydown", (event) => {
  // A menu, a rename or an edit box that took this Esc has prevented its default.
  if (event.key !== "Escape" || event.defaultPrevented) return;
  if (els.app.classList.contains("sidebar-visible")) closeSidebar();
  else if (thread.liveTurn()) thread.stop();
});
window.addEventListener("hashchange", route);
window.addEventListener("popstate", route);

showBudget(config.account?.budget);
sidebar.refresh();
route();
els.input.disabled = false;
if (matchMedia("(pointer: fine)").matches) els.input.focus();
