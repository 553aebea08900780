// Files going with the next message: the attach button, drag and drop, and paste, each
// file uploaded at once with its progress, shown as a removable thumbnail; a file the
// page or the server refuses says why before anything is sent. The sent message's files
// are drawn by fileLinks().
//
//   POST /api/files   multipart, the file in the field `file`
//        → 201 {id, name, type, kind, size, width, height, url}; 413/415/400 say why not
//   GET  /api/files/<id>   the bytes, for their owner only (images inline)
//
// The server decides what is accepted (it reads the bytes); refusalOf() only spares an
// upload that is sure to be refused. refusalOf and formatSize are pure (node --test).

import { el } from "./format.js";

// What the server accepts, by the browser's type or, when it has none, the extension.
const TYPES = new Set([
  "image/png",
  "image/jpeg",
  "image/webp",
  "image/gif",
  "application/pdf",
  "text/plain",
  "text/markdown",
  "text/csv",
]);
const EXTENSIONS = new Set([
  "png",
  "jpg",
  "jpeg",
  "webp",
  "gif",
  "pdf",
  "txt",
  "md",
  "markdown",
  "csv",
]);
export const ACCEPT = [...TYPES, ".md", ".markdown", ".csv", ".txt"].join(",");

export function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

// Why `file` ({name, type, size}) would be refused, or null. `count`: files already
// attached; limits: {maxBytes, perMessage} from the page's config.
export function refusalOf(file, { maxBytes, perMessage }, count = 0) {
  const extension = (file.name.split(".").pop() || "").toLowerCase();
  if (file.type === "image/svg+xml" || extension === "svg") {
    return "SVG images are not accepted (they can carry scripts).";
  }
  if (!TYPES.has(file.type) && !(file.type === "" && EXTENSIONS.has(extension))) {
    return "Attach PNG, JPEG, WebP or GIF images, PDF, or text (plain, Markdown, CSV).";
  }
  if (file.size === 0) return "The file is empty.";
  if (file.size > maxBytes) {
    const limit = formatSize(maxBytes);
    return `The file is ${formatSize(file.size)}; files of up to ${limit} are accepted.`;
  }
  if (count >= perMessage) return `At most ${perMessage} files can go with a message.`;
  return null;
}

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

// XMLHttpRequest, not fetch: only it reports an upload's progress.
function upload(file, onProgress) {
  const xhr = new XMLHttpRequest();
  const done = new Promise((resolve, reject) => {
    xhr.open("POST", "/api/files");
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("X-CSRFToken", csrfToken());
    xhr.responseType = "json";
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    };
    xhr.onload = () => {
      if (xhr.status === 201) resolve(xhr.response);
      else reject(new Error(xhr.response?.error?.message || `The server answered ${xhr.status}.`));
    };
    xhr.onerror = () => reject(new Error("Could not reach the server."));
    xhr.onabort = () => reject(new Error("Removed."));
    const form = new FormData();
    form.append("file", file, file.name || "pasted.png");
    xhr.send(form);
  });
  return { done, abort: () => xhr.abort() };
}

// A sent message's files: images as thumbnails that open full size, others as downloads.
export function fileLinks(files) {
  return files.map((file) =>
    file.kind === "image"
      ? el("a", { class: "attachment-image", href: file.url, target: "_blank", rel: "noopener" }, [
          el("img", {
            src: file.url,
            alt: file.name,
            loading: "lazy",
            width: file.width,
            height: file.height,
          }),
        ])
      : el("a", { class: "attachment-file", href: file.url, download: file.name }, [
          el("span", { class: "attachment-name", text: file.name }),
          el("span", { class: "attachment-size", text: formatSize(file.size) }),
        ]),
  );
}

