// ammp-edge web UI: live updates, SVG charts, device tests, background scans, log tails. Vanilla JS, no
// dependencies; every value is put into the page with textContent (never as HTML).
"use strict";
(function () {
  const csrf = (document.querySelector('meta[name="csrf"]') || {}).content || "";
  const page = document.body.dataset.page;

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v === true ? "" : v);
    }
    for (const k of kids.flat(Infinity)) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
    return e;
  }
  async function api(url, body) {
    const opt = body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}, body: JSON.stringify(body)};
    const r = await fetch(url, Object.assign({credentials: "same-origin"}, opt));
    if (r.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search); throw new Error("login required"); }
    const data = await r.json().catch(() => ({error: "HTTP " + r.status}));
    if (!r.ok && !data.error) data.error = "HTTP " + r.status;
    return data;
  }
  function fmt(v) {
    if (v === null || v === undefined) return "null";
    if (typeof v === "number" && !Number.isInteger(v)) return Math.abs(v) >= 1000 ? v.toFixed(1) : String(+v.toPrecision(6));
    return String(v);
  }
  function table(headers, rows, cls) {
    return el("div", {class: "scroll"}, el("table", {class: "list " + (cls || "")},
      el("tr", {}, headers.map(h => el("th", {text: h}))), rows.map(r => el("tr", {}, r.map(c => c instanceof Node ? el("td", {}, c) : el("td", {text: c === null || c === undefined ? "" : String(c)}))))));
  }

  // -- status: the browser's clock against the node's --------------------------------------------
  const skew = document.getElementById("clock-skew");
  if (skew) {
    const d = Math.round(Date.now() / 1000 - Number(skew.dataset.serverTime));
    skew.textContent = Math.abs(d) > 30 ? `(this browser's clock differs by ${d} s)` : "(matches this browser)";
    skew.className = Math.abs(d) > 30 ? "bad" : "muted";
  }

  // the status page refreshes itself in place (the server renders it; no reload, no scroll jump)
  if (page === "status") {
    setInterval(async () => {
      try {
        const r = await fetch(location.href, {credentials: "same-origin"});
        if (r.redirected) { location.href = r.url; return; }  // the session ended
        if (!r.ok) return;
        const doc = new DOMParser().parseFromString(await r.text(), "text/html");
        const fresh = doc.querySelector("main");
        if (fresh) document.querySelector("main").replaceChildren(...fresh.childNodes);
        const sk = document.getElementById("clock-skew");
        if (sk) { const d = Math.round(Date.now() / 1000 - Number(sk.dataset.serverTime)); sk.textContent = Math.abs(d) > 30 ? `(this browser's clock differs by ${d} s)` : "(matches this browser)"; sk.className = Math.abs(d) > 30 ? "bad" : "muted"; }
      } catch (e) { /* next time */ }
    }, 5000);
  }

  // -- live readings --------------------------------------------------------------------------------
  const LEVELS = {0: ["OK", "lvl0"], 1: ["Info", "lvl1"], 2: ["Warning", "lvl2"], 3: ["Error", "lvl3"], 4: ["Critical", "lvl4"]};
  let chartOf = null;

  function deviceCard(d) {
    const meta = el("p", {class: "meta"}, el("span", {class: "age", text: d.age === null ? "no reading yet" : d.age + " s ago"}),
      " · " + d.driver + " · " + d.bus, d.t !== null && !d.answered ? [" · ", el("span", {class: "bad", text: "no answer"})] : null,
      " · ", el("a", {href: "/test?device=" + encodeURIComponent(d.key), text: "test"}));
    const rows = d.fields.map(f => el("tr", {"data-field": f.name, class: f.missing ? "missing" : ""},
      el("td", {}, el("a", {href: "#", class: "field-link", title: f.description, text: f.name})),
      el("td", {class: "num value" + (f.null ? " null" : ""), text: f.null ? "null" : f.missing ? "–" : fmt(f.value)}),
      el("td", {text: f.unit})));
    const status = el("ul", {class: "status-items"}, d.status.map(s => {
      const [label, cls] = LEVELS[s.l] || ["Level " + s.l, "lvl1"];
      return el("li", {}, el("span", {class: "level " + cls, text: label}), " " + s.c);
    }));
    return el("section", {class: "card device" + (d.stale ? " stale" : ""), "data-device": d.key},
      el("h2", {}, d.key + " ", el("small", {text: d.name})), meta,
      el("table", {class: "list fields"}, el("tr", {}, el("th", {text: "Field"}), el("th", {class: "num", text: "Value"}), el("th", {text: "Unit"})), rows), status);
  }

  function drawChart(points, unit, width) {
    const W = Math.max(280, Math.round(width || 640)), H = 220, L = 56, R = 10, T = 10, B = 26;
    const ns = "http://www.w3.org/2000/svg";
    const s = (tag, a) => { const e = document.createElementNS(ns, tag); for (const k in a) e.setAttribute(k, a[k]); return e; };
    const svg = s("svg", {class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img"});
    const pts = points.filter(p => typeof p[1] === "number");
    if (pts.length === 0) { const t = s("text", {x: W / 2, y: H / 2, "text-anchor": "middle"}); t.textContent = "no numeric values yet"; svg.append(t); return svg; }
    let t0 = pts[0][0], t1 = pts[pts.length - 1][0]; if (t1 === t0) t1 = t0 + 1;
    let lo = Math.min(...pts.map(p => p[1])), hi = Math.max(...pts.map(p => p[1]));
    if (hi === lo) { hi += Math.abs(hi) * 0.05 || 1; lo -= Math.abs(lo) * 0.05 || 1; }
    const x = t => L + (t - t0) / (t1 - t0) * (W - L - R), y = v => T + (hi - v) / (hi - lo) * (H - T - B);
    svg.append(s("line", {class: "axis", x1: L, y1: T, x2: L, y2: H - B}), s("line", {class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B}));
    for (const v of [lo, (lo + hi) / 2, hi]) { const t = s("text", {x: L - 4, y: y(v) + 4, "text-anchor": "end"}); t.textContent = fmt(v); svg.append(t); }
    for (const tt of [t0, t1]) { const t = s("text", {x: x(tt), y: H - 8, "text-anchor": tt === t0 ? "start" : "end"}); t.textContent = new Date(tt * 1000).toLocaleTimeString(); svg.append(t); }
    const u = s("text", {x: L + 4, y: T + 10}); u.textContent = unit || ""; svg.append(u);
    // a gap (null) breaks the line
    let d = "", pen = false;
    for (const p of points) { if (typeof p[1] !== "number") { pen = false; continue; } d += (pen ? "L" : "M") + x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1); pen = true; }
    svg.append(s("path", {class: "line", d}));
    if (pts.length < 60) for (const p of pts) svg.append(s("circle", {class: "dot", cx: x(p[0]), cy: y(p[1]), r: 2.5}));
    return svg;
  }

  async function refreshChart() {
    if (!chartOf) return;
    const data = await api(`/api/history?device=${encodeURIComponent(chartOf.device)}&field=${encodeURIComponent(chartOf.field)}`);
    const box = document.getElementById("chart");
    box.replaceChildren(drawChart(data.points || [], chartOf.unit, box.clientWidth));
  }

  if (page === "live") {
    const devices = document.getElementById("devices"), panel = document.getElementById("chart-panel");
    devices.addEventListener("click", ev => {
      const a = ev.target.closest(".field-link"); if (!a) return;
      ev.preventDefault();
      const tr = a.closest("tr"), card = a.closest("[data-device]");
      chartOf = {device: card.dataset.device, field: tr.dataset.field, unit: tr.children[2].textContent};
      document.getElementById("chart-title").textContent = chartOf.device + " · " + chartOf.field;
      panel.hidden = false; refreshChart();
    });
    document.getElementById("chart-close").addEventListener("click", () => { panel.hidden = true; chartOf = null; });
    const tick = async () => {
      try {
        const data = await api("/api/live");
        devices.replaceChildren(...data.devices.map(deviceCard));
        const none = document.getElementById("no-devices"); if (none && data.devices.length) none.remove();
        await refreshChart();
      } catch (e) { /* next tick */ }
    };
    setInterval(tick, 2000);
  }

  // -- forms: the add-device form shows the fields of the chosen type --------------------------------
  const rtSelect = document.getElementById("reading_type");
  if (rtSelect) {
    const sync = () => document.querySelectorAll("fieldset[data-for]").forEach(f => { f.hidden = f.dataset.for !== rtSelect.value; });
    rtSelect.addEventListener("change", sync); sync();
  }

  // -- the driver catalogue: search it when adding a device -------------------------------------------
  const driverSearch = document.getElementById("driver-search");
  if (driverSearch) {
    const results = document.getElementById("driver-results"), select = document.getElementById("driver");
    let timer = null;
    const show = async () => {
      const q = driverSearch.value.trim();
      if (!q) { results.replaceChildren(); return; }
      const r = await (await fetch("/api/drivers?q=" + encodeURIComponent(q), {credentials: "same-origin"})).json();
      results.replaceChildren(...(r.drivers || []).map(d => {
        const b = el("button", {type: "button", class: "driver-pick", "data-driver": d.name, text: d.name});
        b.addEventListener("click", () => { select.value = d.name; results.replaceChildren(); driverSearch.value = d.name; });
        const src = d.source.length > 70 ? d.source.slice(0, 67) + "..." : d.source;
        return el("li", {}, b, ` ${d.device} · ${d.fields} fields · ${d.reading_types.join(", ")} · ${src}`);
      }), ...(r.count ? [] : [el("li", {class: "muted", text: "no driver matches"})]));
    };
    driverSearch.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(show, 200); });
  }

  // -- test a device ----------------------------------------------------------------------------------
  function testBody(form) {
    const f = new FormData(form), body = {};
    const dev = document.getElementById("test-device").value;
    if (dev) return {device: dev};
    for (const [k, v] of f.entries()) body[k === "device_path" ? "device" : k] = v;
    delete body[""];
    return body;
  }
  if (page === "test") {
    const form = document.getElementById("test-form"), manual = document.getElementById("test-manual");
    const devSel = document.getElementById("test-device");
    const sync = () => { manual.hidden = !!devSel.value; }; devSel.addEventListener("change", sync); sync();
    form.addEventListener("submit", async ev => {
      ev.preventDefault();
      const out = document.getElementById("test-result");
      out.replaceChildren(el("p", {class: "muted", text: "reading…"}));
      const r = await api("/api/test/read", testBody(form));
      if (r.error) { out.replaceChildren(el("p", {class: "error", text: r.error})); return; }
      out.replaceChildren(el("section", {class: "card", id: "test-table"},
        el("h2", {}, `${r.device === "probe" ? "Device" : r.device} on ${r.bus}`, el("small", {text: ` read in ${r.duration} s` + (r.paused ? ` (${r.paused} paused meanwhile)` : "")})),
        ...(r.note ? [el("p", {class: "hint", id: "test-note", text: r.note})] : []),
        table(["Field", "Register", "Fn", "Type", "Order", "Raw (hex)", "Value", "Unit", "Error"],
          r.fields.map(f => [f.name, f.topic !== undefined ? f.topic : (f.where ?? f.register), f.fncode ?? "", f.datatype ?? "", f.order ?? "", (f.raw || []).join(" "), f.error ? "" : fmt(f.value), f.unit, (f.error || "") + (f.age_s != null ? ` (last message ${f.age_s} s ago)` : "")]), "reg-table"),
        ...(r.answers ? [el("h2", {text: "Requests and answers"}), table(["Request", "Answer (hex)", "Answer (text)", "Error"],
          r.answers.map(a => [a.request, a.answer || "", a.text || "", a.error || ""]), "answer-table")] : [])));
      const first = r.fields.find(f => typeof f.register === "number");
      const reg = document.getElementById("inspect-register"); if (first && !reg.value) reg.value = first.register;
    });
    document.getElementById("inspect-form").addEventListener("submit", async ev => {
      ev.preventDefault();
      const f = new FormData(ev.target), body = Object.assign(testBody(form), {register: Number(f.get("register")), fncode: Number(f.get("fncode"))});
      const out = document.getElementById("inspect-result");
      out.replaceChildren(el("p", {class: "muted", text: "reading…"}));
      const r = await api("/api/test/register", body);
      if (r.error) { out.replaceChildren(el("p", {class: "error", text: r.error})); return; }
      out.replaceChildren(el("section", {class: "card", id: "inspect-table"},
        el("p", {class: "small", text: `function code ${r.fncode}` + (r.paused ? ` (${r.paused} paused meanwhile)` : "")}),
        r.starts.map(s => [el("h2", {text: `from register ${s.register}${s.register === r.register ? " (as entered)" : s.register < r.register ? " (one before)" : " (one after)"} · raw ${s.raw.join(" ")}`}),
          s.error ? el("p", {class: "error", text: s.error}) : table(["Order", "uint16", "int16", "uint32", "int32", "float32"], s.orders.map(o => [o.order, fmt(o.uint16), fmt(o.int16), fmt(o.uint32), fmt(o.int32), fmt(o.float)]), "reg-table")])));
    });
  }

  // -- scans ------------------------------------------------------------------------------------------
  function sunspecForm(job) {
    const msg = el("div", {class: "sunspec-message"});
    const show = (r) => {
      msg.className = "sunspec-message " + (r.ok ? "okbox" : "warn");
      msg.replaceChildren(el("p", {text: r.message || r.error}),
        ...(r.devices || []).map(d => el("p", {text: `${d}: ${(r.config.devices[d] || {}).name || ""} (driver ${(r.config.devices[d] || {}).driver})`})),
        ...(r.problems || []).map(p => el("p", {class: "error", text: p})));
    };
    const look = el("button", {type: "button", class: "sunspec-look", text: "Show the SunSpec devices found"});
    const add = el("button", {type: "button", class: "sunspec-apply", text: "Add them to the config (drivers made from the SunSpec models)"});
    look.addEventListener("click", async () => show(await api(`/api/scans/${job.id}/sunspec`, {apply: false})));
    add.addEventListener("click", async () => show(await api(`/api/scans/${job.id}/sunspec`, {apply: true})));
    return el("div", {class: "card sunspec-form"}, el("h2", {text: "SunSpec"}), look, " ", add, msg);
  }

  function resultView(job) {
    const res = job.result;
    const hostRows = hosts => table(["IP", "MAC", "Vendor", "Host name", "Open ports", "Modbus", ""], hosts.map(h => [
      h.ipv4 || h.ip || "", h.mac || "", h.vendor || "", h.hostname || "", (h.ports || []).join(", "),
      (h.modbustcp || []).map(m => Object.entries(m).map(([k, v]) => k + "=" + (typeof v === "object" ? JSON.stringify(v) : v)).join(" ")).join("; "),
      el("a", {href: `/config/add?host=${encodeURIComponent(h.ipv4 || h.ip || "")}&port=${modbusPort(h.ports || [])}&unit_id=${encodeURIComponent(((h.modbustcp || [])[0] || {}).unit_id || 1)}`, text: "add to config"})]));
    const modbusPort = ports => { const p = ports.map(String); return p.includes("502") ? 502 : (p.find(x => !["22", "80", "443"].includes(x)) || 502); };
    const generic = rows => {
      if (!Array.isArray(rows) || !rows.length) return el("p", {class: "muted", text: "nothing found"});
      if (Array.isArray(rows[0])) return table(["Test", "Result"], rows);
      const keys = [...new Set(rows.flatMap(r => Object.keys(r)))];
      const addLink = r => (r.slaveaddr || r.unit_id || r.address) ? el("a", {href: `/config/add?reading_type=modbusrtu&device=${encodeURIComponent(r.port || job.args.port || "")}&slaveaddr=${encodeURIComponent(r.slaveaddr || r.unit_id || r.address)}&baudrate=${encodeURIComponent(r.baudrate || job.args.baudrate || 9600)}` + (r.driver ? "&driver=" + encodeURIComponent(r.driver) : ""), text: "add to config"}) : "";
      return table(keys.concat(job.kind === "serial" ? [""] : []), rows.map(r => keys.map(k => typeof r[k] === "object" ? JSON.stringify(r[k]) : r[k]).concat(job.kind === "serial" ? [addLink(r)] : [])));
    };
    const sunspecFound = hosts => hosts.some(h => (h.modbustcp || []).some(m => m.sunspec_base !== undefined));
    if (job.kind === "network") {
      const hosts = Array.isArray(res) ? res : [];
      return sunspecFound(hosts) ? el("div", {}, hostRows(hosts), sunspecForm(job)) : hostRows(hosts);
    }
    if (!["serial", "env"].includes(job.kind)) return table(["Step", "Outcome"], Object.entries(res || {}).map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : v]));
    if (job.kind === "serial") return generic(Array.isArray(res) ? res : (res && res.devices) || []);
    const parts = [];
    for (const net of (res && res.network_scan) || []) parts.push(el("h2", {text: `Network ${net.ifname || ""} ${net.ipv4 || ""}/${net.netmask || ""}`}), hostRows(net.hosts || []));
    if (res && res.serial_scan) parts.push(el("h2", {text: "Serial line"}), generic(res.serial_scan));
    if (res && res.speedwire_serials) parts.push(el("h2", {text: "SMA Speedwire"}), el("p", {text: res.speedwire_serials.join(", ") || "none"}));
    const msg = el("p", {class: "gen-message"});
    const gen = el("form", {class: "form generate-form"},
      el("label", {class: "check"}, el("input", {type: "checkbox", name: "tank"}), " the site has a fuel tank (dimensions in metres)"),
      ["width", "length", "height"].map(k => el("label", {}, k, el("input", {name: k, inputmode: "decimal"}))),
      el("button", {type: "submit", text: "Generate configuration from this scan"}), msg);
    gen.addEventListener("submit", async ev => {
      ev.preventDefault();
      const body = Object.fromEntries(new FormData(gen).entries());
      const r = await api(`/api/scans/${job.id}/generate`, body);
      msg.className = r.ok ? "okbox" : "warn"; msg.textContent = r.message || r.error;
    });
    parts.push(gen);
    if (sunspecFound(((res && res.network_scan) || []).flatMap(n => n.hosts || []))) parts.push(sunspecForm(job));
    return el("div", {}, parts);
  }
  function jobCard(job) {
    const card = el("section", {class: "card job", id: "job-" + job.id, "data-state": job.state},
      el("h2", {}, `${job.kind} scan `, el("small", {text: `${job.state} · ${job.text}`})),
      job.state === "running" ? [el("progress", {max: 1, value: job.fraction}),
        el("button", {type: "button", class: "cancel", text: "Cancel", onclick: () => api(`/api/scans/${job.id}/cancel`, {})})] : null,
      job.error ? el("p", {class: "error", text: job.error}) : null,
      job.state === "done" || (job.state === "cancelled" && job.result) ? resultView(job) : null);
    return card;
  }
  if (page === "scans") {
    const box = document.getElementById("jobs");
    const shown = {};
    const render = jobs => {
      for (const j of jobs) {
        const key = j.state + j.fraction + j.text;
        if (shown[j.id] === key) continue;
        shown[j.id] = key;
        const old = document.getElementById("job-" + j.id), card = jobCard(j);
        if (old) old.replaceWith(card); else box.prepend(card);
      }
    };
    const poll = async () => { try { render((await api("/api/scans")).reverse()); } catch (e) { /* next */ } };
    document.querySelectorAll(".scan-form").forEach(f => f.addEventListener("submit", async ev => {
      ev.preventDefault();
      const body = Object.fromEntries(new FormData(f).entries()); body.kind = f.dataset.kind;
      if (body.kind === "action") body.kind = ev.submitter.value;
      const r = await api("/api/scans", body);
      if (r.error) f.append(el("p", {class: "error", text: r.error})); else poll();
    }));
    poll(); setInterval(poll, 1000);
  }

  // -- logs --------------------------------------------------------------------------------------------
  if (page === "logs") {
    const sel = document.getElementById("log-program"), pre = document.getElementById("log-text"), follow = document.getElementById("log-follow");
    let offset = 0, prog = null;
    const load = async () => {
      if (!sel.value) return;
      if (prog !== sel.value) { prog = sel.value; offset = 0; pre.textContent = ""; history.replaceState(null, "", "?program=" + encodeURIComponent(prog)); }
      const r = await api(`/api/logs/${encodeURIComponent(prog)}?offset=${offset}`);
      if (r.error) { pre.textContent = r.error; return; }
      if (r.text) { pre.textContent = (pre.textContent + r.text).slice(-200000); if (follow.checked) pre.scrollTop = pre.scrollHeight; }
      offset = r.offset;
    };
    sel.addEventListener("change", load); load();
    setInterval(() => { if (follow.checked) load(); }, 2000);
  }
})();
