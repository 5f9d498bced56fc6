// Embeds the web chat into any page with one tag:
//   <script src="<the bridge's public URL>/webchat/<channel>/embed.js" async></script>
// Optional attributes: data-label (the button's accessible name, default "Open chat").
// A floating button opens the chat page in a frame; the site's origin must be listed in the
// channel's allowed_origins for the frame to load.
(() => {
  "use strict";
  const script = document.currentScript;
  if (!script || !script.src || window.__parloaBridgeWebchat) return;
  window.__parloaBridgeWebchat = true;
  const pageUrl = new URL(".", script.src).href;
  const label = script.getAttribute("data-label") || "Open chat";

  function style(node, rules) {
    for (const [name, value] of Object.entries(rules)) node.style.setProperty(name, value);
  }

  const frame = document.createElement("iframe");
  frame.title = "Chat";
  frame.id = "parloa-bridge-webchat-frame";
  style(frame, {
    display: "none",
    position: "fixed", right: "20px", bottom: "90px", width: "min(380px, calc(100vw - 40px))",
    height: "min(600px, calc(100vh - 120px))", border: "0", "border-radius": "12px",
    "box-shadow": "0 8px 30px rgba(0,0,0,.25)", "z-index": "2147483646", background: "#fff",
  });

  // Icons as inline SVG (constant markup, no font or file needed): a speech bubble, a cross.
  const icon = (path) =>
    `<svg viewBox="0 0 24 24" width="28" height="28" aria-hidden="true" focusable="false">` +
    `<path fill="currentColor" d="${path}"/></svg>`;
  const CHAT = icon("M20 2H4a2 2 0 0 0-2 2v18l4-4h14a2 2 0 0 0 2-2V4a2 2 0 0 0-2-2z");
  const CLOSE = icon(
    "M19 6.41 17.59 5 12 10.59 6.41 5 5 6.41 10.59 12 5 17.59 6.41 19 12 13.41 17.59 19 " +
      "19 17.59 13.41 12z",
  );

  const button = document.createElement("button");
  button.type = "button";
  button.innerHTML = CHAT;
  button.setAttribute("aria-label", label);
  button.setAttribute("aria-expanded", "false");
  button.setAttribute("aria-controls", frame.id);
  style(button, {
    position: "fixed", right: "20px", bottom: "20px", width: "56px", height: "56px",
    "border-radius": "50%", border: "0", background: "#3b5bdb", color: "#fff", cursor: "pointer",
    display: "flex", "align-items": "center", "justify-content": "center",
    "box-shadow": "0 4px 14px rgba(0,0,0,.3)", "z-index": "2147483647",
  });

  button.addEventListener("click", () => {
    const open = frame.style.display === "none";
    if (open && !frame.src) frame.src = pageUrl; // loaded on first open only
    frame.style.display = open ? "block" : "none";
    button.setAttribute("aria-expanded", String(open));
    button.innerHTML = open ? CLOSE : CHAT;
    if (open) frame.focus();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && frame.style.display !== "none") {
      frame.style.display = "none";
      button.setAttribute("aria-expanded", "false");
      button.innerHTML = CHAT;
      button.focus();
    }
  });

  function mount() {
    document.body.appendChild(frame);
    document.body.appendChild(button);
  }
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