export class AttachmentTray {
  // elements: {tray, input, button, dropTarget, textarea}; limits: {maxBytes, perMessage};
  // hooks: {announce(text), changed()}.
  constructor({ elements, limits, hooks }) {
    this.els = elements;
    this.limits = limits;
    this.hooks = hooks;
    this.items = [];
    elements.input.accept = ACCEPT;
    elements.button.addEventListener("click", () => elements.input.click());
    elements.input.addEventListener("change", () => {
      this.add([...elements.input.files]);
      elements.input.value = "";
    });
    elements.textarea.addEventListener("paste", (event) => {
      const files = [...(event.clipboardData?.files ?? [])];
      if (!files.length) return;
      event.preventDefault(); // the screenshot, not its name as text
      this.add(files);
    });
    const target = elements.dropTarget;
    target.addEventListener("dragover", (event) => {
      if (![...(event.dataTransfer?.types ?? [])].includes("Files")) return;
      event.preventDefault();
      target.classList.add("dropping");
    });
    target.addEventListener("dragleave", (event) => {
      if (!target.contains(event.relatedTarget)) target.classList.remove("dropping");
    });
    target.addEventListener("drop", (event) => {
      target.classList.remove("dropping");
      const files = [...(event.dataTransfer?.files ?? [])];
      if (!files.length) return;
      event.preventDefault();
      this.add(files);
    });
  }

  // The uploaded files, in order, as the API described them.
  files() {
    return this.items.filter((item) => item.data).map((item) => item.data);
  }

  uploading() {
    return this.items.some((item) => !item.data && !item.refused);
  }

  add(files) {
    for (const file of files) {
      const count = this.items.filter((item) => !item.refused).length;
      const refusal = refusalOf(file, this.limits, count);
      const preview = file.type.startsWith("image/") ? URL.createObjectURL(file) : null;
      const item = this.chip(file.name || "pasted image", file.size, preview);
      if (refusal) {
        this.refuse(item, refusal);
        continue;
      }
      const sending = upload(file, (share) => {
        item.progress.value = share;
      });
      item.abort = sending.abort;
      sending.done.then(
        (data) => {
          item.data = data;
          item.progress.hidden = true;
          item.node.classList.remove("uploading");
          this.hooks.announce(`${data.name} attached.`);
          this.hooks.changed();
        },
        (error) => {
          if (this.items.includes(item)) this.refuse(item, error.message);
        },
      );
    }
    this.hooks.changed();
  }

  // Files already uploaded, back in the tray (a refused message put back to edit).
  restore(files) {
    for (const data of files) {
      const item = this.chip(data.name, data.size, data.kind === "image" ? data.url : null);
      item.data = data;
      item.progress.hidden = true;
      item.node.classList.remove("uploading");
    }
    this.hooks.changed();
  }

  clear() {
    for (const item of [...this.items]) this.remove(item, { quietly: true });
    this.hooks.changed();
  }

  chip(name, size, preview) {
    const item = { data: null, refused: false, abort: null, preview };
    item.progress = el("progress", {
      class: "attachment-progress",
      max: "1",
      value: "0",
      "aria-label": `Uploading ${name}`,
    });
    item.reason = el("p", { class: "attachment-refusal", role: "alert", hidden: true });
    const thumb = preview
      ? el("img", { class: "attachment-thumb", src: preview, alt: "" })
      : el("span", { class: "attachment-thumb attachment-icon", "aria-hidden": "true", text: "📄" });
    item.node = el("li", { class: "attachment uploading" }, [
      thumb,
      el("span", { class: "attachment-label" }, [
        el("span", { class: "attachment-name", text: name }),
        el("span", { class: "attachment-size", text: formatSize(size) }),
      ]),
      item.progress,
      el("button", {
        type: "button",
        class: "attachment-remove",
        "aria-label": `Remove ${name}`,
        text: "✕",
        onclick: () => this.remove(item),
      }),
      item.reason,
    ]);
    this.items.push(item);
    this.els.tray.append(item.node);
    this.els.tray.hidden = false;
    return item;
  }

  refuse(item, reason) {
    item.refused = true;
    item.node.classList.remove("uploading");
    item.node.classList.add("refused");
    item.progress.hidden = true;
    item.reason.textContent = reason;
    item.reason.hidden = false;
    this.hooks.announce(`Not attached: ${reason}`);
    this.hooks.changed();
  }

  remove(item, { quietly = false } = {}) {
    item.abort?.();
    if (item.preview?.startsWith("blob:")) URL.revokeObjectURL(item.preview);
    item.node.remove();
    this.items = this.items.filter((other) => other !== item);
    this.els.tray.hidden = this.items.length === 0;
    if (!quietly) this.hooks.changed();
  }
}
