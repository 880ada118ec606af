// aiohttp-upgrade chat client: plain JavaScript, no build step.
//
// One WebSocket to /ws. The session cookie authenticates it (the browser sends it
// with the handshake), so nothing secret lives in this script. After a drop the
// client reconnects with exponential backoff and re-joins the room it was in,
// giving the position of the last frame it saw in that room: the server replays
// what was published meanwhile (once, in order) and answers "resumed", or, when
// it cannot, "joined" with the room's history. Messages are merged by id, so a
// message seen live and again in history shows once.
"use strict";

const DEFAULT_ROOMS = ["general", "random"];
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 30000;
const SIGNED_OUT = 4001; // close code the server uses when the session ends
const POLICY_VIOLATION = 1008; // too many messages or connections: say why

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"),
  me: $("me-name"),
  roomName: $("room-name"),
  roomList: $("room-list"),
  roomForm: $("room-form"),
  roomInput: $("room-input"),
  memberList: $("member-list"),
  memberCount: $("member-count"),
  messages: $("messages"),
  messageList: $("message-list"),
  empty: $("empty"),
  notice: $("notice"),
  composer: $("composer"),
  text: $("text"),
  send: $("send"),
};

const state = {
  me: null,
  socket: null,
  attempts: 0,
  retryTimer: null,
  countdownTimer: null,
  leaving: false, // set once this page is being replaced: no more redirects or retries
  room: roomFromHash() || DEFAULT_ROOMS[0],
  rooms: new Map(), // room -> {messages: Map(id -> message), members: Map(id -> user), unread: number, position: string|null}
};

// Positions are "<epoch>:<offset>"; a later frame of the same epoch moves the
// room's position forward, a frame of another epoch replaces it.
function notePosition(entry, position) {
  if (typeof position !== "string") return;
  const [epoch, offset] = position.split(":");
  if (entry.position) {
    const [knownEpoch, knownOffset] = entry.position.split(":");
    if (knownEpoch === epoch && Number(knownOffset) >= Number(offset)) return;
  }
  entry.position = position;
}

function joinFrame(room) {
  const position = state.rooms.get(room)?.position;
  return position ? { type: "join", room, since: position } : { type: "join", room };
}

function roomFromHash() {
  // A link may carry any bytes after '#': a malformed escape such as "#%E0"
  // makes decodeURIComponent throw, and the page then opens the default room.
  let name;
  try {
    name = decodeURIComponent(location.hash.slice(1));
  } catch {
    return null;
  }
  return /^[a-z0-9][a-z0-9-]{0,31}$/.test(name) ? name : null;
}

function roomState(room) {
  let entry = state.rooms.get(room);
  if (!entry) {
    entry = { messages: new Map(), members: new Map(), unread: 0, position: null };
    state.rooms.set(room, entry);
  }
  return entry;
}

// ---- connection -----------------------------------------------------------

function setStatus(kind, text) {
  ui.status.className = `status status-${kind}`;
  ui.status.textContent = text;
  document.body.dataset.connection = kind;
  const online = kind === "online";
  ui.text.disabled = !online;
  ui.send.disabled = !online;
}

