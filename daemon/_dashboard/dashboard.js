// The dashboard: polls dashboard/data every 2 s and draws it with textContent and SVG
// elements only (nothing from a conversation is ever parsed as HTML).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  function el(tag, cls, text) {
    const n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined && text !== null) n.textContent = String(text);
    return n;
  }
  function bytes(n) {
    if (!n) return "0";
    const u = ["B", "KiB", "MiB", "GiB"]; let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return n.toFixed(i ? 1 : 0) + " " + u[i];
  }
  function chart(hours) {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "hours");
    svg.setAttribute("viewBox", "0 0 240 70");
    svg.setAttribute("role", "img");
    const max = Math.max(1, ...hours.map((h) => h.count));
    svg.setAttribute("aria-label", "messages per hour, last 24 hours, at most " + max);
    hours.forEach((h, i) => {
      const height = Math.round((h.count / max) * 50);
      const r = document.createElementNS(SVG, "rect");
      r.setAttribute("x", i * 10 + 1); r.setAttribute("width", 8);
      r.setAttribute("y", 55 - height); r.setAttribute("height", Math.max(height, h.count ? 1 : 0));
      const t = document.createElementNS(SVG, "title"); t.textContent = h.hour + ":00 " + h.count;
      r.appendChild(t); svg.appendChild(r);
      if (i % 3 === 0) {
        const label = document.createElementNS(SVG, "text");
        label.setAttribute("x", i * 10); label.setAttribute("y", 66); label.textContent = h.hour;
        svg.appendChild(label);
      }
    });
    return svg;
  }
  async function toggle(p) {
    const action = p.paused ? "resume" : "pause";
    await fetch("/dashboard/personas/" + encodeURIComponent(p.name) + "/" + action, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
      credentials: "same-origin",
    });
    refresh();
  }
  function list(title, items, render) {
    const box = el("div");
    box.appendChild(el("h4", "muted", title));
    const ul = el("ul");
    if (!items.length) ul.appendChild(el("li", "muted", "none"));
    items.forEach((i) => ul.appendChild(el("li", null, render(i))));
    box.appendChild(ul);
    return box;
  }
  function persona(p) {
    const card = el("article", "persona");
    card.dataset.persona = p.name;
    const h = el("h3", null, p.name);
    let state = p.online ? "online" : "offline" + (p.reason ? " (" + p.reason + ")" : "");
    if (!p.online && p.until) state += " until " + p.until;
    h.appendChild(el("span", "state " + (p.online ? "online" : "offline"), state));
    const btn = el("button", p.paused ? "resume" : "pause", p.paused ? "Resume" : "Pause");
    btn.type = "button";
    btn.addEventListener("click", () => toggle(p));
    h.appendChild(btn);
    card.appendChild(h);
    card.appendChild(el("p", "muted", p.messages_today + " messages today"));
    card.appendChild(chart(p.by_hour));
    const cols = el("div", "cols");
    cols.appendChild(list("Next", p.upcoming, (u) => u.at + " " + u.what));
    cols.appendChild(list("Conversations", p.conversations,
      (c) => c.where + " · " + c.at + " · " + c.author + ": " + c.text));
    card.appendChild(cols);
    return card;
  }
  function draw(d) {
    $("queue").textContent = d.queue;
    $("in-flight").textContent = d.in_flight;
    $("loaded").textContent = d.models.length + (d.loading.length ? " (+" + d.loading.length + " loading)" : "");
    const body = $("models").tBodies[0];
    body.replaceChildren();
    d.models.forEach((m) => {
      const tr = el("tr");
      [m.name, m.queued, m.running ? "yes" : "no",
       m.hit_rate === null ? "–" : Math.round(m.hit_rate * 100) + "% of " + m.lookups,
       bytes(m.kv_ram), bytes(m.kv_disk)].forEach((v) => tr.appendChild(el("td", null, v)));
      body.appendChild(tr);
    });
    $("errors").replaceChildren(...(d.errors.length ? d.errors.map(
      (e) => el("li", null, e.at + " " + e.where + ": " + e.message)) : [el("li", "muted", "none")]));
    $("personas").replaceChildren(...(d.personas.length ? d.personas.map(persona)
      : [el("p", "muted", "no personas run in this process")]));
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  }
  async function refresh() {
    try {
      const r = await fetch("/dashboard/data", { credentials: "same-origin", cache: "no-store" });
      if (r.ok) draw(await r.json());
      else $("updated").textContent = "refused (" + r.status + "): open /dashboard?key=YOUR_API_KEY";
    } catch (e) { $("updated").textContent = "daemon unreachable; retrying"; }
  }
  refresh();
  setInterval(refresh, 2000);
})();
