// The web bridge's page. Everything shown is put in with textContent: nothing a visitor
// or the model wrote is ever parsed as HTML.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const list = $("messages"), typing = $("typing"), presence = $("presence");
  const nameForm = $("name-form"), sendForm = $("send-form"), input = $("text");
  const bubbles = new Map();
  let ws = null, you = null, persona = "", replyTo = null, typingTimer = null, ended = false;
  let maxChars = 2000;

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function scrollDown() { const m = list.parentElement; m.scrollTop = m.scrollHeight; }

  function showMessage(f) {
    const li = el("li", "msg");
    li.dataset.id = f.id;
    if (f.mine) li.classList.add("mine");
    if (!f.mine && f.author === you) li.classList.add("you");
    li.appendChild(el("span", "author", f.author));
    if (f.reply_to) {
      const q = f.reply_to.author ? f.reply_to.author + ": " + f.reply_to.text : f.reply_to.text;
      li.appendChild(el("span", "quote", q));
    }
    if (f.kind === "photo" || f.kind === "video" || f.kind === "file") {
      li.appendChild(el("span", "attachment", "[" + f.kind + ": " + f.text + "]"));
    } else {
      li.appendChild(el("span", "text", f.text));
    }
    const reacts = el("span", "reactions", (f.reactions || []).join(" "));
    li.appendChild(reacts);
    const btn = el("button", "reply-btn", "reply");
    btn.type = "button";
    btn.setAttribute("aria-label", "reply to " + f.author);
    btn.addEventListener("click", () => startReply(f));
    li.appendChild(btn);
    bubbles.set(f.id, reacts);
    list.appendChild(li);
    if (f.mine) hideTyping();
    scrollDown();
  }

  function showNotice(text) { list.appendChild(el("li", "notice", "— " + text + " —")); scrollDown(); }

  function hideTyping() { typing.hidden = true; clearTimeout(typingTimer); }

  function showTyping(who) {
    typing.textContent = who + " is typing…";
    typing.hidden = false;
    clearTimeout(typingTimer);
    typingTimer = setTimeout(hideTyping, 8000);
  }

  function showPresence(p) {
    presence.textContent = persona + " is " + p.label;
    presence.className = "presence " + p.state;
    presence.dataset.state = p.state;
    presence.dataset.reason = p.reason || "";
  }

  function startReply(f) {
    replyTo = f.id;
    const box = $("replying");
    box.firstElementChild.textContent = "replying to " + f.author + ": " + f.text.slice(0, 60);
    box.hidden = false;
    input.focus();
  }

  function cancelReply() { replyTo = null; $("replying").hidden = true; }

  const handlers = {
    hello(f) {
      you = f.you; persona = f.persona; maxChars = f.max_chars;
      document.title = f.title + " · personad";
      $("title").textContent = f.title;
      list.replaceChildren(); bubbles.clear();
      f.history.forEach(showMessage);
      showPresence(f.presence);
      nameForm.hidden = true; sendForm.hidden = false;
      localStorage.setItem("personad-name", you);
      input.focus();
    },
    name_refused(f) { $("name-error").textContent = f.text; nameForm.hidden = false; $("name").focus(); },
    message: showMessage,
    reaction(f) {
      const r = bubbles.get(f.id);
      if (r) r.textContent = (r.textContent ? r.textContent + " " : "") + f.emoji;
    },
    typing(f) { showTyping(f.who); },
    presence: showPresence,
    notice(f) { showNotice(f.text); },
    error(f) { $("error").textContent = f.text; },
    closed(f) { ended = true; $("closed").textContent = f.reason; $("closed").hidden = false; sendForm.hidden = true; },
  };

  function hello(name) { ws.send(JSON.stringify({ type: "hello", name: name })); }

  function connect() {
    const url = new URL("ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(url);
    ws.addEventListener("open", () => hello(localStorage.getItem("personad-name") || ""));
    ws.addEventListener("message", (e) => {
      const f = JSON.parse(e.data);
      const h = handlers[f.type];
      if (h) h(f);
    });
    ws.addEventListener("close", (e) => {
      if (ended) return;
      if (e.code === 4403) {
        handlers.closed({ reason: "this page may not open the chat (reload it, or ask for an invite)" });
        return;
      }
      presence.textContent = "reconnecting…";
      setTimeout(connect, 2000);
    });
  }

  nameForm.addEventListener("submit", (e) => {
    e.preventDefault();
    $("name-error").textContent = "";
    hello($("name").value);
  });

  sendForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    if (text.length > maxChars) { $("error").textContent = "the limit is " + maxChars + " characters"; return; }
    $("error").textContent = "";
    ws.send(JSON.stringify({ type: "say", text: text, reply_to: replyTo }));
    input.value = "";
    cancelReply();
    input.focus();
  });
  $("cancel-reply").addEventListener("click", cancelReply);

  connect();
})();
