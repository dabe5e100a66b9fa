// /dashboard: polls GET /dashboard/data (admin) every 2 s and draws cards, tables and canvas charts.
// Text from the server (model names, R's error messages) goes in with textContent, never as HTML.
(function () {
  "use strict";
  var REFRESH_MS = 2000;
  var COLORS = ["#2763c4", "#d9480f", "#2b8a3e", "#862e9c", "#c92a2a", "#0b7285", "#e67700", "#5c7cfa"];
  var polling = false, timer = null, last = null, signin;
  var $ = function (id) { return document.getElementById(id); };

  // -- formatting ----------------------------------------------------------------------------
  function mib(bytes) { return bytes == null ? "–" : (bytes / 1048576).toFixed(1) + " MiB"; }
  function num(x, digits) { return x == null ? "–" : Number(x).toFixed(digits == null ? 1 : digits); }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text != null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function badge(state) { return el("span", state || "–", "badge " + (state || "")); }
  function row(cells) {
    var tr = document.createElement("tr");
    cells.forEach(function (c) {
      var td = document.createElement("td");
      if (c && c.node) { td.appendChild(c.node); } else if (c && typeof c === "object") {
        td.textContent = c.text == null ? "–" : c.text; if (c.cls) td.className = c.cls;
      } else { td.textContent = c == null ? "–" : c; }
      tr.appendChild(td);
    });
    return tr;
  }
  function fill(tableId, rows) { $(tableId).querySelector("tbody").replaceChildren.apply(
    $(tableId).querySelector("tbody"), rows); }

  // -- charts: one line per series on a shared time axis ------------------------------------------
  function chart(canvas, lines, opts) {
    opts = opts || {};
    var dpr = window.devicePixelRatio || 1, w = canvas.clientWidth, h = canvas.clientHeight;
    canvas.width = w * dpr; canvas.height = h * dpr;
    var g = canvas.getContext("2d");
    g.scale(dpr, dpr);
    g.clearRect(0, 0, w, h);
    var left = 64, right = 150, top = 8, bottom = 22;
    var t0 = Infinity, t1 = -Infinity, ymax = 0;
    lines.forEach(function (l) {
      l.t.forEach(function (t, i) {
        t0 = Math.min(t0, t); t1 = Math.max(t1, t);
        if (l.y[i] != null) ymax = Math.max(ymax, l.y[i]);
      });
    });
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = "#5b6575";
    if (!isFinite(t0)) { g.fillText("no data yet", left, h / 2); return; }
    if (t1 - t0 < 60) t0 = t1 - 60;
    ymax = ymax > 0 ? ymax * 1.15 : 1;
    var x = function (t) { return left + (w - left - right) * (t - t0) / (t1 - t0); };
    var y = function (v) { return top + (h - top - bottom) * (1 - v / ymax); };
    g.strokeStyle = "#e2e8f0"; g.lineWidth = 1;
    for (var k = 0; k <= 4; k++) {
      var v = ymax * k / 4, yy = Math.round(y(v)) + 0.5;
      g.beginPath(); g.moveTo(left, yy); g.lineTo(w - right, yy); g.stroke();
      g.fillText(opts.format ? opts.format(v) : num(v), 4, yy + 4);
    }
    [t0, (t0 + t1) / 2, t1].forEach(function (t) {
      var ago = Math.round(t1 - t);
      g.fillText(ago ? "-" + ago + " s" : "now", x(t) - 12, h - 6);
    });
    lines.forEach(function (l, n) {
      var color = COLORS[n % COLORS.length];
      g.strokeStyle = color; g.lineWidth = 1.8; g.setLineDash([]);
      g.beginPath();
      var pen = false;
      l.t.forEach(function (t, i) {
        if (l.y[i] == null) { pen = false; return; }
        if (pen) g.lineTo(x(t), y(l.y[i])); else g.moveTo(x(t), y(l.y[i]));
        pen = true;
      });
      g.stroke();
      (l.marks || []).forEach(function (t) {       // restarts
        g.setLineDash([4, 3]); g.lineWidth = 1;
        g.beginPath(); g.moveTo(x(t), top); g.lineTo(x(t), h - bottom); g.stroke();
      });
      g.setLineDash([]);
      g.fillStyle = color;
      g.fillRect(w - right + 12, top + 4 + n * 16, 10, 10);
      g.fillStyle = "#1d2430";
      g.fillText(l.label, w - right + 28, top + 13 + n * 16);
    });
  }

  // -- sections --------------------------------------------------------------------------------
  function cards(d) {
    var reqs = Object.values(d.requests || {});
    var rps = reqs.reduce(function (a, r) { return a + (r.window.rps || 0); }, 0);
    var errs = reqs.reduce(function (a, r) { return a + (r.window.errors || 0); }, 0);
    var live = d.workers.filter(function (w) { return w.state === "idle" || w.state === "busy"; }).length;
    var restarts = d.workers.reduce(function (a, w) { return a + (w.restarts || 0); }, 0);
    var cm = d.pool.container_memory || {};
    var loaded = d.models.filter(function (m) { return m.state === "loaded"; }).length;
    var items = [
      ["workers", live + " / " + d.pool.effective_size, restarts + " restart(s)"],
      ["queue", d.pool.queue_depth + "", "of " + d.pool.queue_size],
      ["requests/s", num(rps, 1), "last " + d.window + " s"],
      ["errors/s", num(errs, 2), "4xx and 5xx"],
      ["models", loaded + " / " + d.models.length, "loaded"],
      ["memory", mib(cm.used), "of " + mib(cm.limit) + " (" + (cm.source || "?") + ")"],
    ];
    $("cards").replaceChildren.apply($("cards"), items.map(function (it) {
      var c = el("div", null, "card");
      c.appendChild(el("div", it[0], "label"));
      c.appendChild(el("div", it[1], "value"));
      c.appendChild(el("div", it[2], "sub"));
      return c;
    }));
  }

  function workers(d) {
    fill("workers", d.workers.map(function (w) {
      var m = w.memory || {};
      var tr = row([{node: swatched(w.slot, w.slot)}, {node: badge(w.state)}, w.pid,
                    {text: w.restarts, cls: "n"}, w.last_exit, {text: w.requests_served, cls: "n"},
                    {text: w.busy_seconds == null ? null : num(w.busy_seconds, 2), cls: "n"},
                    {text: mib(m.rss), cls: "n"}, {text: mib(m.uss), cls: "n"}, {text: mib(m.pss), cls: "n"},
                    {text: mib(m.r_heap), cls: "n"}]);
      tr.dataset.slot = w.slot;
      return tr;
    }));
    memoryChart();
  }

  function swatched(index, text) {
    var span = el("span", null);
    var sw = el("span", null, "swatch");
    sw.style.background = COLORS[index % COLORS.length];
    span.appendChild(sw);
    span.appendChild(document.createTextNode(String(text)));
    return span;
  }

  function memoryChart() {
    if (!last) return;
    var kind = $("memory-kind").value;
    var lines = Object.keys(last.worker_series).sort(function (a, b) { return a - b; }).map(function (slot) {
      var s = last.worker_series[slot], marks = [];
      for (var i = 1; i < s.pid.length; i++) {
        if (s.pid[i] !== s.pid[i - 1] && s.pid[i] != null) marks.push(s.t[i]);
      }
      return {label: "worker " + slot, t: s.t, y: s[kind], marks: marks};
    });
    chart($("memory-chart"), lines, {format: mib});
  }

  function requests(d) {
    var names = Object.keys(d.requests).sort();
    $("window-hint").textContent = "(rates and percentiles over the last " + d.window + " s)";
    fill("requests", names.map(function (name, i) {
      var r = d.requests[name], w = r.window;
      var tr = row([{node: swatched(i, name)}, {text: num(w.rps, 2), cls: "n"}, {text: num(w.errors, 2), cls: "n"},
                    {text: num(w.p50, 1), cls: "n"}, {text: num(w.p95, 1), cls: "n"},
                    {text: num(w.p99, 1), cls: "n"}, {text: r.total, cls: "n"},
                    {text: r.errors_4xx, cls: "n"}, {text: r.errors_5xx, cls: "n"}]);
      tr.dataset.model = name;
      return tr;
    }));
    chart($("rps-chart"), names.map(function (n) {
      return {label: n, t: d.requests[n].series.t, y: d.requests[n].series.rps};
    }));
    chart($("latency-chart"), names.map(function (n) {
      return {label: n, t: d.requests[n].series.t, y: d.requests[n].series.p95};
    }));
  }

  function versions(d) {
    var rows = [];
    Object.keys(d.versions || {}).sort().forEach(function (model) {
      Object.keys(d.versions[model]).sort().forEach(function (version) {
        var v = d.versions[model][version], labels = Object.keys(v.labels).sort().map(function (l) {
          return l + ": " + v.labels[l];
        }).join(", ");
        var tr = row([model, version, {text: v.total, cls: "n"}, {text: v.errors_4xx, cls: "n"},
                      {text: v.errors_5xx, cls: "n"}, {text: num(v.p50, 1), cls: "n"}, {text: num(v.p95, 1), cls: "n"},
                      {text: num(v.prediction_mean, 3), cls: "n"}, {text: num(v.prediction_p50, 3), cls: "n"},
                      labels, {text: v.shadow.agree, cls: "n"}, {text: v.shadow.disagree, cls: "n"}]);
        tr.dataset.model = model;
        tr.dataset.version = version;
        rows.push(tr);
      });
    });
    fill("versions", rows);
  }

  function models(d) {
    fill("models", d.models.map(function (m) {
      var tr = row([m.name, m.version, {node: badge(m.state)}, (m.r_class || []).join(", "),
                    {text: m.error || "", cls: "error"}]);
      tr.dataset.model = m.name;
      return tr;
    }));
  }

  // -- polling ---------------------------------------------------------------------------------
  async function poll() {
    timer = null;
    try {
      var d = await window.RBridge.getJSON("/dashboard/data");
      if (!polling) return;
      last = d;
      $("board").hidden = false;
      $("board-notice").hidden = true;
      cards(d); workers(d); requests(d); versions(d); models(d);
      $("updated").textContent = "updated " + new Date(d.time * 1000).toLocaleTimeString();
    } catch (e) {
      if (e.status === 401) { stop(); signin.ask(e.message === "sign in" ? "" : e.message); return; }
      if (e.status === 403) { stop(); signin.ask("the dashboard needs an admin user: " + e.message); return; }
      $("updated").textContent = "update failed: " + e.message;
    }
    if (polling) timer = setTimeout(poll, REFRESH_MS);
  }

  function start() { if (!polling) { polling = true; poll(); } }
  function stop() {
    polling = false;
    if (timer) clearTimeout(timer);
    timer = null;
    $("board").hidden = true;
    $("board-notice").hidden = false;
  }

  $("memory-kind").addEventListener("change", memoryChart);
  window.addEventListener("resize", function () { if (last) { memoryChart(); requests(last); } });
  signin = window.RBridge.bind(start, stop);
})();
