// Live dashboard over server-sent events: the watchlist's prices and sparklines, and the
// user's alerts. Rows are built with textContent only, so nothing from the stream is parsed
// as HTML. The watchlist section is swapped by htmx when it changes; the stream then
// reconnects for the new symbols, resuming the alerts where it was.
(function () {
  "use strict";

  const eventsUrl = document.body.dataset.events;
  if (!eventsUrl || !window.EventSource) return;

  const isAdmin = document.body.dataset.admin === "1";
  const alertsList = document.getElementById("alerts");
  const statusEl = document.getElementById("status");
  const MAX_ALERTS = 200;
  const RETRY_MS = 3000;
  const SPARK_POINTS = 61; // web/watchlist.py: SPARK_MINUTES + 1
  const SPARK_W = 100, SPARK_H = 24;

  const seen = new Set();
  alertsList.querySelectorAll("li[data-id]").forEach((li) => seen.add(li.dataset.id));
  let lastId = new URLSearchParams(eventsUrl.split("?")[1] || "").get("since");
  let source = null;
  let symsKey = "";

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

  function watchedSyms() {
    const section = document.getElementById("watchlist");
    try { return section ? JSON.parse(section.dataset.syms || "[]") : []; } catch (e) { return []; }
  }

  // Same arithmetic as web/watchlist.py spark_points.
  function sparkPoints(values) {
    if (values.length < 2) return "";
    const low = Math.min(...values), high = Math.max(...values);
    const span = (high - low) || 1;
    const step = SPARK_W / (values.length - 1);
    return values.map((v, i) =>
      (i * step).toFixed(1) + "," + (SPARK_H - 1 - (v - low) / span * (SPARK_H - 2)).toFixed(1)
    ).join(" ");
  }

  function updateSpark(row, bar) {
    if (!bar) return;
    let values;
    try { values = JSON.parse(row.dataset.spark || "[]"); } catch (e) { values = []; }
    const start = bar[0], close = bar[4];
    const lastStart = Number(row.dataset.sparkStart || 0);
    if (start > lastStart || values.length === 0) {
      values.push(close);
      row.dataset.sparkStart = String(start);
    } else if (start === lastStart) {
      values[values.length - 1] = close;
    } else {
      return; // an older bar than the one drawn
    }
    while (values.length > SPARK_POINTS) values.shift();
    row.dataset.spark = JSON.stringify(values);
    const line = row.querySelector(".spark polyline");
    if (line) line.setAttribute("points", sparkPoints(values));
  }

  function updateQuote(q) {
    const body = document.getElementById("quotes");
    const row = body && body.querySelector(`tr[data-sym="${CSS.escape(q.sym)}"]`);
    if (!row) return;
    row.querySelector(".ltp").textContent = q.ltp;
    const chg = row.querySelector(".chg");
    chg.textContent = q.chg_pct;
    chg.className = "num chg " + q.dir;
    row.querySelector(".time").textContent = q.time;
    updateSpark(row, q.bar);
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

  // A new EventSource sends no Last-Event-ID: the resume point travels in the URL.
  function streamUrl() {
    const params = new URLSearchParams();
    if (lastId) params.set("since", lastId);
    params.set("syms", watchedSyms().join(","));
    return "/events?" + params.toString();
  }

  function connect() {
    if (source) source.close();
    symsKey = watchedSyms().join(",");
    const current = new EventSource(streamUrl());
    source = current;
    current.onopen = () => setStatus("live", "live");
    current.addEventListener("quotes", (e) => JSON.parse(e.data).forEach(updateQuote));
    current.addEventListener("alert", (e) => addAlert(JSON.parse(e.data)));
    current.addEventListener("status", (e) => {
      const s = JSON.parse(e.data);
      if (s.redis === "down") setStatus("data store down", "down");
      else setStatus("live", "live");
    });
    current.onerror = () => {
      if (current !== source) return;
      if (current.readyState !== EventSource.CLOSED) {
        setStatus("reconnecting…", "down"); // the browser retries by itself with Last-Event-ID
        return;
      }
      // The server refused the stream: signed out, or unavailable for a moment.
      setStatus("offline", "down");
      fetch("/api/alerts?limit=1", { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then((r) => {
          if (r.status === 401) { window.location.assign("/login"); return; }
          setTimeout(connect, RETRY_MS);
        })
        .catch(() => setTimeout(connect, RETRY_MS));
    };
  }

  // The watchlist was swapped (a symbol added or removed): follow the new symbols.
  document.body.addEventListener("htmx:afterSwap", () => {
    if (watchedSyms().join(",") !== symsKey) connect();
  });

  connect();
})();
