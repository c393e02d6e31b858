// Live dashboard updates over server-sent events: quotes and the user's alerts.
// Rows are built with textContent only, so nothing from the stream is parsed as HTML.
(function () {
  "use strict";

  const eventsUrl = document.body.dataset.events;
  if (!eventsUrl || !window.EventSource) return;

  const isAdmin = document.body.dataset.admin === "1";
  const quotesBody = document.getElementById("quotes");
  const alertsList = document.getElementById("alerts");
  const statusEl = document.getElementById("status");
  const MAX_ALERTS = 200;
  const RETRY_MS = 3000;

  const seen = new Set();
  alertsList.querySelectorAll("li[data-id]").forEach((li) => seen.add(li.dataset.id));
  let lastId = null; // newest alert entry id received, for a manual reconnect

  function setStatus(text, cls) {
    if (!statusEl) return;
    statusEl.textContent = text;
    statusEl.className = "status " + (cls || "");
  }

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function upsertQuote(q) {
    let row = quotesBody.querySelector(`tr[data-sym="${CSS.escape(q.sym)}"]`);
    if (!row) {
      row = el("tr");
      row.dataset.sym = q.sym;
      const th = el("th", "", q.sym);
      th.scope = "row";
      row.append(th, el("td", "num ltp"), el("td", "num chg"), el("td", "num vol"),
                 el("td", "num time"));
      const after = Array.from(quotesBody.rows).find((r) => r.dataset.sym > q.sym);
      quotesBody.insertBefore(row, after || null);
      document.getElementById("no-quotes").hidden = true;
    }
    row.querySelector(".ltp").textContent = q.ltp;
    const chg = row.querySelector(".chg");
    chg.textContent = q.chg_pct;
    chg.className = "num chg " + q.dir;
    row.querySelector(".vol").textContent = q.vol;
    row.querySelector(".time").textContent = q.time;
    row.classList.remove("flash");
    void row.offsetWidth; // restart the highlight animation
    row.classList.add("flash");
  }

  function alertItem(a) {
    const li = el("li", "alert new");
    li.dataset.id = a.id;
    const line = el("div", "line");
    const time = el("time", "", a.time);
    time.dateTime = a.datetime;
    const sym = el("a", "sym");
    sym.href = a.href; // built by the server: /alerts/<id>
    sym.append(el("strong", "", a.sym));
    line.append(time, sym, el("span", "kind", a.kind), el("span", "price", a.ltp));
    const meta = el("p", "meta");
    if (isAdmin) meta.append(el("span", "owner", a.user), " · ");
    meta.append("tick→alert ", el("span", "lat", a.latency_ms + " ms"));
    li.append(line, el("p", "msg", a.msg), meta);
    return li;
  }

  function addAlert(a) {
    lastId = a.id;
    if (seen.has(a.id)) return;
    seen.add(a.id);
    alertsList.prepend(alertItem(a));
    document.getElementById("no-alerts").hidden = true;
    while (alertsList.children.length > MAX_ALERTS) {
      seen.delete(alertsList.lastElementChild.dataset.id);
      alertsList.lastElementChild.remove();
    }
  }

  // A new EventSource sends no Last-Event-ID: carry the resume point in the URL instead.
  function resumeUrl() {
    return lastId ? "/events?since=" + encodeURIComponent(lastId) : eventsUrl;
  }

  function connect(url) {
    const source = new EventSource(url);
    source.onopen = () => setStatus("live", "live");
    source.addEventListener("quotes", (e) => JSON.parse(e.data).forEach(upsertQuote));
    source.addEventListener("alert", (e) => addAlert(JSON.parse(e.data)));
    source.addEventListener("status", (e) => {
      const s = JSON.parse(e.data);
      if (s.redis === "down") setStatus("data store down", "down");
      else setStatus("live", "live");
    });
    source.onerror = () => {
      if (source.readyState !== EventSource.CLOSED) {
        setStatus("reconnecting…", "down"); // the browser retries by itself with Last-Event-ID
        return;
      }
      // The server refused the stream: signed out, or unavailable for a moment.
      setStatus("offline", "down");
      if (source.lastEventId) lastId = source.lastEventId;
      fetch("/api/quotes", { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then((r) => {
          if (r.status === 401) { window.location.assign("/login"); return; }
          setTimeout(() => connect(resumeUrl()), RETRY_MS);
        })
        .catch(() => setTimeout(() => connect(resumeUrl()), RETRY_MS));
    };
  }

  connect(eventsUrl);
})();
