/* The staff dashboard: live figures from /ws/ops/dashboard/ (pushed every few seconds, the
 * deployment's totals), trends from the history endpoint, alerts and component status.
 * Every picture is InkwaveCharts.timeSeries (charts.js). No build step, no dependency. */
(function () {
  "use strict";

  var root = document.getElementById("dashboard");
  var LIVE_POINTS = 200; // kept in the browser for the live charts (10 minutes at 3 s)
  var charts = window.InkwaveCharts;
  // Starts with the moment the page opened (no values): a time axis from one point is years wide.
  var opened = Date.now() / 1000;
  var live = { times: [opened], connections: [null], p50: [null], p95: [null], p99: [null],
    messages: [null], httpAvg: [null], httpP95: [null] };
  var liveCharts = {};
  var frames = 0;
  var lastFrameAt = 0;

  function $(id) { return document.getElementById(id); }
  function text(id, value) { var el = $(id); if (el) el.textContent = value; }
  function num(value, digits) {
    if (value == null) return "–";
    return Number(value).toLocaleString(undefined, { maximumFractionDigits: digits == null ? 1 : digits });
  }
  function ms(value) { return value == null ? "–" : num(value, value < 10 ? 1 : 0) + " ms"; }
  function pct(fraction) {
    if (fraction == null) return "–";
    var p = fraction * 100;
    return (p === 0 ? "0" : p < 0.01 ? "<0.01" : num(p, 2)) + " %";
  }
  function bytes(n) {
    if (n == null) return "–";
    if (n >= 1e9) return num(n / 1e9, 2) + " GB";
    return num(n / 1e6, 0) + " MB";
  }
  function clock(iso) {
    if (!iso) return "never seen";
    var d = new Date(iso);
    var sameDay = new Date().toDateString() === d.toDateString();
    return (sameDay ? "" : d.toLocaleDateString(undefined, { month: "short", day: "numeric" }) + " ") +
      d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }
  function ago(iso) {
    if (!iso) return "";
    var s = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
    if (s < 90) return Math.round(s) + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    if (s < 172800) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " days ago";
  }
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    (children || []).forEach(function (c) { node.append(c); });
    return node;
  }
  var MARKS = { healthy: "✔ ", degraded: "▲ ", unhealthy: "✖ ", disabled: "– ", critical: "✖ ", warning: "▲ ", resolved: "✔ " };
  function badge(kind, label) { return el("span", { "class": "badge " + kind }, [(MARKS[kind] || "") + (label || kind)]); }

  // --- live -------------------------------------------------------------------------------

  function makeLiveCharts() {
    var t = live.times;
    liveCharts.connections = charts.timeSeries($("live-chart-connections"), {
      title: "Active connections (all web processes)", unit: "", times: t, height: 180, minSpan: 120,
      series: [{ label: "connections", values: live.connections }] });
    liveCharts.latency = charts.timeSeries($("live-chart-latency"), {
      title: "Delivery latency", unit: "ms", times: t, height: 180, minSpan: 120,
      series: [{ label: "p50", values: live.p50 }, { label: "p95", values: live.p95 }, { label: "p99", values: live.p99 }] });
    liveCharts.messages = charts.timeSeries($("live-chart-messages"), {
      title: "Messages per minute", unit: "", times: t, height: 180, minSpan: 120,
      series: [{ label: "messages", values: live.messages }] });
    liveCharts.http = charts.timeSeries($("live-chart-http"), {
      title: "HTTP response time", unit: "ms", times: t, height: 180, minSpan: 120,
      series: [{ label: "average", values: live.httpAvg }, { label: "p95", values: live.httpP95 }] });
  }

  function pushLive(f) {
    var l = f.live;
    live.times.push(Date.parse(l.timestamp) / 1000);
    live.connections.push(l.activeConnections);
    live.p50.push(l.latency.p50Ms); live.p95.push(l.latency.p95Ms); live.p99.push(l.latency.p99Ms);
    live.messages.push(l.messagesPerMinute);
    live.httpAvg.push(l.http.avgMs); live.httpP95.push(l.http.p95Ms);
    if (live.times.length > LIVE_POINTS) Object.keys(live).forEach(function (k) { live[k].shift(); });
    liveCharts.connections.setData([live.times, live.connections]);
    liveCharts.latency.setData([live.times, live.p50, live.p95, live.p99]);
    liveCharts.messages.setData([live.times, live.messages]);
    liveCharts.http.setData([live.times, live.httpAvg, live.httpP95]);
  }

  function money(entry, field) { return entry.currency + " " + num(entry[field], 2); }

  function showLive(l) {
    var minutes = Math.round(l.windowSeconds / 60);
    text("live-window", "(rates over the last " + minutes + " min, " + l.webWorkers + " web process" + (l.webWorkers === 1 ? "" : "es") + ")");
    text("live-activeConnections", num(l.activeConnections, 0));
    text("live-rooms", "in " + num(l.activeRooms, 0) + " venue room" + (l.activeRooms === 1 ? "" : "s"));
    text("live-messagesPerMinute", num(l.messagesPerMinute, 1));
    text("live-errorRate", pct(l.errorRate));
    text("live-clientErrorRate", "service errors; clients' " + pct(l.clientErrorRate));
    text("live-latency", l.latency.count ? ms(l.latency.p95Ms) + " p95" : "none");
    text("live-latency-sub", l.latency.count ? "p50 " + ms(l.latency.p50Ms) + " · p99 " + ms(l.latency.p99Ms) : "no deliveries in the window");
    text("live-memory", bytes(l.memoryRssBytes));
    text("live-memory-sub", num(l.memoryPercent, 1) + " % of the hosts' memory");
    var h = l.http;
    text("live-http", ms(h.avgMs) + " avg");
    text("live-http-sub", h.requestsPerMinute ? "p95 " + ms(h.p95Ms) + " · " + num(h.requestsPerMinute, 1) + " req/min" : "no requests in the window");
    text("live-http-errors", h.serverErrorPercent == null ? "–" : num(h.serverErrorPercent, 2) + " %");
    text("live-http-errors-sub", h.clientErrorPercent == null ? "no requests" : "4xx " + num(h.clientErrorPercent, 2) + " %");
    text("live-query", ms(h.queryAvgMs) + " avg");
    text("live-query-sub", h.queriesPerRequest == null ? "no queries in the window" : num(h.queriesPerRequest, 1) + " queries a request");
    var o = l.orders;
    if (o) {
      text("live-orders", num(o.ordersPerHour, 0));
      var cur = o.byCurrency;
      text("live-revenue", cur.length ? cur.map(function (c) { return money(c, "revenue"); }).join(" · ") : "–");
      text("live-average", cur.length ? cur.map(function (c) { return money(c, "average"); }).join(" · ") : "no orders");
    }
  }

  function showIncidents(list) {
    var body = el("tbody");
    if (list == null) {
      body.append(el("tr", {}, [el("td", { "class": "muted" }, ["The incidents cannot be read now: the database does not answer."])]));
    } else if (!list.length) {
      body.append(el("tr", {}, [el("td", { "class": "muted" }, ["No incident yet: nothing has fired."])]));
    }
    (list || []).forEach(function (i) {
      var open = i.status === "firing";
      var state = open ? badge(i.severity) : badge("resolved", "resolved");
      var link = el("a", { href: i.url }, [i.title]);
      var when = open ? "since " + clock(i.openedAt) + " (" + ago(i.openedAt) + ")" : "resolved " + clock(i.resolvedAt);
      var ack = i.acknowledgedBy ? "acknowledged by " + i.acknowledgedBy : open ? "not acknowledged" : "";
      body.append(el("tr", { "class": open ? "open" : "resolved" }, [
        el("td", {}, [state]),
        el("td", {}, [link, el("div", { "class": "muted" }, [ack])]),
        el("td", { "class": "when" }, [when]),
      ]));
    });
    $("alerts").replaceChildren(body);
  }

  function showComponents(list) {
    var body = el("tbody");
    list.forEach(function (c) {
      var good = c.status === "healthy" ? "checked " + clock(c.lastGoodAt) :
        c.lastGoodAt ? "last good " + clock(c.lastGoodAt) + " (" + ago(c.lastGoodAt) + ")" : "not seen working yet";
      body.append(el("tr", { "data-component": c.name }, [
        el("td", {}, [c.label]),
        el("td", {}, [badge(c.status)]),
        el("td", {}, [good, c.detail ? el("div", { "class": "muted" }, [c.detail]) : ""]),
      ]));
    });
    $("components").replaceChildren(body);
  }

  // One part that cannot draw (a figure missing during an outage) must not keep the others,
  // or the "Live" state line, from updating.
  function guarded(part, value) {
    try { part(value); } catch (error) { console.error(error); }
  }

  function onFrame(f) {
    frames += 1;
    lastFrameAt = Date.now();
    var state = $("dash-state");
    state.className = "dash-state";
    state.replaceChildren(el("b", {}, [f.live ? "Live" : "Figures unavailable"]),
      " · updated " + clock(f.live ? f.live.timestamp : new Date().toISOString()));
    if (f.live) { guarded(showLive, f.live); guarded(pushLive, f); }
    guarded(showComponents, f.components);
    guarded(showIncidents, f.incidents);
    root.dataset.frames = String(frames);
  }

  function connect(delay) {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + root.dataset.wsPath);
    socket.onmessage = function (event) { onFrame(JSON.parse(event.data)); };
    socket.onclose = function (event) {
      var state = $("dash-state");
      state.className = "dash-state stale";
      if (event.code === 4401 || event.code === 4403) {
        state.replaceChildren(el("b", {}, ["Signed out"]), " · sign in again as staff to see live figures");
        return;
      }
      state.replaceChildren(el("b", {}, ["Reconnecting…"]), " · the figures shown are from " + (lastFrameAt ? clock(new Date(lastFrameAt).toISOString()) : "nowhere yet"));
      var next = Math.min(30000, (delay || 1000) * 2);
      setTimeout(function () { connect(next); }, (delay || 1000) * (0.5 + Math.random()));
    };
    socket.onopen = function () { delay = 1000; };
  }

  // --- history ------------------------------------------------------------------------------

  var historyCharts = [];
  function historySpecs(h) {
    var s = h.series, spans = h.incidents.map(function (i) { return { start: i.start, end: i.end, label: i.label }; });
    var specs = [
      { title: "Active connections (average)", unit: "", series: [{ label: "connections", values: s.activeConnections }] },
      { title: "Messages per minute", unit: "", series: [{ label: "messages", values: s.messagesPerMinute }] },
      { title: "WebSocket error rate", unit: "%", series: [{ label: "service errors", values: s.errorRatePercent }] },
      { title: "Delivery latency (average)", unit: "ms", series: [{ label: "average", values: s.deliveryAvgMs }] },
      { title: "HTTP response and database query time", unit: "ms", series: [{ label: "HTTP average", values: s.httpAvgMs }, { label: "query average", values: s.queryAvgMs }] },
      { title: "HTTP server errors (5xx)", unit: "%", series: [{ label: "5xx", values: s.httpServerErrorPercent }] },
      { title: "Memory (all web processes)", unit: "MB", series: [{ label: "resident", values: s.memoryMb }] },
    ];
    if (h.orders) {
      specs.push({ title: "Orders per hour", unit: "", series: [{ label: "orders", values: h.orders.ordersPerHour }] });
      var currencies = Object.keys(h.orders.revenuePerHour);
      specs.push({ title: "Revenue per hour" + (currencies.length === 1 ? " (" + currencies[0] + ")" : ""), unit: currencies.length === 1 ? currencies[0] : "",
        series: currencies.map(function (c) { return { label: c, values: h.orders.revenuePerHour[c] }; }) });
    }
    specs.forEach(function (spec) { spec.times = h.times; spec.spans = spans; spec.height = 190; });
    return specs;
  }

  function hasData(spec) {
    return spec.series.some(function (line) { return line.values.some(function (v) { return v != null; }); });
  }

  function loadHistory(range) {
    var started = performance.now();
    var note = $("history-note");
    note.textContent = "Loading…";
    return fetch(root.dataset.historyUrl + "?range=" + encodeURIComponent(range), { credentials: "same-origin" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (h) {
        historyCharts.forEach(function (c) { c.destroy(); });
        historyCharts = [];
        var box = $("history-charts");
        box.replaceChildren();
        historySpecs(h).forEach(function (spec) {
          var holder = el("div", { "class": "chart" });
          box.append(holder);
          if (!hasData(spec)) {
            holder.append(el("div", { "class": "empty" }, [spec.title + ": nothing recorded in this range."]));
            return;
          }
          historyCharts.push(charts.timeSeries(holder, spec));
        });
        var step = h.stepSeconds >= 3600 ? h.stepSeconds / 3600 + " h" : h.stepSeconds / 60 + " min";
        note.textContent = "one point per " + step + "; " + h.incidents.length + " incident" + (h.incidents.length === 1 ? "" : "s") + " shaded";
        root.dataset.historyMs = String(Math.round(performance.now() - started));
        root.dataset.historyRange = range;
      })
      .catch(function (e) { note.textContent = "The trends cannot be loaded now (" + e.message + ")."; });
  }

  document.querySelectorAll(".ranges button").forEach(function (button) {
    button.addEventListener("click", function () {
      document.querySelectorAll(".ranges button").forEach(function (b) { b.setAttribute("aria-pressed", String(b === button)); });
      loadHistory(button.dataset.range);
    });
  });

  makeLiveCharts();
  connect(1000);
  loadHistory("hour");
  window.InkwaveDashboard = { liveCharts: liveCharts, loadHistory: loadHistory, live: live };
})();
