// ringmq dashboard: live tables, charts and forms over /api/. No dependencies, no build step.
// Tables with data-src are re-read every few seconds and re-rendered from their data-cols
// specs (the same specs the server rendered them with: see pages.rs `Col`); svg[data-chart]
// draws the sampler's series; form.api posts its fields as JSON to its data-url. Every write
// carries Content-Type: application/json and the session's anti-CSRF token (from
// /api/session) in X-CSRF-Token: the dashboard refuses writes without them (see guard.rs).
"use strict";
(function () {
  const interval = Number(document.body.dataset.interval) || 5000;
  const refreshMs = Math.min(Math.max(interval, 1000), 5000);

  function showError(message) {
    const box = document.getElementById("error");
    box.textContent = message;
    box.hidden = !message;
  }

  // The session: its anti-CSRF token, who is signed in, and why writes are off if they are.
  let sessionAnswer = null;
  function session() {
    if (!sessionAnswer) {
      sessionAnswer = fetch("/api/session").then((res) => {
        if (!res.ok) throw new Error(res.status + ": no session");
        return res.json();
      });
    }
    return sessionAnswer;
  }

  function toSignIn() {
    window.location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
  }

  async function api(method, url, body) {
    const init = { method: method, headers: {} };
    if (method !== "GET") {
      init.headers["Content-Type"] = "application/json";
      init.headers["X-CSRF-Token"] = (await session()).csrfToken;
      if (body !== undefined) init.body = JSON.stringify(body);
    }
    const res = await fetch(url, init);
    if (res.status === 401 && url !== "/api/login") {
      toSignIn();
      throw new Error("401: sign in first");
    }
    const raw = await res.text();
    let data;
    try {
      data = JSON.parse(raw);
    } catch (e) {
      throw new Error(res.status + ": " + raw);
    }
    if (!res.ok) throw new Error(res.status + ": " + (data.error || raw));
    return data;
  }

  function field(row, path) {
    return path.split(".").reduce((v, k) => (v == null ? undefined : v[k]), row);
  }

  function pad(n, width) {
    return String(n).padStart(width, "0");
  }

  // yyyy-MM-dd HH:mm:ss,SSS in local time, as the server renders dates.
  function date(ms) {
    const d = new Date(ms);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1, 2) + "-" + pad(d.getDate(), 2) + " " +
      pad(d.getHours(), 2) + ":" + pad(d.getMinutes(), 2) + ":" + pad(d.getSeconds(), 2) + "," +
      pad(d.getMilliseconds(), 3);
  }

  function text(v) {
    if (v == null) return "";
    return typeof v === "object" ? JSON.stringify(v) : String(v);
  }

  function fill(template, row) {
    return template.replace(/\{([^}]+)\}/g, (_, name) => encodeURIComponent(text(field(row, name))));
  }

  function cell(row, spec) {
    const td = document.createElement("td");
    const bar = spec.indexOf("|");
    let path = bar < 0 ? spec : spec.slice(0, bar);
    const link = bar < 0 ? null : spec.slice(bar + 1);
    let format = "";
    const colon = path.indexOf(":");
    if (colon >= 0) {
      format = path.slice(colon + 1);
      path = path.slice(0, colon);
    }
    const v = field(row, path);
    let shown = text(v);
    if (format === "num2" && typeof v === "number") shown = v.toFixed(2);
    if (format === "date") shown = typeof v === "number" && v > 0 ? date(v) : "";
    if (link) {
      const a = document.createElement("a");
      a.href = fill(link, row);
      a.textContent = shown;
      td.appendChild(a);
    } else {
      td.textContent = shown;
    }
    return td;
  }

  function asRows(v) {
    if (v == null) return [];
    return Array.isArray(v) ? v : [v];
  }

  function renderRows(table, rows) {
    const specs = table.dataset.cols.split(";");
    const fresh = document.createElement("tbody");
    for (const row of rows) {
      const tr = document.createElement("tr");
      for (const spec of specs) tr.appendChild(cell(row, spec));
      fresh.appendChild(tr);
    }
    if (!rows.length) {
      const tr = document.createElement("tr");
      tr.className = "empty";
      const td = document.createElement("td");
      td.colSpan = specs.length;
      td.textContent = "none";
      tr.appendChild(td);
      fresh.appendChild(tr);
    }
    table.replaceChild(fresh, table.tBodies[0]);
    table.dataset.refreshed = String(Date.now());
  }

  async function refreshTables() {
    const answers = {};
    for (const table of document.querySelectorAll("table[data-src]")) {
      const src = table.dataset.src;
      try {
        answers[src] = answers[src] || api("GET", src);
        const data = await answers[src];
        renderRows(table, asRows(table.dataset.rows ? field(data, table.dataset.rows) : data));
        showError("");
      } catch (e) {
        showError(e.message);
      }
    }
  }

  const COLORS = ["#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#718096"];
  const SVG = "http://www.w3.org/2000/svg";

  function number(v) {
    return v >= 100 ? v.toFixed(0) : v.toFixed(2);
  }

  function clock(ms) {
    const d = new Date(ms);
    return pad(d.getHours(), 2) + ":" + pad(d.getMinutes(), 2) + ":" + pad(d.getSeconds(), 2);
  }

  // Lines of [t, v1, v2…] points: v1 solid, the others dashed; one color per line.
  function drawChart(svg, lines) {
    const W = 640, H = 180, L = 56, R = 10, T = 10, B = 22;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const add = (tag, attrs, content) => {
      const e = document.createElementNS(SVG, tag);
      for (const k in attrs) e.setAttribute(k, attrs[k]);
      if (content != null) e.textContent = content;
      svg.appendChild(e);
      return e;
    };
    const points = lines.flatMap((l) => l.points);
    if (!points.length) {
      add("text", { x: 10, y: 24, class: "label" }, "no samples yet");
      return;
    }
    const t0 = Math.min(...points.map((p) => p[0]));
    const t1 = Math.max(...points.map((p) => p[0]));
    const top = Math.max(1, ...points.flatMap((p) => p.slice(1)));
    const x = (t) => L + (t1 > t0 ? (t - t0) / (t1 - t0) : 1) * (W - L - R);
    const y = (v) => H - B - (v / top) * (H - B - T);
    add("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" });
    add("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" });
    add("text", { x: 4, y: T + 10, class: "label" }, number(top));
    add("text", { x: 4, y: H - B, class: "label" }, "0");
    add("text", { x: L, y: H - 6, class: "label" }, clock(t0));
    add("text", { x: W - R - 56, y: H - 6, class: "label" }, clock(t1));
    lines.forEach((line, i) => {
      const color = COLORS[i % COLORS.length];
      const dims = line.points.length ? line.points[0].length - 1 : 0;
      for (let d = 1; d <= dims; d++) {
        const coords = line.points.map((p) => x(p[0]).toFixed(1) + "," + y(p[d]).toFixed(1));
        add("polyline", {
          points: coords.join(" "), fill: "none", stroke: color, "stroke-width": 2,
          "stroke-dasharray": d > 1 ? "5,4" : "none",
        });
      }
      const last = line.points[line.points.length - 1];
      const now = last ? " (" + last.slice(1).map(number).join(" / ") + ")" : "";
      add("text", { x: L + 8, y: T + 14 + 14 * i, fill: color, class: "legend" }, line.name + now);
    });
  }

  async function refreshCharts() {
    const charts = document.querySelectorAll("svg[data-chart]");
    if (!charts.length) return;
    try {
      const series = await api("GET", "/api/series");
      for (const svg of charts) {
        let lines = svg.dataset.chart === "brokers" ? series.brokers : series.groups;
        if (svg.dataset.name) lines = lines.filter((l) => l.name === svg.dataset.name);
        drawChart(svg, lines);
      }
    } catch (e) {
      showError(e.message);
    }
  }

  function values(form) {
    const body = {};
    const query = [];
    for (const el of form.elements) {
      if (!el.name) continue;
      let v;
      if (el.type === "checkbox") v = el.checked;
      else if (el.dataset.type === "ms") v = el.value ? new Date(el.value).getTime() : (el.dataset.empty || "");
      else if (el.type === "number" || el.dataset.type === "number") v = Number(el.value);
      else v = el.value;
      if (el.dataset.in === "query") query.push([el.name, v]);
      else body[el.name] = v;
    }
    return { body: body, query: query };
  }

  function queryString(pairs) {
    return pairs.map(([k, v]) => encodeURIComponent(k) + "=" + encodeURIComponent(v)).join("&");
  }

  async function submit(form) {
    const box = form.querySelector(".result");
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    const { body, query } = values(form);
    const method = form.dataset.method;
    let url = form.dataset.url;
    let payload;
    if (method === "GET") {
      url += "?" + queryString(Object.entries(body).filter(([, v]) => v !== ""));
    } else {
      if (query.length) url += "?" + queryString(query);
      if (method !== "DELETE") payload = body;
    }
    box.hidden = false;
    box.className = "result pending";
    box.textContent = "…";
    try {
      const data = await api(method, url, payload);
      const then = form.dataset.then;
      if (then === "reload") {
        window.location.reload();
      } else if (then.startsWith("/")) {
        window.location.href = then;
      } else if (then.startsWith("rows:")) {
        const rows = asRows(data);
        renderRows(document.getElementById(then.slice(5)), rows);
        box.className = "result ok";
        box.textContent = rows.length + " message(s) found";
      } else {
        box.className = "result ok";
        box.textContent = JSON.stringify(data, null, 2);
        if (data.msgId) {
          const a = document.createElement("a");
          a.href = "/messages/" + encodeURIComponent(data.msgId);
          a.textContent = "View message " + data.msgId;
          box.appendChild(document.createElement("br"));
          box.appendChild(a);
        }
      }
    } catch (e) {
      box.className = "result fail";
      box.textContent = e.message;
    }
  }

  async function showSession() {
    const box = document.getElementById("session");
    let s;
    try {
      s = await session();
    } catch (e) {
      return;
    }
    if (!box) return;
    if (s.readOnly) {
      box.title = s.readOnly;
      document.body.classList.add("read-only");
    }
    if (s.user) {
      box.textContent = "signed in as " + s.user + (s.admin ? " (admin) " : " (reads only) ");
      const out = document.createElement("button");
      out.type = "button";
      out.className = "link";
      out.textContent = "Sign out";
      out.addEventListener("click", async () => {
        try {
          await api("POST", "/api/logout", {});
        } finally {
          window.location.href = "/login";
        }
      });
      box.appendChild(out);
    } else if (s.readOnly && !s.login) {
      box.textContent = "read-only";
    }
  }

  showSession();
  for (const form of document.querySelectorAll("form.api")) {
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      submit(form);
    });
  }
  refreshCharts();
  setInterval(() => {
    refreshTables();
    refreshCharts();
  }, refreshMs);
})();
