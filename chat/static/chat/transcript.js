// The transcript's scrolling and contents: the page follows a reply only while the reader
// is at the bottom, so scrolling up to read is never undone by the next token.

const $ = (id) => document.getElementById(id);

export function nearBottom() {
  const t = $("transcript");
  return t.scrollHeight - t.scrollTop - t.clientHeight < 96;
}

export function keepBottom(wasNearBottom) {
  if (wasNearBottom) $("transcript").scrollTop = $("transcript").scrollHeight;
}

// Run a change to the transcript, staying at the bottom if the reader was there.
export function keepingBottom(change) {
  const bottom = nearBottom();
  const result = change();
  keepBottom(bottom);
  return result;
}

export function appendToTranscript(...items) {
  keepingBottom(() => {
    $("welcome").hidden = true;
    $("messages").append(...items);
  });
}

export function clearTranscript() {
  $("messages").replaceChildren();
  $("welcome").hidden = false;
}

export function scrollToEnd() {
  $("transcript").scrollTop = $("transcript").scrollHeight;
}

export function transcriptIsEmpty() {
  return $("messages").childElementCount === 0;
}