function connect() {
  clearTimeout(state.retryTimer);
  clearInterval(state.countdownTimer);
  setStatus("connecting", "Connecting…");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}/ws`);
  let opened = false;
  state.socket = socket;

  socket.addEventListener("open", () => {
    opened = true;
    state.attempts = 0;
    setStatus("online", "Online");
    send(joinFrame(state.room));
  });
  socket.addEventListener("message", (event) => {
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    handle(frame);
  });
  socket.addEventListener("close", async (event) => {
    if (state.socket !== socket) return;
    state.socket = null;
    if (state.leaving) return;
    // Who is here is unknown while offline; the next join answer refills it.
    for (const entry of state.rooms.values()) entry.members.clear();
    renderMembers();
    if (event.code === POLICY_VIOLATION && event.reason) showNotice(`Disconnected: ${event.reason}.`);
    if (event.code === SIGNED_OUT) {
      location.assign("/");
      return;
    }
    // A browser does not reveal why a handshake failed; ask whether we are
    // still signed in before retrying, so an expired session goes to sign-in.
    if (!opened && !(await stillSignedIn())) {
      location.assign("/");
      return;
    }
    scheduleReconnect();
  });
}

async function stillSignedIn() {
  try {
    const response = await fetch("/api/me", { cache: "no-store" });
    return response.status !== 401;
  } catch {
    return true; // server unreachable: keep retrying
  }
}

function scheduleReconnect() {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** state.attempts);
  const delay = ceiling / 2 + Math.random() * (ceiling / 2); // jitter
  state.attempts += 1;
  const due = Date.now() + delay;
  const tick = () => {
    const seconds = Math.max(0, Math.ceil((due - Date.now()) / 1000));
    setStatus("offline", `Offline · retrying in ${seconds}s`);
  };
  tick();
  state.countdownTimer = setInterval(tick, 1000);
  state.retryTimer = setTimeout(connect, delay);
}

function send(frame) {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) {
    state.socket.send(JSON.stringify(frame));
    return true;
  }
  return false;
}

// Signing out (or leaving) navigates already; the socket closing must not race it.
document.querySelector(".sign-out").addEventListener("submit", () => { state.leaving = true; });
window.addEventListener("pagehide", () => { state.leaving = true; });

// Retry at once when the network comes back or the tab becomes visible.
window.addEventListener("online", () => { if (!state.socket) connect(); });
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && !state.socket) connect();
});

// ---- incoming frames ------------------------------------------------------

function handle(frame) {
  switch (frame.type) {
    case "hello":
      state.me = frame.user;
      ui.me.textContent = frame.user.name;
      break;
    case "joined":
    case "resumed": {
      const entry = roomState(frame.room);
      entry.members = new Map(frame.members.map((u) => [u.id, u]));
      if (frame.type === "joined") {
        for (const message of frame.history) entry.messages.set(message.id, message);
      }
      notePosition(entry, frame.position);
      document.body.dataset.recovery = frame.type;
      if (frame.room === state.room) render();
      break;
    }
    case "message": {
      const entry = roomState(frame.room);
      notePosition(entry, frame.position);
      entry.messages.set(frame.id, frame);
      if (frame.room === state.room) render();
      else { entry.unread += 1; renderRooms(); }
      break;
    }
    case "member_joined":
      notePosition(roomState(frame.room), frame.position);
      roomState(frame.room).members.set(frame.user.id, frame.user);
      if (frame.room === state.room) renderMembers();
      break;
    case "member_left":
      notePosition(roomState(frame.room), frame.position);
      roomState(frame.room).members.delete(frame.user.id);
      if (frame.room === state.room) renderMembers();
      break;
    case "error":
      showNotice(frame.message);
      break;
    default:
      break;
  }
}

// ---- rendering (textContent only: user text never becomes HTML) -----------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

function renderMessages() {
  const entry = roomState(state.room);
  const messages = [...entry.messages.values()].sort((a, b) => a.id - b.id);
  const nearBottom =
    ui.messages.scrollHeight - ui.messages.scrollTop - ui.messages.clientHeight < 80;
  ui.messageList.replaceChildren(
    ...messages.map((m) => {
      const item = el("li", "message");
      if (state.me && m.user.id === state.me.id) item.classList.add("mine");
      item.dataset.id = String(m.id);
      const meta = el("div", "meta");
      meta.append(el("span", "author", m.user.name));
      const time = el("time", "time", timeFormat.format(new Date(m.created_at * 1000)));
      time.dateTime = new Date(m.created_at * 1000).toISOString();
      meta.append(time);
      item.append(meta, el("p", "text", m.text));
      return item;
    }),
  );
  ui.empty.hidden = messages.length > 0;
  if (nearBottom) ui.messages.scrollTop = ui.messages.scrollHeight;
}

function renderMembers() {
  const members = [...roomState(state.room).members.values()].sort((a, b) =>
    a.name.localeCompare(b.name),
  );
  ui.memberCount.textContent = String(members.length);
  ui.memberList.replaceChildren(...members.map((u) => el("li", "", u.name)));
}

function renderRooms() {
  const names = [...new Set([...DEFAULT_ROOMS, ...state.rooms.keys(), state.room])];
  ui.roomList.replaceChildren(
    ...names.map((name) => {
      const item = el("li");
      const button = el("button", "", `#${name}`);
      button.type = "button";
      button.dataset.room = name;
      if (name === state.room) button.setAttribute("aria-current", "true");
      const unread = state.rooms.get(name)?.unread ?? 0;
      if (unread) button.append(el("span", "unread", String(unread)));
      button.addEventListener("click", () => switchRoom(name));
      item.append(button);
      return item;
    }),
  );
}

function render() {
  ui.roomName.textContent = state.room;
  ui.text.placeholder = `Message #${state.room}`;
  document.title = `#${state.room} · aiohttp-upgrade chat`;
  roomState(state.room).unread = 0;
  renderRooms();
  renderMembers();
  renderMessages();
}

let noticeTimer = null;
function showNotice(text) {
  ui.notice.textContent = text;
  ui.notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { ui.notice.hidden = true; }, 5000);
}

// ---- user actions ---------------------------------------------------------

function switchRoom(room) {
  if (room === state.room) return;
  send({ type: "leave", room: state.room });
  state.room = room;
  history.replaceState(null, "", `#${room}`);
  send(joinFrame(room));
  render();
  ui.text.focus();
}

ui.roomForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const room = ui.roomInput.value.trim().toLowerCase();
  if (!/^[a-z0-9][a-z0-9-]{0,31}$/.test(room)) {
    showNotice("Room names are 1-32 lowercase letters, digits or '-'.");
    return;
  }
  ui.roomInput.value = "";
  switchRoom(room);
});

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.text.value.trim();
  if (!text) return;
  // The message shows when the server echoes it back, i.e. once it is saved.
  if (send({ type: "message", room: state.room, text })) ui.text.value = "";
});

window.addEventListener("hashchange", () => {
  const room = roomFromHash();
  if (room) switchRoom(room);
});

render();
connect();
