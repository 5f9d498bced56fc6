// The operator console: reads the admin API (bridge/admin/api.py) with the admin token the
// operator enters once (kept in sessionStorage: this tab only). Data from the API is only ever
// set as text, never as HTML; the charts are SVG built node by node. The agent inbox (#/agents)
// stays live on the handovers' event stream (bridge/admin/handovers.py), read with fetch:
// EventSource cannot send the token.
(() => {
  "use strict";

  const API = "api/"; // relative: the page is served at <prefix>/admin/
  const TOKEN_KEY = "parloa-bridge:admin:token";
  const AGENT_KEY = "parloa-bridge:agent:name"; // the agent's name: kept across sessions
  const REFRESH_PENDING_MS = 1500; // a timeline with pending work is read again this often
  const REFRESH_PENDING_LIMIT = 80; // ... at most this many times in a row
  const SVG = "http://www.w3.org/2000/svg";

  const byId = (id) => document.getElementById(id);
  const views = ["conversations", "conversation", "agents", "dead-letters", "overview"];
  const TITLES = {
    conversations: "Conversations",
    agents: "Agent inbox",
    conversation: "Conversation",
    "dead-letters": "Dead letters",
    overview: "Overview",
  };

  // --- token ---

  function getToken() {
    try {
      return window.sessionStorage.getItem(TOKEN_KEY);
    } catch (error) {
      return memoryToken;
    }
  }
  let memoryToken = null; // when sessionStorage is blocked
  function setToken(value) {
    memoryToken = value;
    try {
      if (value === null) window.sessionStorage.removeItem(TOKEN_KEY);
      else window.sessionStorage.setItem(TOKEN_KEY, value);
    } catch (error) {
      // blocked: the token lives as long as the page
    }
  }

  // --- the API ---

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function call(method, path, body, { raw = false, token = getToken() } = {}) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    const init = { method, headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(API + path, init);
    } catch (error) {
      throw new ApiError(0, "The bridge cannot be reached.");
    }
    if (!response.ok) {
      let reason = `${response.status} ${response.statusText}`.trim();
      try {
        const data = await response.json();
        if (data && typeof data.error === "string") reason = data.error;
        if (data && typeof data.detail === "string") reason += `: ${data.detail}`;
      } catch (error) {
        // not JSON: keep the status line
      }
      throw new ApiError(response.status, reason);
    }
    return raw ? response : response.json();
  }

  // Every view goes through here: a refused token asks for it again, a disabled API says so.
  // ``notFound`` handles a 404 that means "no such thing" (a conversation) rather than "no API".
  async function api(method, path, body, notFound) {
    try {
      return await call(method, path, body);
    } catch (error) {
      if (error.status === 401) {
        setToken(null);
        showLogin("The token was refused. Enter it again.");
      } else if (error.status === 404 && !notFound) {
        showDisabled();
      } else if (error.status === 404 && notFound) {
        notFound(error);
      } else {
        say(`Request failed: ${error.message}`, true);
      }
      throw error;
    }
  }

  // --- small helpers ---

  function make(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svg(tag, attributes, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  const isText = (value) => typeof value === "string" && value !== "";

  function epochMs(value) {
    if (typeof value === "number") return value * 1000;
    if (typeof value === "string") {
      const parsed = Date.parse(value);
      return Number.isNaN(parsed) ? null : parsed;
    }
    return null;
  }

  const pad = (n) => String(n).padStart(2, "0");

  function when(value) {
    const ms = epochMs(value);
    if (ms === null) return "—";
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function clock(value) {
    const ms = epochMs(value);
    if (ms === null) return "";
    const d = new Date(ms);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  function ms(value) {
    if (typeof value !== "number") return "—";
    return value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${Math.round(value)} ms`;
  }

  function badge(text, tone) {
    return make("span", tone ? `badge ${tone}` : "badge", text);
  }

  let noticeTimer = 0;
  function say(text, bad = false) {
    const notice = byId("notice");
    notice.textContent = text;
    notice.classList.toggle("bad", bad);
    clearTimeout(noticeTimer);
    if (!bad) noticeTimer = setTimeout(() => (notice.textContent = ""), 8000);
  }

  function query(params) {
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
    }
    const text = search.toString();
    return text ? `?${text}` : "";
  }

  // --- screens ---

  let refreshTimer = 0;
  function stopRefreshing() {
    clearTimeout(refreshTimer);
    refreshTimer = 0;
  }

  function hideAll() {
    stopRefreshing();
    byId("loading").hidden = true;
    byId("login").hidden = true;
    byId("disabled").hidden = true;
    for (const name of views) byId(`view-${name}`).hidden = true;
  }

  function showLogin(message) {
    hideAll();
    stopStream();
    byId("nav").hidden = true;
    byId("forget").hidden = true;
    byId("login").hidden = false;
    byId("login-error").textContent = message || "";
    byId("token").value = "";
    byId("token").focus();
  }

  function showDisabled() {
    hideAll();
    stopStream();
    byId("nav").hidden = true;
    byId("forget").hidden = true;
    byId("disabled").hidden = false;
    byId("disabled-title").focus();
  }

  function showView(name) {
    hideAll();
    byId("nav").hidden = false;
    byId("forget").hidden = false;
    byId(`view-${name}`).hidden = false;
    const current = name === "conversation" ? "conversations" : name;
    for (const link of byId("nav").querySelectorAll("a")) {
      if (link.dataset.view === current) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  function focusHeading(id) {
    const heading = byId(id);
    if (heading && document.activeElement !== heading) heading.focus({ preventScroll: true });
  }

  // --- routing: #/conversations?..., #/conversation/<id>, #/dead-letters?..., #/overview ---

  function route() {
    const hash = location.hash.replace(/^#\/?/, "");
    const [path, search = ""] = hash.split("?");
    const params = new URLSearchParams(search);
    const parts = path.split("/").filter(Boolean);
    if (parts[0] === "conversation" && /^\d+$/.test(parts[1] || "")) {
      return { view: "conversation", id: Number(parts[1]), params };
    }
    if (parts[0] === "agents") return { view: "agents", key: parts[1] ? decodeURIComponent(parts[1]) : null, params };
    if (parts[0] === "dead-letters") return { view: "dead-letters", params };
    if (parts[0] === "overview") return { view: "overview", params };
    return { view: "conversations", params };
  }

  let generation = 0; // a slow answer for a view left meanwhile is dropped
  async function render() {
    if (!getToken()) return start();
    const where = route();
    const mine = ++generation;
    const stale = () => mine !== generation;
    showView(where.view);
    document.title = `${TITLES[where.view]} — parloa-bridge console`;
    if (where.view !== "agents") stopStream();
    try {
      if (where.view === "conversation") await renderConversation(where.id, stale, true);
      else if (where.view === "agents") await renderAgents(where.key);
      else if (where.view === "dead-letters") await renderDeadLetters(where.params, stale);
      else if (where.view === "overview") await renderOverview(stale);
      else await renderConversations(where.params, stale);
    } catch (error) {
      if (!(error instanceof ApiError)) say(`The page failed: ${error.message}`, true);
    }
  }

  // --- channel names for the filters' suggestions ---

  const channelNames = new Set();
  function learnChannels(names) {
    let added = false;
    for (const name of names) {
      if (isText(name) && !channelNames.has(name)) {
        channelNames.add(name);
        added = true;
      }
    }
    if (!added) return;
    const list = byId("channel-names");
    list.replaceChildren(...[...channelNames].sort().map((name) => {
      const option = make("option");
      option.value = name;
      return option;
    }));
  }

  // --- view: conversations ---

  const FILTERS = ["user", "channel", "state", "dead"];

  async function renderConversations(params, stale) {
    for (const name of FILTERS) byId(`f-${name}`).value = params.get(name) || "";
    const filters = Object.fromEntries(FILTERS.map((name) => [name, params.get(name) || ""]));
    const cursor = params.get("cursor") || "";
    focusHeading("conversations-title");
    const data = await api("GET", `conversations${query({ ...filters, cursor, limit: 50 })}`);
    if (stale()) return;
    const rows = Array.isArray(data.conversations) ? data.conversations : [];
    learnChannels(rows.map((c) => c.channel));
    byId("conversations-rows").replaceChildren(...rows.map(conversationRow));
    byId("conversations-empty").hidden = rows.length > 0;
    const first = byId("first-page");
    first.hidden = !cursor;
    first.href = `#/conversations${query(filters)}`;
    const next = byId("next-page");
    next.hidden = !isText(data.next_cursor);
    next.href = `#/conversations${query({ ...filters, cursor: data.next_cursor })}`;
  }

  function conversationRow(c) {
    const row = make("tr");
    if (c.dead_letters > 0) row.className = "has-dead";
    const link = make("a", "", `#${c.id}`);
    link.href = `#/conversation/${c.id}`;
    const idCell = make("td");
    idCell.appendChild(link);
    const stateCell = make("td");
    stateCell.appendChild(badge(c.state, c.state === "active" ? "good" : ""));
    if (isText(c.end_reason)) stateCell.append(" ", make("span", "muted", c.end_reason));
    const deadCell = make("td", "num");
    deadCell.appendChild(c.dead_letters > 0 ? badge(String(c.dead_letters), "bad") : make("span", "", "0"));
    row.append(
      idCell,
      make("td", "", c.channel),
      make("td", "text", c.user || c.requester_id),
      stateCell,
      make("td", "", when(c.last_activity_at)),
      make("td", "num", c.pending ?? 0),
      deadCell,
    );
    return row;
  }

  byId("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    const values = Object.fromEntries(FILTERS.map((name) => [name, byId(`f-${name}`).value.trim()]));
    const target = `#/conversations${query(values)}`;
    if (location.hash === target) render();
    else location.hash = target;
  });
  byId("f-clear").addEventListener("click", () => {
    for (const name of FILTERS) byId(`f-${name}`).value = "";
    location.hash = "#/conversations";
  });

  // --- view: one conversation ---

  let shownConversation = null;

  async function renderConversation(id, stale, first, round = 0) {
    if (first) {
      byId("conversation-title").textContent = `Conversation #${id}`;
      byId("conversation-facts").replaceChildren();
      byId("timeline").replaceChildren();
      byId("timeline-empty").hidden = true;
      focusHeading("conversation-title");
    }
    shownConversation = id;
    const data = await api("GET", `conversations/${id}`, undefined, () => {
      byId("conversation-facts").replaceChildren();
      byId("timeline").replaceChildren();
      say(`Conversation #${id} does not exist (or was erased).`, true);
    });
    if (stale()) return;
    const conversation = data.conversation || {};
    learnChannels([conversation.channel]);
    renderFacts(conversation);
    const events = Array.isArray(data.events) ? data.events : [];
    const notices = Array.isArray(data.other_deliveries) ? data.other_deliveries : [];
    const handovers = Array.isArray(data.handovers) ? data.handovers : [];
    const items = [
      ...events.map((e) => ({ at: epochMs(e.created_at) ?? 0, order: e.id, node: () => eventItem(e) })),
      ...notices.map((d) => ({ at: epochMs(d.created_at) ?? 0, order: d.outbox_id, node: () => noticeItem(d) })),
      ...handovers.flatMap(handoverItems),
    ].sort((a, b) => a.at - b.at || a.order - b.order);
    byId("timeline").replaceChildren(...items.map((item) => item.node()));
    byId("timeline-empty").hidden = items.length > 0;
    // Work still in flight (an event being retried, a reply being delivered): read it again.
    const busy =
      events.some((e) => e.status === "pending" || (e.deliveries || []).some((d) => d.status === "pending")) ||
      notices.some((d) => d.status === "pending");
    stopRefreshing();
    if (busy && round < REFRESH_PENDING_LIMIT) {
      refreshTimer = setTimeout(() => {
        if (!stale()) renderConversation(id, stale, false, round + 1).catch(() => {});
      }, REFRESH_PENDING_MS);
    }
  }

  function renderFacts(c) {
    const facts = [
      ["Channel", c.channel],
      ["User", c.user || c.requester_id],
      ["Requester id", c.requester_id],
      ["Conversation key", c.conversation_key],
      ["State", c.state + (isText(c.end_reason) ? ` (${c.end_reason})` : "")],
      ["Parloa session", c.session_id || "—"],
      ["Last activity", when(c.last_activity_at)],
      ["Pending events", c.pending ?? 0],
      ["Dead letters", c.dead_letters ?? 0],
    ];
    const list = byId("conversation-facts");
    list.replaceChildren();
    for (const [term, value] of facts) list.append(make("dt", "", term), make("dd", "", value));
  }

  const KIND_NOTES = {
    start: "started the conversation",
    stop: "ended the conversation",
    restart: "restarted the conversation",
    idle: "the conversation went quiet (idle timeout)",
    unsupported: "sent something the bridge does not support",
  };
  // An agent's acts and the engine's handover timeout: not the user's, said as notes.
  const AGENT_NOTES = {
    agent_take: "An agent took the conversation",
    agent_resolve: "The agent resolved the handover",
    handover_timeout: "No agent took the handover in time",
  };

  function userMessage(e) {
    if (e.kind === "idle") return make("div", "msg note", KIND_NOTES.idle);
    if (e.kind === "agent") {
      const box = make("div", "msg agent");
      box.appendChild(make("span", "who", `Agent · ${when(e.created_at)}`));
      box.appendChild(make("p", "bubble", isText(e.text) ? e.text : "(no text)"));
      return box;
    }
    if (AGENT_NOTES[e.kind]) return make("div", "msg note", `${AGENT_NOTES[e.kind]} · ${when(e.created_at)}`);
    const box = make("div", "msg user");
    const kind = e.kind === "text" ? "" : ` · ${e.kind}`;
    box.appendChild(make("span", "who", `User${kind} · ${when(e.created_at)}`));
    if (isText(e.text)) {
      box.appendChild(make("p", "bubble", e.kind === "button" ? `▸ ${e.text}` : e.text));
    } else if (KIND_NOTES[e.kind]) {
      box.appendChild(make("p", "bubble", `(${KIND_NOTES[e.kind]})`));
    }
    const attachments = Array.isArray(e.attachments) ? e.attachments : [];
    if (attachments.length) {
      const list = make("ul", "attachment-list");
      list.setAttribute("aria-label", "Attachments");
      for (const a of attachments) list.appendChild(make("li", "", `📎 ${describeAttachment(a)}`));
      box.appendChild(list);
    }
    if (box.childNodes.length === 1) box.appendChild(make("p", "bubble", `(${e.kind})`));
    return box;
  }

  function describeAttachment(a) {
    if (!a || typeof a !== "object") return "attachment";
    if (a.type === "location") return `location ${a.latitude}, ${a.longitude}`;
    if (a.type === "contact") return `contact ${a.contact_name || ""} ${a.contact_phone || ""}`.trim();
    return [a.type, a.name, a.mime_type].filter(isText).join(" · ") || "attachment";
  }

  function chipLabel(chip) {
    if (typeof chip === "string" || typeof chip === "number") return String(chip);
    if (chip && typeof chip === "object") {
      for (const key of ["title", "label", "text", "name", "value"]) if (isText(chip[key])) return chip[key];
    }
    return null;
  }

  // One response element of Parloa, minimally: text, chips, cards; others by type.
  function renderElement(element) {
    if (!element || typeof element !== "object") return make("p", "bubble", String(element));
    if (element.type === "text") return make("p", "bubble", element.content ?? "");
    if (element.type === "cross_card") {
      const card = make("article", "card");
      if (isText(element.title)) card.appendChild(make("h3", "", element.title));
      if (isText(element.subtitle)) card.appendChild(make("p", "subtitle", element.subtitle));
      if (isText(element.content)) card.appendChild(make("p", "", element.content));
      const image = element.image && typeof element.image === "object" ? element.image : {};
      const variant = image.large || image.small;
      if (variant && isText(variant.url)) {
        const alt = image.accessibilityText || image.accessibility_text;
        card.appendChild(make("p", "image-link", `Image: ${isText(alt) ? `${alt} — ` : ""}${variant.url}`));
      }
      if (!card.childNodes.length) card.appendChild(make("p", "muted", "(empty card)"));
      return card;
    }
    if (element.type === "payload") {
      const content = element.content && typeof element.content === "object" ? element.content : {};
      const wrap = make("div", "payload");
      const chips = [];
      for (const key of ["suggestionChips", "quickReplies"]) {
        if (Array.isArray(content[key])) chips.push(...content[key].map(chipLabel).filter(isText));
      }
      if (chips.length) {
        const list = make("ul", "chips");
        list.setAttribute("aria-label", "Suggestions");
        for (const chip of chips) list.appendChild(make("li", "", chip));
        wrap.appendChild(list);
      }
      const files = Array.isArray(element.files) ? element.files : Array.isArray(content.attachments) ? content.attachments : [];
      for (const file of files) {
        if (file && typeof file === "object") {
          const label = file.caption || file.label || file.name || file.url || "file";
          wrap.appendChild(make("p", "bubble", `📎 ${file.kind || file.type || "file"}: ${label}`));
        }
      }
      const other = Object.keys(content).filter((k) => !["suggestionChips", "quickReplies", "attachments"].includes(k));
      if (other.length) wrap.appendChild(make("p", "who", `payload: ${other.join(", ")}`));
      if (!wrap.childNodes.length) wrap.appendChild(make("p", "who", "(empty payload)"));
      return wrap;
    }
    return make("p", "bubble", `(${element.type || "unknown"} element)`);
  }

  // A desk event (bridge/handover/events.py) delivered to the agents' desk, not to the user.
  const isDeskEvent = (element) => !!element && typeof element === "object" && typeof element.type === "string" && element.type.startsWith("handover.");
  const DESK_EVENTS = {
    "handover.started": "the handover",
    "handover.user_message": "the user's message",
    "handover.agent_message": "the agent's message",
    "handover.taken": "the take",
    "handover.ended": "the end",
  };

  function botMessages(delivery, who = "Bot") {
    const elements = Array.isArray(delivery.elements) ? delivery.elements : [];
    if (elements.length && elements.every(isDeskEvent)) {
      const what = elements.map((e) => DESK_EVENTS[e.type] || e.type).join(", ");
      const state = delivery.status === "sent" ? "" : ` · ${delivery.status}`;
      return make("div", "msg note desk", `To the agents' desk: ${what}${state}`);
    }
    const box = make("div", "msg bot");
    if (delivery.status === "failed") box.classList.add("undelivered");
    const state = delivery.status === "sent" ? "" : ` · ${delivery.status === "failed" ? "not delivered" : delivery.status}`;
    box.appendChild(make("span", "who", `${who} · ${when(delivery.finished_at || delivery.created_at)}${state}`));
    for (const element of elements) box.appendChild(renderElement(element));
    if (!elements.length) box.appendChild(make("p", "who", "(no elements)"));
    return box;
  }

  function callLine(call) {
    const ok = call.status === 200;
    const item = make("li", ok ? "call" : "call bad");
    const status = typeof call.status === "number" ? `HTTP ${call.status}` : String(call.status);
    const elements = typeof call.elements === "number" ? ` · ${call.elements} element${call.elements === 1 ? "" : "s"}` : "";
    item.appendChild(make("span", "", `${call.event} → ${status} · ${ms(call.latency_ms)}${elements}`));
    if (!ok) item.prepend(make("span", "visually-hidden", "Failed: "));
    const ids = [
      isText(call.request_id) ? `request ${call.request_id}` : "",
      isText(call.correlation_id) ? `correlation ${call.correlation_id}` : "",
      isText(call.session) ? `session ${call.session}` : "",
      call.at !== undefined ? when(call.at) : "",
    ].filter(isText);
    if (ids.length) item.append(make("br"), make("span", "ids", ids.join(" · ")));
    return item;
  }

  function deliveryLine(d) {
    const bad = d.status === "failed" || d.attempts > 1;
    const item = make("li", bad ? "delivery bad" : "delivery");
    const attempts = d.attempts > 1 ? ` · ${d.attempts} attempts` : "";
    const parts = typeof d.parts_done === "number" ? ` · ${d.parts_done} part${d.parts_done === 1 ? "" : "s"} sent` : "";
    item.appendChild(make("span", "", `#${d.outbox_id} ${d.status}${attempts}${parts}`));
    if (isText(d.platform_message_id)) item.append(make("br"), make("span", "ids", `message ${d.platform_message_id}`));
    if (isText(d.last_error)) item.append(make("br"), make("span", "error", d.last_error));
    return item;
  }

  function eventItem(e) {
    const dead = e.status === "dead";
    const calls = Array.isArray(e.parloa_calls) ? e.parloa_calls : [];
    const deliveries = Array.isArray(e.deliveries) ? e.deliveries : [];
    const failedCall = calls.some((c) => c.status !== 200);
    const item = make("li", "event");
    item.id = `event-${e.id}`;
    if (dead) item.classList.add("dead");

    const transcript = make("div", "transcript");
    transcript.appendChild(userMessage(e));
    // An agent's message reaches the user as a reply of its event: say so, it is not the bot's.
    for (const d of deliveries) transcript.appendChild(botMessages(d, e.kind === "agent" ? "To the user" : "Bot"));

    const trace = make("aside", "trace");
    trace.setAttribute("aria-label", `Processing of event ${e.id}`);
    const head = make("h3");
    head.appendChild(make("span", "", `Event ${e.id}`));
    const tone = dead ? "bad" : e.status === "pending" ? "warn" : "good";
    head.appendChild(badge(dead ? "dead letter" : e.status, tone));
    if (e.attempts > 1) head.appendChild(badge(`${e.attempts} attempts`, "warn"));
    if (failedCall && !dead) head.appendChild(badge("retried", "warn"));
    trace.appendChild(head);
    trace.appendChild(make("div", "ids", `id ${e.event_id} · received ${when(e.created_at)}${e.finished_at ? ` · finished ${when(e.finished_at)}` : ""}`));
    if (isText(e.last_error)) trace.appendChild(make("p", "error", `Last error: ${e.last_error}`));

    trace.appendChild(make("p", "label", "Parloa calls"));
    if (calls.length) {
      const list = make("ul", "calls");
      for (const c of calls) list.appendChild(callLine(c));
      trace.appendChild(list);
    } else {
      trace.appendChild(make("p", "muted", "none recorded"));
    }
    if (deliveries.length) {
      trace.appendChild(make("p", "label", "Deliveries"));
      const list = make("ul", "deliveries");
      for (const d of deliveries) list.appendChild(deliveryLine(d));
      trace.appendChild(list);
    }
    if (dead) {
      const actions = make("div", "actions");
      const retry = make("button", "", "Retry");
      retry.type = "button";
      retry.setAttribute("aria-label", `Retry event ${e.id}`);
      retry.addEventListener("click", () => retryDead([e.id], retry));
      const discard = make("button", "danger", "Discard");
      discard.type = "button";
      discard.setAttribute("aria-label", `Discard event ${e.id}`);
      discard.addEventListener("click", () => discardDead([e.id], discard));
      actions.append(retry, discard);
      trace.appendChild(actions);
    }
    item.append(transcript, trace);
    return item;
  }

  // A handover in the timeline: where it started, and where it ended.
  function handoverItems(h) {
    if (!h || typeof h !== "object") return [];
    const items = [];
    const started = epochMs(h.started_at);
    if (started !== null) items.push({ at: started, order: -1, node: () => handoverItem(h, false) });
    const ended = epochMs(h.ended_at);
    if (ended !== null) items.push({ at: ended, order: Number.MAX_SAFE_INTEGER, node: () => handoverItem(h, true) });
    return items;
  }

  const OUTCOMES = {
    resolved: "resolved by the agent",
    timeout: "no agent took it in time",
    user_left: "the user left",
    idle: "nobody wrote for too long",
  };

  function handoverItem(h, end) {
    const item = make("li", end ? "event handover ended" : "event handover");
    item.id = `handover-${h.key}${end ? "-end" : ""}`;
    const body = make("div", "transcript");
    if (end) {
      const outcome = OUTCOMES[h.outcome] || h.outcome || "ended";
      body.appendChild(make("p", "handover-line", `Handover ended: ${outcome} · ${when(h.ended_at)}`));
    } else {
      body.appendChild(make("p", "handover-line", `Handed over to a person · ${when(h.started_at)}`));
      if (isText(h.reason)) body.appendChild(make("p", "muted", `Reason: ${h.reason}`));
      if (isText(h.taken_by)) body.appendChild(make("p", "muted", `Taken by ${h.taken_by} · ${when(h.taken_at)}`));
      else if (h.ended_at === null || h.ended_at === undefined) body.appendChild(make("p", "muted", "Waiting for an agent"));
    }
    const trace = make("aside", "trace");
    trace.setAttribute("aria-label", `Handover ${h.key}`);
    const head = make("h3");
    head.appendChild(make("span", "", "Handover"));
    head.appendChild(badge(h.state || "", h.state === "ended" ? "" : "warn"));
    trace.appendChild(head);
    if (h.desk === undefined || h.desk === "console") {
      const link = make("a", "ids", `id ${h.key}`);
      link.href = `#/agents/${encodeURIComponent(h.key)}`;
      trace.appendChild(link);
    } else {
      trace.appendChild(make("span", "ids", `id ${h.key} · desk ${h.desk}`));
    }
    item.append(body, trace);
    return item;
  }

  function noticeItem(d) {
    const item = make("li", "event notice-only");
    item.id = `delivery-${d.outbox_id}`;
    const transcript = make("div", "transcript");
    transcript.appendChild(botMessages(d));
    const trace = make("aside", "trace");
    trace.setAttribute("aria-label", `Delivery ${d.outbox_id}`);
    trace.appendChild(make("h3", "", "A notice of the bridge"));
    const list = make("ul", "deliveries");
    list.appendChild(deliveryLine(d));
    trace.appendChild(list);
    item.append(transcript, trace);
    return item;
  }

  byId("refresh-conversation").addEventListener("click", () => render());

  byId("download").addEventListener("click", async () => {
    const id = shownConversation;
    if (id === null) return;
    const button = byId("download");
    button.disabled = true;
    try {
      const response = await call("GET", `conversations/${id}/transcript`, undefined, { raw: true });
      const blob = new Blob([await response.text()], { type: "application/x-ndjson" });
      const url = URL.createObjectURL(blob);
      const link = make("a");
      link.href = url;
      link.download = `conversation-${id}.jsonl`;
      document.body.appendChild(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    } catch (error) {
      if (error.status === 401) {
        setToken(null);
        showLogin("The token was refused. Enter it again.");
      } else {
        say(`The transcript could not be downloaded: ${error.message}`, true);
      }
    } finally {
      button.disabled = false;
    }
  });

  // --- view: the agent inbox ---

  const STREAM_RETRY_MS = 2000; // until the stream says otherwise ("retry:")
  let stream = null; // the AbortController of the open event stream
  let streamTimer = 0;
  let streamRetry = STREAM_RETRY_MS;
  let selectedKey = null;
  let shownHandover = null; // the handover shown in detail, as last read
  let pendingReply = null; // a reply not known to be stored: sent again with the same event id

  function agentName() {
    try {
      return window.localStorage.getItem(AGENT_KEY) || "";
    } catch (error) {
      return byId("agent-name").value.trim();
    }
  }

  byId("agent-name").addEventListener("input", () => {
    try {
      window.localStorage.setItem(AGENT_KEY, byId("agent-name").value.trim());
    } catch (error) {
      // blocked: the name lives as long as the page
    }
  });
  byId("agent-bar").addEventListener("submit", (event) => event.preventDefault());
  byId("show-ended").addEventListener("change", () => refreshInbox());

  function setLive(state) {
    const live = byId("live");
    const labels = { live: "live", connecting: "connecting…", reconnecting: "reconnecting…", off: "not live" };
    live.textContent = labels[state] || state;
    live.className = state === "live" ? "badge good" : state === "off" ? "badge" : "badge warn";
  }

  function stopStream() {
    clearTimeout(streamTimer);
    streamTimer = 0;
    if (stream) stream.abort();
    stream = null;
  }

  function ensureStream() {
    if (!stream && !streamTimer) openStream();
  }

  // The event stream, read with fetch (the token goes in a header). "ready" and "changed"
  // both mean: read the inbox again (what changed while away is read then too).
  async function openStream() {
    streamTimer = 0;
    const controller = new AbortController();
    stream = controller;
    setLive(byId("live").textContent === "live" ? "reconnecting" : "connecting");
    let response;
    try {
      response = await fetch(`${API}handovers/events`, {
        headers: { Authorization: `Bearer ${getToken()}`, Accept: "text/event-stream" },
        cache: "no-store",
        credentials: "omit",
        signal: controller.signal,
      });
    } catch (error) {
      return streamEnded(controller);
    }
    if (response.status === 401) {
      stream = null;
      setToken(null);
      return showLogin("The token was refused. Enter it again.");
    }
    if (response.status === 404) {
      stream = null;
      setLive("off");
      return;
    }
    if (!response.ok || !response.body) return streamEnded(controller);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer = (buffer + value).replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          streamEvent(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (error) {
      // aborted, or the connection broke: reconnect below unless stopped
    }
    streamEnded(controller);
  }

  function streamEvent(block) {
    let name = "message";
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue; // a keep-alive comment
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") name = value;
      else if (field === "retry" && /^\d+$/.test(value)) streamRetry = Number(value);
    }
    if (name === "ready") setLive("live");
    if (name === "ready" || name === "changed") refreshInbox();
  }

  function streamEnded(controller) {
    if (stream !== controller) return; // stopped meanwhile
    stream = null;
    setLive("reconnecting");
    streamTimer = setTimeout(openStream, streamRetry);
  }

  async function renderAgents(key) {
    selectedKey = key;
    byId("agent-name").value = agentName();
    if (!key) focusHeading("agents-title");
    ensureStream();
    await refreshInbox();
  }

  // One read of the inbox at a time; a change announced meanwhile reads it once more after.
  let inboxBusy = false;
  let inboxAgain = false;
  async function refreshInbox() {
    if (inboxBusy) {
      inboxAgain = true;
      return;
    }
    inboxBusy = true;
    try {
      do {
        inboxAgain = false;
        if (route().view !== "agents") return;
        await loadInbox();
      } while (inboxAgain);
    } catch (error) {
      // said by api()
    } finally {
      inboxBusy = false;
    }
  }

  async function loadInbox() {
    const all = byId("show-ended").checked;
    const data = await api("GET", `handovers${query({ all: all ? 1 : "" })}`);
    if (route().view !== "agents") return;
    const enabled = data.enabled !== false;
    byId("agents-disabled").hidden = enabled;
    byId("inbox").hidden = !enabled;
    if (!enabled) {
      stopStream();
      setLive("off");
    }
    const rows = Array.isArray(data.handovers) ? data.handovers : [];
    byId("handover-list").replaceChildren(...rows.map(handoverRow));
    byId("handovers-empty").hidden = rows.length > 0;
    byId("handovers-empty").textContent = all ? "No handovers yet." : "Nobody is waiting for an agent.";
    countWaiting(all ? null : rows);
    if (selectedKey) await loadHandover(selectedKey);
    else showNoHandover();
  }

  function countWaiting(rows) {
    const count = byId("waiting-count");
    if (rows === null) return;
    const waiting = rows.filter((h) => h.state === "open").length;
    count.textContent = String(waiting);
    count.hidden = waiting === 0;
    count.setAttribute("aria-label", `${waiting} waiting`);
  }

  function userOf(h) {
    const c = h.conversation || {};
    return isText(c.user) ? `${c.user} on ${c.channel}` : `conversation #${h.conversation_id}`;
  }

  function stateBadge(h) {
    if (h.state === "open") return badge("waiting", "warn");
    if (h.state === "taken") return badge(isText(h.taken_by) ? `with ${h.taken_by}` : "taken", "good");
    return badge(OUTCOMES[h.outcome] ? `ended: ${h.outcome}` : "ended");
  }

  function handoverRow(h) {
    const row = make("li", "handover-item");
    row.dataset.key = h.key;
    const link = make("a");
    link.href = `#/agents/${encodeURIComponent(h.key)}`;
    if (h.key === selectedKey) link.setAttribute("aria-current", "true");
    link.appendChild(make("span", "handover-who", userOf(h)));
    link.appendChild(stateBadge(h));
    const details = [isText(h.reason) ? h.reason : "", `since ${when(h.started_at)}`].filter(isText);
    link.appendChild(make("span", "handover-why", details.join(" · ")));
    row.appendChild(link);
    return row;
  }

  function showNoHandover() {
    shownHandover = null;
    byId("handover").hidden = true;
    byId("handover-none").hidden = false;
  }

  async function loadHandover(key) {
    let missing = false;
    const data = await api("GET", `handovers/${encodeURIComponent(key)}`, undefined, () => {
      missing = true;
    }).catch((error) => {
      if (!missing) throw error;
      return null;
    });
    if (route().view !== "agents" || selectedKey !== key) return;
    if (data === null) {
      showNoHandover();
      say("That handover does not exist (or is not the console's).", true);
      return;
    }
    renderHandover(data);
  }

  function renderHandover(data) {
    const h = data.handover || {};
    const first = !shownHandover || shownHandover.key !== h.key;
    shownHandover = h;
    byId("handover-none").hidden = true;
    byId("handover").hidden = false;
    const c = data.conversation || {};
    byId("handover-title").textContent = `Handover · ${userOf({ ...h, conversation: c })}`;
    const facts = [
      ["State", h.state === "open" ? "waiting for an agent" : h.state === "taken" ? `taken by ${h.taken_by || "an agent"}` : `ended (${OUTCOMES[h.outcome] || h.outcome || "—"})`],
      ["Reason", h.reason || "—"],
      ["Queue", h.queue || "—"],
      ["Summary", h.summary || "—"],
      ["Bot", h.bot],
      ["Started", when(h.started_at)],
    ];
    const list = byId("handover-facts");
    list.replaceChildren();
    for (const [term, value] of facts) list.append(make("dt", "", term), make("dd", "", value));
    if (c.id !== undefined) {
      const link = make("a", "", `#${c.id}: the timeline`);
      link.href = `#/conversation/${c.id}`;
      const dd = make("dd");
      dd.appendChild(link);
      list.append(make("dt", "", "Conversation"), dd);
    }
    const turns = Array.isArray(data.transcript) ? data.transcript : [];
    byId("handover-transcript").replaceChildren(...turns.map((t) => turnLine(t, h)));
    const transcript = byId("handover-transcript");
    transcript.scrollTop = transcript.scrollHeight;
    const ended = h.state === "ended";
    byId("handover-ended").hidden = !ended;
    byId("handover-ended").textContent = ended ? `This handover has ended (${OUTCOMES[h.outcome] || h.outcome || "ended"}).` : "";
    byId("reply-text").disabled = ended;
    byId("reply-send").disabled = ended;
    byId("take").disabled = h.state !== "open";
    byId("resolve").disabled = ended;
    if (first) focusHeading("handover-title");
  }

  function turnLine(t, h) {
    const role = t.role === "user" ? "user" : t.role === "agent" ? "agent" : "bot";
    const item = make("li", `msg ${role}`);
    if ((epochMs(t.at) ?? 0) < (epochMs(h.started_at) ?? 0)) item.classList.add("before");
    const who = role === "user" ? "User" : role === "agent" ? "Agent" : "Bot";
    item.appendChild(make("span", "who", `${who} · ${when(t.at)}`));
    item.appendChild(make("p", "bubble", t.text));
    return item;
  }

  // An id the bridge deduplicates the act on (crypto.randomUUID needs a secure context).
  function newEventId() {
    const bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function needName() {
    const name = byId("agent-name").value.trim();
    if (name) return name;
    say("Enter your name first: the user sees it with your messages.", true);
    byId("agent-name").focus();
    return null;
  }

  async function act(what, body, button) {
    const key = shownHandover && shownHandover.key;
    if (!key) return false;
    if (button) button.disabled = true;
    try {
      await api("POST", `handovers/${encodeURIComponent(key)}/${what}`, body, (error) => say(error.message, true));
      return true;
    } catch (error) {
      return false; // said by api()
    } finally {
      if (button) button.disabled = false;
      refreshInbox();
    }
  }

  byId("reply-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = needName();
    const text = byId("reply-text").value.trim();
    if (!name || !text || !shownHandover) return;
    const key = shownHandover.key;
    // The same reply sent again after a failure keeps its id: the user gets it once.
    if (!pendingReply || pendingReply.key !== key || pendingReply.text !== text) {
      pendingReply = { key, text, eventId: newEventId() };
    }
    const sent = await act("message", { text, agent: { name }, event_id: pendingReply.eventId }, byId("reply-send"));
    if (sent) {
      pendingReply = null;
      byId("reply-text").value = "";
      byId("reply-text").focus();
    }
  });
  byId("reply-text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      byId("reply-form").requestSubmit();
    }
  });
  byId("take").addEventListener("click", async () => {
    const name = needName();
    if (name && (await act("take", { agent: { name } }, byId("take")))) say("You have taken the conversation.");
  });
  byId("resolve").addEventListener("click", async () => {
    const name = byId("agent-name").value.trim();
    const body = name ? { agent: { name } } : {};
    if (await act("resolve", body, byId("resolve"))) say("Resolved: the user is back with the bot.");
  });

  // --- dead letters: retry and discard, from a timeline or the list ---

  const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

  async function retryDead(ids, button) {
    if (button) button.disabled = true;
    try {
      const body = ids === "all" ? { all: true } : { ids };
      const data = await api("POST", "dead-letters/retry", body);
      say(`Retried ${plural(data.retried ?? 0, "dead letter", "dead letters")}.`);
      await render();
    } catch (error) {
      if (button) button.disabled = false;
    }
  }

  async function discardDead(ids, button) {
    const what = plural(ids.length, "dead letter", "dead letters");
    if (!window.confirm(`Discard ${what}? The user gets no answer to ${ids.length === 1 ? "it" : "them"}.`)) return;
    if (button) button.disabled = true;
    try {
      const data = await api("POST", "dead-letters/discard", { ids });
      say(`Discarded ${plural(data.discarded ?? 0, "dead letter", "dead letters")}.`);
      await render();
    } catch (error) {
      if (button) button.disabled = false;
    }
  }

  // --- view: dead letters ---

  async function renderDeadLetters(params, stale) {
    const channel = params.get("channel") || "";
    byId("d-channel").value = channel;
    focusHeading("dead-title");
    const data = await api("GET", `dead-letters${query({ channel, limit: 200 })}`);
    if (stale()) return;
    const rows = Array.isArray(data.dead_letters) ? data.dead_letters : [];
    learnChannels(rows.map((d) => d.channel));
    byId("dead-rows").replaceChildren(...rows.map(deadRow));
    byId("dead-empty").hidden = rows.length > 0;
    byId("retry-all").disabled = rows.length === 0;
  }

  function deadRow(e) {
    const row = make("tr");
    const link = make("a", "", `#${e.conversation_id}`);
    link.href = `#/conversation/${e.conversation_id}`;
    const conversationCell = make("td");
    conversationCell.appendChild(link);
    const text = isText(e.text) ? e.text : `(${e.kind})`;
    const actions = make("div", "row-actions");
    const retry = make("button", "small", "Retry");
    retry.type = "button";
    retry.setAttribute("aria-label", `Retry event ${e.id}`);
    retry.addEventListener("click", () => retryDead([e.id], retry));
    const discard = make("button", "small danger", "Discard");
    discard.type = "button";
    discard.setAttribute("aria-label", `Discard event ${e.id}`);
    discard.addEventListener("click", () => discardDead([e.id], discard));
    actions.append(retry, discard);
    const actionCell = make("td");
    actionCell.appendChild(actions);
    row.append(
      make("td", "", e.id),
      conversationCell,
      make("td", "", e.channel),
      make("td", "text", text),
      make("td", "num", e.attempts),
      make("td", "err", e.last_error || ""),
      make("td", "", when(e.created_at)),
      actionCell,
    );
    return row;
  }

  byId("dead-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    const target = `#/dead-letters${query({ channel: byId("d-channel").value.trim() })}`;
    if (location.hash === target) render();
    else location.hash = target;
  });
  byId("retry-all").addEventListener("click", () => {
    if (window.confirm("Retry every dead letter of every channel?")) retryDead("all", byId("retry-all"));
  });

  // --- view: overview ---

  async function renderOverview(stale) {
    focusHeading("overview-title");
    const data = await api("GET", "stats?minutes=60");
    if (stale()) return;
    const since = epochMs(data.since);
    const until = epochMs(data.until);
    byId("overview-range").textContent = `From ${when(data.since)} to ${when(data.until)}`;
    const minutes = perMinute(data.per_minute, since, until);
    drawChart(byId("chart-messages"), lineChart(minutes, [
      { key: "inbound", label: "Inbound", tone: 1 },
      { key: "answered", label: "Answered", tone: 2 },
    ], "Messages per minute"));
    drawChart(byId("chart-failures"), barChart(minutes, [
      { key: "dead", label: "Dead letters", tone: 3 },
      { key: "parloa_errors", label: "Parloa errors", tone: 4 },
    ], "Failures per minute"));
    const bots = data.bots && typeof data.bots === "object" ? data.bots : {};
    drawChart(byId("chart-latency"), latencyChart(bots));
    const channels = data.channels && typeof data.channels === "object" ? data.channels : {};
    learnChannels(Object.keys(channels));
    byId("channel-rows").replaceChildren(...Object.keys(channels).sort().map((name) => {
      const c = channels[name] || {};
      const row = make("tr");
      row.append(make("td", "", name), make("td", "num", c.inbound ?? 0), make("td", "num", c.answered ?? 0), make("td", "num", c.dead ?? 0));
      return row;
    }));
    byId("bot-rows").replaceChildren(...Object.keys(bots).sort().map((name) => {
      const b = bots[name] || {};
      const latency = b.latency_ms || {};
      const row = make("tr");
      row.append(
        make("td", "", name),
        make("td", "num", b.calls ?? 0),
        make("td", "num", b.errors ?? 0),
        make("td", "num", ms(latency.p50)),
        make("td", "num", ms(latency.p90)),
        make("td", "num", ms(latency.p99)),
      );
      return row;
    }));
  }

  // Every minute of the window, with zeros where the API has no row.
  function perMinute(rows, since, until) {
    const known = new Map();
    for (const row of Array.isArray(rows) ? rows : []) {
      const at = epochMs(row.minute);
      if (at !== null) known.set(Math.floor(at / 60000), row);
    }
    const keys = [...known.keys()];
    let from = since !== null ? Math.floor(since / 60000) : Math.min(...keys);
    let to = until !== null ? Math.floor(until / 60000) : Math.max(...keys);
    if (!Number.isFinite(from) || !Number.isFinite(to) || to < from) return [];
    if (to - from > 1440) from = to - 1440;
    const minutes = [];
    for (let m = from; m <= to; m += 1) {
      const row = known.get(m) || {};
      minutes.push({ at: m * 60000, row });
    }
    return minutes;
  }

  function drawChart(figure, parts) {
    for (const node of [...figure.childNodes]) if (node.nodeName.toLowerCase() !== "figcaption") node.remove();
    figure.append(...parts);
  }

  const W = 520;
  const H = 200;
  const PAD = { left: 40, right: 12, top: 12, bottom: 26 };

  function niceMax(value) {
    if (value <= 4) return 4;
    const step = 10 ** Math.floor(Math.log10(value));
    for (const f of [1, 2, 2.5, 5, 10]) if (f * step >= value) return f * step;
    return 10 * step;
  }

  function frame(title, description, max, minutes) {
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title}: ${description}` });
    root.appendChild(svg("title", {}, `${title}: ${description}`));
    const plotH = H - PAD.top - PAD.bottom;
    for (const f of [0, 0.5, 1]) {
      const y = PAD.top + plotH * (1 - f);
      root.appendChild(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: f === 0 ? "axis" : "gridline" }));
      const label = max * f;
      root.appendChild(svg("text", { x: PAD.left - 6, y: y + 4, "text-anchor": "end", class: "tick" }, Number.isInteger(label) ? label : label.toFixed(1)));
    }
    if (minutes.length) {
      const y = H - 8;
      root.appendChild(svg("text", { x: PAD.left, y, class: "tick" }, clock(minutes[0].at / 1000)));
      root.appendChild(svg("text", { x: W - PAD.right, y, "text-anchor": "end", class: "tick" }, clock(minutes[minutes.length - 1].at / 1000)));
    }
    return root;
  }

  function legend(series) {
    const list = make("ul", "legend");
    for (const s of series) {
      const item = make("li");
      item.append(make("span", `swatch s-${s.tone}`), s.total === undefined ? s.label : `${s.label}: ${s.total}`);
      list.appendChild(item);
    }
    return list;
  }

  function totals(minutes, series) {
    return series.map((s) => ({ ...s, total: minutes.reduce((sum, m) => sum + (Number(m.row[s.key]) || 0), 0) }));
  }

  function lineChart(minutes, series, title) {
    const withTotals = totals(minutes, series);
    const peak = Math.max(0, ...minutes.flatMap((m) => series.map((s) => Number(m.row[s.key]) || 0)));
    const max = niceMax(peak);
    const description = withTotals.map((s) => `${s.total} ${s.label.toLowerCase()}`).join(", ") + ` in ${minutes.length} minutes, at most ${peak} a minute`;
    const root = frame(title, description, max, minutes);
    const plotW = W - PAD.left - PAD.right;
    const plotH = H - PAD.top - PAD.bottom;
    const x = (i) => PAD.left + (minutes.length > 1 ? (plotW * i) / (minutes.length - 1) : plotW / 2);
    const y = (v) => PAD.top + plotH * (1 - v / max);
    for (const s of series) {
      const points = minutes.map((m, i) => `${x(i).toFixed(1)},${y(Number(m.row[s.key]) || 0).toFixed(1)}`);
      root.appendChild(svg("polyline", { points: points.join(" "), class: `line s-${s.tone}`, "data-series": s.key }));
    }
    return [root, legend(withTotals)];
  }

  function barChart(minutes, series, title) {
    const withTotals = totals(minutes, series);
    const peak = Math.max(0, ...minutes.map((m) => series.reduce((sum, s) => sum + (Number(m.row[s.key]) || 0), 0)));
    const max = niceMax(peak);
    const description = withTotals.map((s) => `${s.total} ${s.label.toLowerCase()}`).join(", ") + ` in ${minutes.length} minutes`;
    const root = frame(title, description, max, minutes);
    const plotW = W - PAD.left - PAD.right;
    const plotH = H - PAD.top - PAD.bottom;
    const slot = minutes.length ? plotW / minutes.length : plotW;
    const width = Math.max(1, slot * 0.8);
    minutes.forEach((m, i) => {
      let base = 0;
      for (const s of series) {
        const value = Number(m.row[s.key]) || 0;
        if (value > 0) {
          const top = PAD.top + plotH * (1 - (base + value) / max);
          const height = (plotH * value) / max;
          const bar = svg("rect", { x: (PAD.left + slot * i + (slot - width) / 2).toFixed(1), y: top.toFixed(1), width: width.toFixed(1), height: height.toFixed(1), class: `s-${s.tone}`, "data-series": s.key });
          bar.appendChild(svg("title", {}, `${clock(m.at / 1000)}: ${value} ${s.label.toLowerCase()}`));
          root.appendChild(bar);
          base += value;
        }
      }
    });
    if (peak === 0) root.appendChild(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty-chart" }, "No failures"));
    return [root, legend(withTotals)];
  }

  function latencyChart(bots) {
    const names = Object.keys(bots).sort();
    const keys = [
      { key: "p50", label: "p50", tone: 1 },
      { key: "p90", label: "p90", tone: 4 },
      { key: "p99", label: "p99", tone: 3 },
    ];
    const values = names.flatMap((n) => keys.map((k) => Number((bots[n].latency_ms || {})[k.key]) || 0));
    const max = niceMax(Math.max(0, ...values));
    const rowH = 18;
    const groupH = rowH * keys.length + 14;
    const left = 110;
    const height = Math.max(60, names.length * groupH + 30);
    const description = names.length
      ? names.map((n) => `${n}: ${keys.map((k) => `${k.label} ${ms((bots[n].latency_ms || {})[k.key])}`).join(", ")}`).join("; ")
      : "no Parloa calls";
    const root = svg("svg", { viewBox: `0 0 ${W} ${height}`, role: "img", "aria-label": `Parloa latency percentiles: ${description}` });
    root.appendChild(svg("title", {}, `Parloa latency percentiles: ${description}`));
    const plotW = W - left - 70;
    names.forEach((name, g) => {
      const top = 8 + g * groupH;
      root.appendChild(svg("text", { x: left - 8, y: top + rowH * 1.5 + 4, "text-anchor": "end", class: "tick" }, name.length > 16 ? `${name.slice(0, 15)}…` : name));
      keys.forEach((k, i) => {
        const value = Number((bots[name].latency_ms || {})[k.key]);
        const y = top + i * rowH;
        const w = Number.isFinite(value) && value > 0 ? (plotW * value) / max : 0;
        root.appendChild(svg("rect", { x: left, y: y + 2, width: Math.max(w, 1).toFixed(1), height: rowH - 5, class: `s-${k.tone}`, "data-series": k.key }));
        root.appendChild(svg("text", { x: left + w + 6, y: y + rowH - 5, class: "value-label" }, `${k.label} ${ms(Number.isFinite(value) ? value : undefined)}`));
      });
    });
    if (names.length) {
      const y = height - 8;
      root.appendChild(svg("line", { x1: left, x2: left + plotW, y1: height - 20, y2: height - 20, class: "axis" }));
      root.appendChild(svg("text", { x: left, y, class: "tick" }, "0"));
      root.appendChild(svg("text", { x: left + plotW, y, "text-anchor": "end", class: "tick" }, ms(max)));
    } else {
      root.appendChild(svg("text", { x: W / 2, y: height / 2, "text-anchor": "middle", class: "empty-chart" }, "No Parloa calls in the last hour"));
    }
    return [root, legend(keys)];
  }

  byId("refresh-overview").addEventListener("click", () => render());

  // --- sign in ---

  // Without a token the API says whether it exists: 401 (ask for the token) or 404 (disabled).
  async function start() {
    hideAll();
    byId("loading").hidden = false;
    if (getToken()) return render();
    try {
      await call("GET", "stats?minutes=1", undefined, { token: null });
      showLogin(""); // answered without a token: still ask, the API decides
    } catch (error) {
      if (error.status === 404) showDisabled();
      else if (error.status === 401) showLogin("");
      else showLogin(`The bridge did not answer as expected: ${error.message}`);
    }
  }

  byId("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = byId("token").value.trim();
    if (!token) return;
    try {
      await call("GET", "stats?minutes=1", undefined, { token });
    } catch (error) {
      if (error.status === 401) return showLogin("The token was refused.");
      if (error.status === 404) return showDisabled();
      byId("login-error").textContent = `The bridge did not answer as expected: ${error.message}`;
      return;
    }
    setToken(token);
    render();
  });

  byId("forget").addEventListener("click", () => {
    setToken(null);
    showLogin("");
  });

  window.addEventListener("hashchange", () => render());
  start();
})();
