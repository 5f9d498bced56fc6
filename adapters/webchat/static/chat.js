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
    invalid_attachment: "Not sent: the file is no longer available.",
  };
  const UPLOAD_ERRORS = {
    401: "Not sent: please reload the page.",
    408: "Not sent: the upload took too long.",
    413: "Not sent: the file is too large.",
    429: "You're sending files too fast — please wait a moment.",
  };

  const byId = (id) => document.getElementById(id);
  const log = byId("log");
  const form = byId("composer");
  const input = byId("text");
  const statusLine = byId("status");
  const typing = byId("typing");
  const picker = byId("file");
  const attach = byId("attach");

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
  // An upload cut short by a reload is not coming back: say so.
  for (const entry of own) {
    if (entry.state === "uploading") {
      entry.state = "failed";
      entry.error = "Not sent: the upload was interrupted.";
    }
  }
  const shown = new Map(); // own message id -> its <li>
  const previews = new Map(); // own message id -> an object URL of the image sent (this page only)

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

  // One attachment of a bot's payload (normalised by the bridge as "files"): an image, a
  // player, or a download link, with its caption.
  function renderFile(file) {
    if (!file || typeof file !== "object") return null;
    const src = httpUrl(file.url);
    if (!src) return null;
    const label = isText(file.label) ? file.label : src;
    const box = make("figure", `attachment ${file.kind}`);
    let media;
    if (file.kind === "image") {
      media = make("img");
      media.alt = isText(file.caption) ? file.caption : label;
      media.addEventListener("load", scrollDown);
    } else if (file.kind === "audio" || file.kind === "video") {
      media = make(file.kind);
      media.controls = true;
      media.preload = "metadata";
      media.setAttribute("aria-label", label);
    } else {
      media = make("a", "file-link", label);
      media.href = src;
      media.download = label;
      media.target = "_blank";
      media.rel = "noopener noreferrer";
    }
    if (media.tagName !== "A") media.src = src;
    box.appendChild(media);
    if (isText(file.caption)) box.appendChild(make("figcaption", "", file.caption));
    return box;
  }

  function renderElement(item, element) {
    if (!element || typeof element !== "object") return;
    if (element.type === "text" && isText(element.content)) {
      item.appendChild(make("p", "bubble", element.content));
    } else if (element.type === "cross_card") {
      item.appendChild(renderCard(element));
    } else if (element.type === "payload") {
      for (const file of Array.isArray(element.files) ? element.files : []) {
        const node = renderFile(file);
        if (node) item.appendChild(node);
      }
      if (Array.isArray(element.chips) && element.chips.length) {
        item.appendChild(renderChips(element.chips));
      }
    }
  }

  function disableChips() {
    for (const button of log.querySelectorAll(".chips button")) button.disabled = true;
  }

  function updateOwn(entry) {
    const item = shown.get(entry.id);
    if (!item) return;
    item.classList.toggle("pending", entry.state === "pending" || entry.state === "uploading");
    item.classList.toggle("failed", entry.state === "failed");
    const meta = item.querySelector(".meta");
    if (!meta) return;
    if (entry.state === "uploading") meta.textContent = "Uploading…";
    else if (entry.state === "pending") meta.textContent = "Sending…";
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
      for (const file of Array.isArray(entry.files) ? entry.files : []) {
        const preview = previews.get(entry.id);
        const box = make("figure", "attachment");
        if (preview) {
          const img = make("img");
          img.alt = String(file.name);
          img.addEventListener("load", scrollDown);
          img.src = preview;
          box.appendChild(img);
        } else {
          box.appendChild(make("span", "file-link", String(file.name)));
        }
        item.appendChild(box);
      }
      if (isText(entry.text)) item.appendChild(make("p", "bubble", String(entry.text)));
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
    if (entry.kind === "message" && Array.isArray(entry.attachments)) {
      return { type: "message", id: entry.id, text: entry.value, attachments: entry.attachments };
    }
    if (entry.kind === "message") return { type: "message", id: entry.id, text: entry.value };
    if (entry.kind === "button") return { type: "button", id: entry.id, value: entry.value };
    return { type: "restart", id: entry.id };
  }

  function transmit(entry) {
    if (entry.state !== "pending") return; // an upload still under way sends itself
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

  // A file: uploaded first (the text typed so far is its caption), then sent as a message
  // naming the upload.
  async function sendFile(file) {
    const caption = input.value.trim() ? input.value : "";
    input.value = "";
    const afterSeq = synced ? lastSeq : null;
    const files = [{ name: file.name || "file", type: file.type || "" }];
    const entry = { id: randomId(), kind: "message", text: caption, value: caption, files };
    entry.afterSeq = afterSeq;
    entry.state = "uploading";
    if (file.type.startsWith("image/")) previews.set(entry.id, URL.createObjectURL(file));
    own.push(entry);
    saveOwn();
    renderOwn(entry);
    scrollDown();
    let failure = "Not sent: the upload failed.";
    try {
      if (!identity) throw new Error("no identity yet");
      const body = new FormData();
      body.append("file", file, file.name || "file");
      const response = await fetch(new URL("upload", location.href), {
        method: "POST",
        headers: { "X-Webchat-User": identity.user, "X-Webchat-Token": identity.token },
        body,
      });
      if (!response.ok) {
        failure = UPLOAD_ERRORS[response.status] || failure;
        throw new Error(`upload answered ${response.status}`);
      }
      const answer = await response.json();
      if (!answer || !isText(answer.id)) throw new Error("upload gave no id");
      entry.attachments = [answer.id];
    } catch (error) {
      settle(entry.id, "failed", failure);
      return;
    }
    settle(entry.id, "pending");
    showTyping(TYPING_AFTER_SEND_MS);
    transmit(entry);
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
  attach.hidden = config.uploads === false;
  attach.addEventListener("click", () => picker.click());
  picker.addEventListener("change", () => {
    const file = picker.files && picker.files[0];
    picker.value = "";
    if (file) sendFile(file);
  });

  connect();
})();
