// The web chat page: one WebSocket to the bridge speaking the protocol documented in
// adapters/webchat/channel.py. Bot content is only ever set as text, never as HTML.
(() => {
  "use strict";

  const config = JSON.parse(document.getElementById("webchat-config").textContent);
  const TYPING_AFTER_SEND_MS = 15000; // shown while an answer is awaited
  const TYPING_FRAME_MS = 6000; // the bridge refreshes a typing frame every 4 s
  const RESEND_MS = 3000; // after "unavailable": send the same frame again
  const MAX_KEPT = 200; // own messages kept to show them again after a reload
  const ERRORS = {
    text_too_long: `Not sent: longer than ${config.maxTextLength} characters.`,
    empty_text: "Not sent: the message is empty.",
    invalid_frame: "Not sent.",
    rate_limited: "You're sending messages too fast — please wait a moment.",
    slow_down: "Please wait for an answer before sending more.",
  };

  const byId = (id) => document.getElementById(id);
  const log = byId("log");
  const form = byId("composer");
  const input = byId("text");
  const statusLine = byId("status");
  const typing = byId("typing");

  // --- storage: the user id and the user's own messages survive a reload ---

  const prefix = `parloa-bridge:webchat:${config.channel}:`;
  const storage = (() => {
    try {
      window.localStorage.setItem(`${prefix}probe`, "1");
      window.localStorage.removeItem(`${prefix}probe`);
      return window.localStorage;
    } catch (error) {
      return null; // blocked (privacy settings): the chat works, a reload starts afresh
    }
  })();

  function load(key, fallback) {
    try {
      const raw = storage && storage.getItem(prefix + key);
      return raw === null || raw === undefined ? fallback : JSON.parse(raw);
    } catch (error) {
      return fallback;
    }
  }

  function save(key, value) {
    try {
      if (storage) storage.setItem(prefix + key, JSON.stringify(value));
    } catch (error) {
      // full or blocked: keep going without it
    }
  }

  function randomId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // The identity is issued and signed by the bridge (an "identity" frame answers a hello
  // without one); kept in localStorage, which works inside a cross-origin frame where
  // third-party cookies do not.
  let identity = load("identity", null);
  if (!identity || typeof identity.user !== "string" || typeof identity.token !== "string") {
    identity = null;
  }
  let greeted = load("greeted", false) === true; // the bot's welcome was asked for
  // {id, kind, text, value, afterSeq, state: pending|sent|failed, error}; afterSeq places an
  // own message after the bot message it answered when the history is shown again.
  let own = load("sent", []);
  own = Array.isArray(own) ? own.filter((e) => e && typeof e.id === "string") : [];
  const shown = new Map(); // own message id -> its <li>

  let socket = null;
  let ready = false;
  let synced = false; // the history was loaded once since the page opened
  let lastSeq = 0;
  let attempt = 0;
  let typingTimer = 0;
  let capped = false; // the last socket was refused: too many connections

  // --- rendering ---

  function make(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const isText = (value) => typeof value === "string" && value !== "";

  function httpUrl(value) {
    try {
      const url = new URL(value, location.href);
      return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
    } catch (error) {
      return null;
    }
  }

  function scrollDown() {
    log.scrollTop = log.scrollHeight;
  }

  function setStatus(text) {
    statusLine.textContent = text;
  }

  function showTyping(ms) {
    typing.hidden = false;
    clearTimeout(typingTimer);
    typingTimer = setTimeout(hideTyping, ms);
    scrollDown();
  }

  function hideTyping() {
    clearTimeout(typingTimer);
    typing.hidden = true;
  }

  function renderCard(card) {
    const box = make("article", "card");
    const image = card.image && typeof card.image === "object" ? card.image : {};
    const variant = image.large || image.small || {};
    const src = httpUrl(variant.url);
    if (src) {
      const img = make("img");
      img.alt = isText(image.accessibilityText) ? image.accessibilityText : "";
      const width = parseInt(variant.width, 10);
      const height = parseInt(variant.height, 10);
      if (width > 0 && height > 0) {
        img.width = width;
        img.height = height;
      }
      img.addEventListener("load", scrollDown);
      img.src = src;
      box.appendChild(img);
    }
    const body = make("div", "card-body");
    if (isText(card.title)) body.appendChild(make("h2", "", card.title));
    if (isText(card.subtitle)) body.appendChild(make("p", "subtitle", card.subtitle));
    if (isText(card.content)) body.appendChild(make("p", "content", card.content));
    if (body.childNodes.length) box.appendChild(body);
    return box;
  }

  function renderChips(chips) {
    const row = make("div", "chips");
    row.setAttribute("role", "group");
    row.setAttribute("aria-label", "Suggestions");
    for (const chip of chips) {
      if (!chip || !isText(chip.value)) continue;
      const button = make("button", "", isText(chip.title) ? chip.title : chip.value);
      button.type = "button";
      button.addEventListener("click", () => send("button", chip.value, button.textContent));
      row.appendChild(button);
    }
    return row;
  }

  function renderElement(item, element) {
    if (!element || typeof element !== "object") return;
    if (element.type === "text" && isText(element.content)) {
      item.appendChild(make("p", "bubble", element.content));
    } else if (element.type === "cross_card") {
      item.appendChild(renderCard(element));
    } else if (element.type === "payload" && Array.isArray(element.chips) && element.chips.length) {
      item.appendChild(renderChips(element.chips));
    }
  }

  function disableChips() {
    for (const button of log.querySelectorAll(".chips button")) button.disabled = true;
  }

  function updateOwn(entry) {
    const item = shown.get(entry.id);
    if (!item) return;
    item.classList.toggle("pending", entry.state === "pending");
    item.classList.toggle("failed", entry.state === "failed");
    const meta = item.querySelector(".meta");
    if (!meta) return;
    if (entry.state === "pending") meta.textContent = "Sending…";
    else if (entry.state === "failed") meta.textContent = entry.error || "Not sent.";
    else meta.textContent = "";
  }

  function renderOwn(entry) {
    if (shown.has(entry.id)) return;
    let item;
    if (entry.kind === "restart") {
      item = make("li", "note", "Conversation restarted");
    } else {
      item = make("li", "msg user");
      item.appendChild(make("p", "bubble", String(entry.text)));
      item.appendChild(make("span", "meta"));
    }
    log.appendChild(item);
    shown.set(entry.id, item);
    disableChips(); // the user answered: earlier suggestions are spent
    updateOwn(entry);
  }

  function showOwnBefore(seq) {
    for (const entry of own) {
      if (typeof entry.afterSeq === "number" && entry.afterSeq < seq) renderOwn(entry);
    }
  }

  // --- sending ---

  function frameFor(entry) {
    if (entry.kind === "message") return { type: "message", id: entry.id, text: entry.value };
    if (entry.kind === "button") return { type: "button", id: entry.id, value: entry.value };
    return { type: "restart", id: entry.id };
  }

  function transmit(entry) {
    if (ready && socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify(frameFor(entry)));
    }
  }

  function saveOwn() {
    while (own.length > MAX_KEPT && own[0].state !== "pending") own.shift();
    save("sent", own);
  }

  function send(kind, value, text) {
    // Typed before the history arrived: placed once it has (see "ready").
    const afterSeq = synced ? lastSeq : null;
    const entry = { id: randomId(), kind, text, value, afterSeq, state: "pending" };
    own.push(entry);
    saveOwn();
    renderOwn(entry);
    showTyping(TYPING_AFTER_SEND_MS);
    transmit(entry); // else sent once connected
  }

  function greet() {
    if (!greeted && ready && socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ type: "start", id: "start" }));
    }
  }

  function settle(id, state, error) {
    const entry = own.find((e) => e.id === id);
    if (!entry) return;
    entry.state = state;
    if (error) entry.error = error;
    saveOwn();
    updateOwn(entry);
  }

  // --- receiving ---

  function onMessage(frame) {
    if (typeof frame.seq !== "number" || frame.seq <= lastSeq || !Array.isArray(frame.elements)) {
      return; // already shown (another push of the same entry)
    }
    showOwnBefore(frame.seq);
    const item = make("li", "msg bot");
    for (const element of frame.elements) renderElement(item, element);
    if (item.childNodes.length) log.appendChild(item);
    lastSeq = frame.seq;
    hideTyping();
    scrollDown();
  }

  function onError(frame) {
    if (frame.id === "start") {
      if (frame.reason !== "identity_refused") setTimeout(greet, RESEND_MS);
      return;
    }
    if (frame.reason === "identity_refused") {
      // Not issued by this bridge (or its key changed): start afresh with a new identity.
      identity = null;
      greeted = false;
      own = [];
      save("identity", null);
      save("greeted", false);
      save("sent", own);
      log.textContent = "";
      shown.clear();
      lastSeq = 0;
      return;
    }
    if (frame.reason === "too_many_connections") {
      capped = true; // shown by the close that follows
      return;
    }
    if (frame.reason === "unavailable") {
      setTimeout(() => {
        const entry = own.find((e) => e.id === frame.id);
        if (entry && entry.state === "pending") transmit(entry);
      }, RESEND_MS);
      return;
    }
    if (isText(frame.id)) {
      settle(frame.id, "failed", ERRORS[frame.reason] || "Not sent.");
      hideTyping();
    }
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "message":
        onMessage(frame);
        break;
      case "identity":
        if (isText(frame.user) && isText(frame.token)) {
          identity = { user: frame.user, token: frame.token };
          greeted = false;
          save("identity", identity);
          save("greeted", false);
        }
        break;
      case "ready":
        ready = true;
        // A new user: the conversation starts, so the bot's welcome comes first. The server
        // turns every "start" of a user into one event, so a retry cannot greet twice.
        greet();
        synced = true;
        attempt = 0;
        setStatus("");
        for (const entry of own) {
          if (typeof entry.afterSeq !== "number") entry.afterSeq = lastSeq;
        }
        saveOwn();
        showOwnBefore(Infinity);
        for (const entry of own) if (entry.state === "pending") transmit(entry);
        scrollDown();
        break;
      case "ack":
        if (frame.id === "start") {
          greeted = true;
          save("greeted", true);
          showTyping(TYPING_AFTER_SEND_MS);
        }
        settle(frame.id, "sent");
        break;
      case "error":
        onError(frame);
        break;
      case "typing":
        showTyping(TYPING_FRAME_MS);
        break;
      default:
        break; // a newer server: ignore what this page does not know
    }
  }

  // --- the connection ---

  function scheduleReconnect() {
    const ceiling = Math.min(30000, 500 * 2 ** attempt);
    attempt += 1;
    setTimeout(connect, ceiling / 2 + (Math.random() * ceiling) / 2);
  }

  function connect() {
    const url = new URL("ws", location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    let ws;
    try {
      ws = new WebSocket(url.href);
    } catch (error) {
      scheduleReconnect();
      return;
    }
    socket = ws;
    ws.addEventListener("open", () => {
      const hello = { type: "hello", since: lastSeq, language: navigator.language };
      if (identity) {
        hello.user = identity.user;
        hello.token = identity.token;
      }
      ws.send(JSON.stringify(hello));
    });
    ws.addEventListener("message", (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      if (frame && typeof frame === "object") onFrame(frame);
    });
    ws.addEventListener("close", () => {
      if (socket !== ws) return;
      socket = null;
      ready = false;
      setStatus(
        capped
          ? "Too many open chats. Close one to continue here."
          : "Connection lost. Reconnecting…",
      );
      capped = false;
      scheduleReconnect(); // the server restarted or went away: another replica answers
    });
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value;
    if (!text.trim()) return;
    input.value = "";
    send("message", text, text);
    input.focus();
  });
  byId("restart").addEventListener("click", () => send("restart", "", ""));

  connect();
})();
