// The symbol page: one-minute candles (lightweight-charts), the user's rule levels as price
// lines and the user's alerts as markers, kept live from /events?syms=SYM. The chart is
// exposed as window.stormChart for tests and the console.
(function () {
  "use strict";

  const root = document.getElementById("chart");
  if (!root || !window.LightweightCharts) return;
  const LC = window.LightweightCharts;
  const data = JSON.parse(root.dataset.chart);
  const statusEl = document.getElementById("status");
  const IST_S = 19800; // the axis shows IST: times are shifted, as the library draws UTC
  // The price scale stretches to show the user's levels within this share of the candles'
  // price; levels further away (which would squash the candles flat) are listed below.
  const NEAR_LEVELS = 0.1;
  const RETRY_MS = 3000;
  const MAX_MARKERS = 200;

  function setStatus(text, cls) {
    if (!statusEl) return;
    statusEl.textContent = text;
    statusEl.className = "status " + (cls || "");
  }

  function css(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  const up = css("--up") || "#11804a", down = css("--down") || "#c0362c";
  const chart = LC.createChart(root, {
    autoSize: true,
    layout: {
      attributionLogo: false, // its injected <style> breaks the CSP: credited under the chart
      background: { type: "solid", color: css("--card") || "#ffffff" },
      textColor: css("--text") || "#1b1f24",
    },
    grid: { vertLines: { color: css("--line") }, horzLines: { color: css("--line") } },
    timeScale: { timeVisible: true, secondsVisible: false },
    rightPriceScale: { borderColor: css("--line") },
  });
  const levelPrices = data.levels.map((l) => l.price);

  // The candles' range, widened to the levels near it, so a trader sees how far the price
  // is from the levels their rules watch.
  function withLevels(original) {
    const res = original();
    if (res === null || !levelPrices.length) return res;
    const range = res.priceRange;
    const mid = (range.minValue + range.maxValue) / 2;
    let low = range.minValue, high = range.maxValue;
    levelPrices.forEach((p) => {
      if (Math.abs(p - mid) <= Math.abs(mid) * NEAR_LEVELS) {
        low = Math.min(low, p);
        high = Math.max(high, p);
      }
    });
    return { priceRange: { minValue: low, maxValue: high }, margins: res.margins };
  }

  const series = chart.addSeries(LC.CandlestickSeries, {
    upColor: up, downColor: down, borderVisible: false, wickUpColor: up, wickDownColor: down,
    autoscaleInfoProvider: withLevels,
  });

  function candle(bar) {
    return { time: bar[0] / 1000 + IST_S, open: bar[1], high: bar[2], low: bar[3], close: bar[4] };
  }

  const candles = data.bars.map(candle);
  if (data.open) candles.push(candle(data.open));
  series.setData(candles);
  let lastTime = candles.length ? candles[candles.length - 1].time : 0;
  document.getElementById("chart-empty").hidden = candles.length > 0;

  const levelColor = css("--accent") || "#2457d6";
  const priceLines = data.levels.map((l) => series.createPriceLine({
    price: l.price, color: levelColor, lineWidth: 1, axisLabelVisible: true,
    lineStyle: l.active ? LC.LineStyle.Dashed : LC.LineStyle.Dotted, title: l.title,
  }));

  function marker(ts, kind) {
    const minute = Math.floor(ts / 60000) * 60 + IST_S;
    return { time: minute, position: "aboveBar", color: levelColor, shape: "arrowDown", text: kind };
  }

  const markers = data.markers.map((m) => marker(m.ts, m.kind));
  const markersApi = LC.createSeriesMarkers(series, markers);
  chart.timeScale().scrollToRealTime();

  window.stormChart = { chart, series, priceLines, markers: markersApi };
  root.dataset.levels = String(priceLines.length);
  root.dataset.ready = "1";

  let rollover = null;
  // When a new minute starts, the previous bar's last seconds may not have reached us as a
  // quote: take its stored values once the engine has closed it.
  function settlePrevious() {
    fetch("/api/bars/" + encodeURIComponent(data.symbol) + "?minutes=2",
          { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then((r) => (r.ok ? r.json() : null))
      .then((body) => {
        if (!body) return;
        body.bars.forEach((b) => {
          const c = candle(b);
          if (c.time <= lastTime) series.update(c, c.time < lastTime);
        });
      })
      .catch(() => {});
  }

  function onQuote(q) {
    if (q.sym !== data.symbol) return;
    document.getElementById("sym-ltp").textContent = q.ltp;
    const chg = document.getElementById("sym-chg");
    chg.textContent = q.chg_pct;
    chg.className = "chg " + q.dir;
    if (!q.bar) return;
    const c = candle(q.bar);
    if (c.time < lastTime) return;
    if (c.time > lastTime && lastTime) {
      clearTimeout(rollover);
      rollover = setTimeout(settlePrevious, 1500);
    }
    series.update(c);
    lastTime = c.time;
    document.getElementById("chart-empty").hidden = true;
  }

  function onAlert(a) {
    if (a.sym !== data.symbol || a.user !== data.user) return;
    markers.push(marker(Date.parse(a.datetime), a.kind));
    markers.sort((x, y) => x.time - y.time);
    while (markers.length > MAX_MARKERS) markers.shift();
    markersApi.setMarkers(markers);
  }

  let lastId = new URLSearchParams(root.dataset.events.split("?")[1]).get("since");

  function connect() {
    const params = new URLSearchParams({ syms: data.symbol });
    if (lastId) params.set("since", lastId);
    const source = new EventSource("/events?" + params.toString());
    source.onopen = () => setStatus("live", "live");
    source.addEventListener("quotes", (e) => JSON.parse(e.data).forEach(onQuote));
    source.addEventListener("alert", (e) => {
      const a = JSON.parse(e.data);
      lastId = a.id;
      onAlert(a);
    });
    source.addEventListener("status", (e) => {
      const s = JSON.parse(e.data);
      setStatus(s.redis === "down" ? "data store down" : "live", s.redis === "down" ? "down" : "live");
    });
    source.onerror = () => {
      if (source.readyState !== EventSource.CLOSED) { setStatus("reconnecting…", "down"); return; }
      setStatus("offline", "down");
      fetch("/api/alerts?limit=1", { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then((r) => {
          if (r.status === 401) { window.location.assign("/login"); return; }
          setTimeout(connect, RETRY_MS);
        })
        .catch(() => setTimeout(connect, RETRY_MS));
    };
  }

  connect();
})();
