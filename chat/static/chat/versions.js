// A conversation's turns and their versions, from the detail the API gives (pure, tested
// with `node --test`).
//
//   GET /api/conversations/<id>   messages: the current version of each message, each with
//                                 "version" (1-based), "versions", "previous_versions" and
//                                 "later_versions" (the other versions, oldest first)
//
// Regenerate and edit make a new version of the last turn: a user message and its reply
// together, so version k of the one goes with version k of the other. Only the current
// version is sent as context; on the last turn the page can choose which one that is
// (POST /api/messages/<id>/select), on earlier turns it can only show the others.

// Every version of one message, oldest first, and which one is current.
export function versionsOf(message) {
  const before = message.previous_versions ?? [];
  const after = message.later_versions ?? [];
  return { all: [...before, message, ...after], current: before.length };
}

// The detail's messages as turns: [{versions: [{user, reply}], current}]. A reply with no
// message before it (never written by this API, but possible in old data) is a turn of its
// own, and a message with no reply yet has reply null.
export function turnsOf(messages) {
  const turns = [];
  let open = null;
  for (const message of messages) {
    if (message.role === "user") {
      open = { user: versionsOf(message), reply: null };
      turns.push(open);
    } else if (message.role === "assistant") {
      if (open && open.reply === null) open.reply = versionsOf(message);
      else turns.push({ user: null, reply: versionsOf(message) });
      open = null;
    }
  }
  return turns.map(({ user, reply }) => {
    const count = Math.max(user?.all.length ?? 0, reply?.all.length ?? 0);
    const versions = [];
    for (let k = 0; k < count; k++) {
      versions.push({ user: pick(user, k), reply: pick(reply, k) });
    }
    return new TurnVersions(versions, reply?.current ?? user?.current ?? 0);
  });
}

function pick(side, k) {
  if (!side) return null;
  return side.all[Math.min(k, side.all.length - 1)];
}

// Which version of a turn is shown and which is current; what the ‹ › buttons may do.
export class TurnVersions {
  constructor(versions, current = versions.length - 1) {
    this.versions = versions;
    this.current = current;
    this.shown = current;
  }

  get count() {
    return this.versions.length;
  }

  get shownVersion() {
    return this.versions[this.shown];
  }

  get label() {
    return `${this.shown + 1}/${this.count}`;
  }

  get describe() {
    return `Version ${this.shown + 1} of ${this.count}`;
  }

  canStep(delta) {
    const to = this.shown + delta;
    return to >= 0 && to < this.count;
  }

  // Show the version `delta` away; false when there is none.
  step(delta) {
    if (!this.canStep(delta)) return false;
    this.shown += delta;
    return true;
  }

  // A new version (regenerate, edit): the newest, current and shown.
  add(version) {
    this.versions.push(version);
    this.current = this.versions.length - 1;
    this.shown = this.current;
    return this.current;
  }

  // A new version the server refused: it was never stored.
  dropNewest(previous) {
    this.versions.pop();
    this.current = previous;
    this.shown = previous;
  }

  // The server made the shown version the current one.
  chooseShown() {
    this.current = this.shown;
  }

  isShowingCurrent() {
    return this.shown === this.current;
  }
}
