/* seqserve dashboard: models and their quality, live counters, and a live forecast view.
   Plain browser JavaScript, no build step, no third-party code. Every call goes through the
   public API with the key typed into the page (kept in sessionStorage: this tab only). */
"use strict";

const KEY_STORAGE = "seqserve.apiKey";
const WINDOW = 16; // WebSocket messages in flight, as the Python client's default
const STATS_EVERY_MS = 2000;

const state = {
  key: sessionStorage.getItem(KEY_STORAGE) || "",
  models: [],
  datasets: [],
  lastStats: null,
  live: null,
};

const $ = (selector, root = document) => root.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function notice(message) {
  const box = $("#notice");
  if (!message) { box.hidden = true; box.textContent = ""; return; }
  box.hidden = false;
  box.textContent = message;
}

function authHeaders(extra = {}) {
  const headers = { ...extra };
  if (state.key) headers.Authorization = "Bearer " + state.key;
  return headers;
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: authHeaders(options.headers) });
  const text = await response.text();
  let body = null;
  if (text) {
    try { body = JSON.parse(text); } catch (_) { body = { error: text.slice(0, 200) }; }
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

function fmt(value, digits = 4) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (typeof value !== "number") return String(value);
  const a = Math.abs(value);
  if (a !== 0 && (a < 0.001 || a >= 1e6)) return value.toExponential(2);
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  return Number(value.toPrecision(digits)).toLocaleString("en-US", { maximumFractionDigits: 6 });
}

/* ---------------------------------------------------------------- models */

const METRIC_COLUMNS = ["mae", "rmse", "mase", "mape", "smape", "accuracy", "macro_f1"];
const HIGHER_IS_BETTER = new Set(["accuracy", "macro_f1"]);

function isBaseline(name) {
  return /naive|majority|baseline|ets|arima|mstl|theta|drift|mean|formula/i.test(name);
}

/* The metric rows of a manifest: every entry that is an object holding numeric metrics. */
function metricRows(metrics) {
  const rows = [];
  for (const [name, value] of Object.entries(metrics || {})) {
    if (!value || typeof value !== "object" || Array.isArray(value)) continue;
    const numbers = {};
    for (const column of METRIC_COLUMNS) if (typeof value[column] === "number") numbers[column] = value[column];
    if (Object.keys(numbers).length) rows.push({ name, numbers, baseline: isBaseline(name) });
  }
  rows.sort((a, b) => Number(a.baseline) - Number(b.baseline));
  return rows;
}

function metricTable(metrics, gate) {
  const rows = metricRows(metrics);
  if (!rows.length) return el("p", { class: "muted", text: "No test-split metrics in the manifest." });
  const columns = METRIC_COLUMNS.filter((c) => rows.some((r) => c in r.numbers));
  const primary = columns.includes("mase") ? "mase" : columns[0];
  const baselines = rows.filter((r) => r.baseline && primary in r.numbers);
  const better = (a, b) => (HIGHER_IS_BETTER.has(primary) ? a > b : a < b);
  let best = null;
  for (const r of baselines) if (!best || better(r.numbers[primary], best.numbers[primary])) best = r;
  const bestName = (gate && gate.best_baseline) || (best && best.name);
  const table = el("table", { class: "metrics" });
  table.append(el("thead", {}, el("tr", {}, el("th", { text: "" }),
    ...columns.map((c) => el("th", { class: "num", text: c.toUpperCase() })))));
  const body = el("tbody");
  for (const r of rows) {
    const label = r.baseline ? r.name.replaceAll("_", " ") : `${r.name} (model)`;
    const tr = el("tr", {
      class: (r.baseline ? "" : "model-row") + (r.name === bestName ? " best" : ""),
      "data-row": r.name,
    }, el("td", {
      text: label + (r.name === bestName ? " ★" : ""),
      // the gate's baseline is the best *naive* one; the verdict's ratio names its own (best of all)
      ...(r.name === bestName && gate && gate.best_baseline
        ? { title: "the naive baseline the quality gate was decided against" } : {}),
    }));
    for (const c of columns) {
      const v = r.numbers[c];
      tr.append(el("td", { class: "num", "data-metric": c, "data-value": v === undefined ? "" : String(v), text: fmt(v) }));
    }
    body.append(tr);
  }
  table.append(body);
  return el("div", { class: "table-wrap" }, table);
}

/* What training found and learned (manifest `seasons`, `time`, `verdict`), in words. */
function seasonsText(seasons, time) {
  const found = seasons.seasons && seasons.seasons.length ? `[${seasons.seasons.join(", ")}]` : "none";
  const how = { off: "off (--season 0)", given: `${found} (--season)` }[seasons.setting];
  const where = time && time.column ? ` · time column ${time.column}, ${time.frequency}` : "";
  if (how) return `Seasons: ${how}${where}`;
  const source = { calendar: "from the sampling period", values: "from the values alone" }[seasons.source] || "";
  return `Seasons: ${found} found ${source}${where}`.replace(/ +/g, " ");
}

function verdictNotes(manifest) {
  const notes = [];
  if (manifest.seasons) notes.push(el("p", { class: "muted", "data-testid": "seasons", text: seasonsText(manifest.seasons, manifest.time) }));
  const verdict = manifest.verdict;
  if (verdict && verdict.text) {
    const ratio = typeof verdict.ratio_to_best_baseline === "number"
      ? ` · ${fmt(verdict.ratio_to_best_baseline, 3)}× the best baseline (${verdict.best_baseline})` : "";
    notes.push(el("p", { class: "gate-reason", "data-testid": "verdict", text: `Verdict: ${verdict.text}${ratio}` }));
  }
  if (verdict && verdict.warning) notes.push(el("p", { class: "gate-reason", "data-testid": "verdict-warning", text: `Warning: ${verdict.warning}` }));
  return notes;
}

function gateBadge(gate) {
  if (!gate) return el("span", { class: "badge", "data-gate": "none", title: "no gate in this version's manifest (counts as promoted)", text: "no gate" });
  return el("span", {
    class: "badge " + (gate.promoted ? "good" : "bad"),
    "data-gate": gate.promoted ? "promoted" : "held",
    title: gate.reason || "",
    text: gate.promoted ? "promoted" : "not promoted",
  });
}

async function plotFigure(model, version, file) {
  const response = await fetch(`/v1/models/${encodeURIComponent(model)}/versions/${version}/files/${encodeURIComponent(file)}`, { headers: authHeaders() });
  if (!response.ok) return null;
  const url = URL.createObjectURL(await response.blob());
  const img = el("img", { src: url, alt: `${model} v${version} ${file}` });
  return el("a", { href: url, target: "_blank", rel: "noopener" }, el("figure", { style: "margin:0" }, img, el("figcaption", { text: file })));
}

async function renderModels() {
  const list = $("#model-list");
  list.replaceChildren();
  if (!state.models.length) {
    list.append(el("p", { class: "muted", text: "No model is loaded." }));
    return;
  }
  for (const model of state.models) {
    const versions = model.versions.slice().sort((a, b) => b.version - a.version);
    const manifests = await Promise.all(versions.map((v) =>
      api(`/v1/models/${encodeURIComponent(model.name)}/versions/${v.version}/manifest`).catch(() => ({}))));
    const card = el("div", { class: "model", "data-testid": "model-card", "data-model": model.name });
    // The version unpinned requests and new sessions get (the highest promoted one when the
    // service knows about quality gates; older services only say which is the latest).
    const defaultVersion = model.default ?? model.latest;
    const shownIndex = Math.max(0, versions.findIndex((v) => v.version === defaultVersion));
    const latest = versions[shownIndex];
    card.append(el("h3", { class: "name" }, model.name,
      el("span", { class: "badge", text: `${latest.cell.toUpperCase()} · ${latest.num_layers}×${latest.hidden_size}` }),
      el("span", { class: "muted", style: "font-weight:400;font-size:13px", text: `${latest.features.join(", ")} → ${latest.outputs.join(", ")}` })));

    const table = el("table", { class: "versions" });
    table.append(el("thead", {}, el("tr", {}, el("th", { text: "Version" }), el("th", { text: "Created" }),
      el("th", { text: "Provider" }), el("th", { text: "Gate" }))));
    const body = el("tbody");
    versions.forEach((v, i) => {
      const gate = manifests[i].gate || v.gate || null;
      body.append(el("tr", { "data-version": String(v.version) },
        el("td", { text: `v${v.version}` + (v.version === defaultVersion ? " (default)" : "") }),
        el("td", { text: (manifests[i].created || v.created || "–").replace("T", " ").replace("+00:00", " UTC") }),
        el("td", { class: "mono", text: (v.provider || "").replace("ExecutionProvider", "") }),
        el("td", {}, gateBadge(gate))));
    });
    table.append(body);
    card.append(el("div", { class: "table-wrap" }, table));

    const top = manifests[shownIndex];
    const gate = top.gate || latest.gate || null;
    card.append(el("h3", { text: `v${latest.version} on the test split` }));
    card.append(metricTable(top.metrics || latest.metrics, gate));
    if (gate && gate.reason) card.append(el("p", { class: "gate-reason", text: "Gate: " + gate.reason }));
    card.append(...verdictNotes(top));
    const pngs = (top.files || []).filter((f) => f.endsWith(".png"));
    if (pngs.length) {
      const plots = el("div", { class: "plots" });
      card.append(plots);
      for (const file of pngs) {
        const figure = await plotFigure(model.name, latest.version, file);
        if (figure) plots.append(figure);
      }
    }
    list.append(card);
  }
}

/* ---------------------------------------------------------------- stats */

function cells(row, values) {
  for (const [value, cls] of values) row.append(el("td", { class: cls || "", text: value }));
  return row;
}

function renderStats(stats) {
  const previous = state.lastStats;
  const body = $("#stats-models tbody");
  body.replaceChildren();
  for (const m of stats.models) {
    let rate = null;
    const before = previous && previous.models.find((p) => p.name === m.name);
    if (before && stats.time > previous.time) rate = (m.steps_total - before.steps_total) / (stats.time - previous.time);
    body.append(cells(el("tr", { "data-model": m.name, "data-sessions": String(m.sessions) }), [
      [m.name], [fmt(m.sessions), "num"], [fmt(m.steps_total), "num"], [rate === null ? "–" : fmt(rate, 3), "num"],
    ]));
  }
  if (!stats.models.length) body.append(el("tr", {}, el("td", { class: "empty", colSpan: 4, text: "no models" })));

  const latency = $("#stats-latency tbody");
  latency.replaceChildren();
  const ms = (v) => (v === null || v === undefined ? "–" : fmt(v * 1000, 3));
  const dataRoute = (route) => /steps|stream|predict|infer|sessions/.test(route) && !route.includes("/ui/");
  const routes = stats.latency.filter((r) => r.route !== "unmatched")
    .sort((a, b) => Number(dataRoute(b.route)) - Number(dataRoute(a.route)) || b.count - a.count);
  for (const r of routes.slice(0, 8)) {
    latency.append(cells(el("tr"), [[r.route, "mono"], [fmt(r.count), "num"], [ms(r.p50), "num"], [ms(r.p90), "num"], [ms(r.p99), "num"]]));
  }
  if (!latency.children.length) latency.append(el("tr", {}, el("td", { class: "empty", colSpan: 5, text: "no requests yet" })));

  const batches = $("#stats-batches tbody");
  batches.replaceChildren();
  for (const b of stats.batches) {
    batches.append(cells(el("tr"), [[b.model], [fmt(b.count), "num"], [fmt(b.mean, 3), "num"], [fmt(b.p90, 3), "num"]]));
  }
  if (!stats.batches.length) batches.append(el("tr", {}, el("td", { class: "empty", colSpan: 4, text: "no model calls yet" })));
  state.lastStats = stats;
}

async function pollStats() {
  try {
    renderStats(await api("/v1/ui/stats"));
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) notice("The service needs an API key: enter it above.");
  } finally {
    setTimeout(pollStats, STATS_EVERY_MS);
  }
}

/* ---------------------------------------------------------------- live view */

const PASTE = "__paste__";

function liveModels() {
  return state.models.map((m) => {
    const wanted = m.default ?? m.latest;
    const chosen = m.versions.find((v) => v.version === wanted) || m.versions[m.versions.length - 1];
    return { name: m.name, version: chosen.version, info: chosen };
  });
}

function fillLiveControls() {
  const modelSelect = $("#live-model");
  const chosen = modelSelect.value;
  modelSelect.replaceChildren(...liveModels().map((m) =>
    el("option", { value: m.name, "data-version": String(m.version), text: `${m.name} (v${m.version}, ${m.info.features.length} feature${m.info.features.length === 1 ? "" : "s"})` })));
  const preferred = liveModels().find((m) => m.info.head !== "classification" && m.info.features.length === 1);
  if (chosen && liveModels().some((m) => m.name === chosen)) modelSelect.value = chosen;
  else if (preferred) modelSelect.value = preferred.name;

  const dataSelect = $("#live-dataset");
  const current = dataSelect.value;
  dataSelect.replaceChildren(
    ...state.datasets.map((d) => el("option", { value: d.name, text: `${d.name} (${d.length.toLocaleString("en-US")} × ${d.column})` })),
    el("option", { value: PASTE, text: "Paste numbers…" }));
  if (current) dataSelect.value = current;
  else matchDataset();
  $("#paste-label").hidden = dataSelect.value !== PASTE;
}

/* The bundled series whose column is the chosen model's feature, when there is one. */
function matchDataset() {
  const model = liveModels().find((m) => m.name === $("#live-model").value);
  const match = model && state.datasets.find((d) => d.column === model.info.features[0]);
  if (match) $("#live-dataset").value = match.name;
}

function parsePasted(text, features) {
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
  let rows = lines.map((l) => l.split(/[\s,;]+/).filter(Boolean).map(Number));
  if (features === 1 && rows.length === 1 && rows[0].length > 1) rows = rows[0].map((v) => [v]);
  for (const [i, row] of rows.entries()) {
    if (row.length !== features || row.some((v) => !Number.isFinite(v))) {
      throw new Error(`line ${i + 1}: expected ${features} number${features === 1 ? "" : "s"}, got "${lines[i] ?? ""}"`);
    }
  }
  return rows;
}

function setFigure(id, value, text) {
  const node = $(id);
  node.dataset.value = value === null || value === undefined ? "" : String(value);
  node.textContent = text === undefined ? fmt(value) : text;
}

function liveStatus(text) { $("#live-status").textContent = text; }

function wsUrl(sessionId) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/v1/sessions/${encodeURIComponent(sessionId)}/stream`;
}

class LiveRun {
  constructor(model, rows, interval, chart) {
    this.model = model;
    this.rows = rows;
    this.interval = interval; // ms between readings; 0: as fast as the window allows
    this.chart = chart;
    this.sent = 0;
    this.acked = 0;
    this.forecasts = []; // forecasts[t]: made after reading t, for reading t + 1
    this.errModel = 0;
    this.errNaive = 0;
    this.scored = 0;
    this.flagged = 0; // readings outside the 95 % interval forecast for them
    this.stopped = false;
    this.sessionId = null;
  }

  async start() {
    const path = `/v1/models/${encodeURIComponent(this.model.name)}/sessions`;
    const create = (body) => api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    let created;
    if (this.startTime) {
      // A model with a clock learns the phase (time of day, week...) from the first reading's time.
      created = await create({ version: this.model.version, start_time: this.startTime }).catch((error) => {
        if (error instanceof ApiError && error.status === 422) return null; // a time it cannot read: go without
        throw error;
      });
    }
    if (!created) created = await create({ version: this.model.version });
    this.sessionId = created.session_id;
    $("#live-session").textContent = this.sessionId.slice(0, 10) + "…";
    $("#live-session").title = this.sessionId;
    // Browsers cannot add headers to a WebSocket handshake: the key travels as a subprotocol.
    const protocols = state.key ? ["seqserve.v1", "seqserve.key." + state.key] : [];
    this.ws = new WebSocket(wsUrl(this.sessionId), protocols);
    this.ws.onopen = () => this.pump();
    this.ws.onmessage = (event) => this.reply(JSON.parse(event.data));
    this.ws.onerror = () => this.fail("the WebSocket connection failed");
    this.ws.onclose = (event) => { if (!this.stopped && this.acked < this.rows.length) this.fail(`the WebSocket closed (code ${event.code})`); };
    liveStatus(`Streaming ${this.rows.length.toLocaleString("en-US")} readings through session ${this.sessionId.slice(0, 10)}…`);
  }

  pump() {
    if (this.stopped || this.ws.readyState !== WebSocket.OPEN) return;
    while (this.sent < this.rows.length && this.sent - this.acked < WINDOW) {
      if (this.interval > 0 && this.nextAt && performance.now() < this.nextAt) break;
      const t = this.sent;
      this.ws.send(JSON.stringify({ inputs: [this.rows[t]], position: t }));
      this.sent += 1;
      this.chart.series[0].points.push([t, this.rows[t][0]]);
      this.score(t);
      if (this.interval > 0) {
        this.nextAt = (this.nextAt || performance.now()) + this.interval;
        break;
      }
    }
    this.chart.request();
    if (this.interval > 0 && this.sent < this.rows.length) {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.pump(), Math.max(0, this.nextAt - performance.now()));
    }
  }

  /* Reading t is known and so is the forecast made after reading t - 1: score both. */
  score(t) {
    if (t < 1 || this.forecasts[t - 1] === undefined || t >= this.sent) return;
    if (this.scoredUpTo !== undefined && t <= this.scoredUpTo) return;
    const actual = this.rows[t][0];
    this.errModel += Math.abs(this.forecasts[t - 1] - actual);
    this.errNaive += Math.abs(this.rows[t - 1][0] - actual);
    this.scored += 1;
    this.scoredUpTo = t;
    const mae = this.errModel / this.scored, naive = this.errNaive / this.scored;
    setFigure("#live-mae", mae);
    setFigure("#live-naive", naive);
    setFigure("#live-ratio", naive > 0 ? mae / naive : null, naive > 0 ? (mae / naive).toFixed(3) : "–");
  }

  reply(message) {
    if (this.stopped) return;
    if (!message.outputs) {
      this.fail(`the service refused a step: ${message.error || "HTTP " + message.status} (${message.code || "error"})`);
      return;
    }
    const t = this.acked;
    this.acked += 1;
    const forecast = message.outputs[0][0];
    this.forecasts[t] = forecast;
    this.chart.series[1].points.push([t + 1, forecast]);
    // A model with quantile levels: its 95 % interval for the next reading, and whether the
    // reading just sent fell outside the interval forecast for it one step earlier.
    const q = message.quantiles;
    if (q && q["0.025"] && q["0.975"]) this.chart.band.points.push([t + 1, q["0.025"][0][0], q["0.975"][0][0]]);
    if (message.anomaly && message.anomaly.outside_95) {
      this.chart.marks.points.push([t, this.rows[t][0]]);
      this.flagged += 1;
      setFigure("#live-flagged", this.flagged);
    }
    this.chart.request();
    setFigure("#live-position", message.position);
    this.score(t + 1);
    if (this.acked === this.rows.length) {
      this.finish(`Done: ${this.acked.toLocaleString("en-US")} readings streamed; the last forecast is for the reading after the series.`);
      return;
    }
    this.pump();
  }

  fail(message) {
    if (this.stopped) return;
    notice("Live view: " + message);
    this.finish("Stopped: " + message);
  }

  finish(status) {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.timer);
    liveStatus(status);
    document.body.dataset.live = "done";
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
    if (this.sessionId) {
      api(`/v1/sessions/${encodeURIComponent(this.sessionId)}`, { method: "DELETE" }).catch(() => {});
    }
    $("#live-start").disabled = false;
    $("#live-stop").disabled = true;
  }
}

let chart = null;

async function startLive(event) {
  event.preventDefault();
  notice("");
  if (state.live && !state.live.stopped) state.live.finish("Stopped.");
  const model = liveModels().find((m) => m.name === $("#live-model").value);
  if (!model) { notice("No model to stream to."); return; }
  const features = model.info.features.length;
  if (model.info.head === "classification") {
    notice(`${model.name} is a classifier; the live view plots forecasts. Pick a forecasting model.`);
    return;
  }
  let rows;
  let startTime = null;
  try {
    const choice = $("#live-dataset").value;
    if (choice === PASTE) {
      rows = parsePasted($("#live-paste").value, features);
    } else {
      if (features !== 1) throw new Error(`${model.name} takes ${features} features per reading; bundled series have one. Paste numbers instead.`);
      const series = await api(`/v1/ui/datasets/${encodeURIComponent(choice)}`);
      rows = series.values.map((v) => [v]);
      const first = (series.timestamps || [])[0];
      if (model.info.clock && /^\d{4}-\d{2}-\d{2}$/.test(first || "")) startTime = first + "T00:00:00Z";
      else if (model.info.clock && /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}/.test(first || "")) startTime = first;
    }
  } catch (error) {
    notice(error.message);
    return;
  }
  const limit = Math.max(2, parseInt($("#live-limit").value, 10) || rows.length);
  rows = rows.slice(0, limit);
  if (rows.length < 2) { notice("Give at least two readings."); return; }
  const speed = Number($("#live-speed").value);
  chart.series[0].name = `actual (${model.info.features[0]})`;
  chart.series[1].name = `forecast (${model.info.outputs[0]})`;
  chart.clear();
  ["#live-mae", "#live-naive", "#live-ratio"].forEach((id) => setFigure(id, null, "–"));
  const levels = model.info.quantiles || [];
  setFigure("#live-flagged", levels.length ? 0 : null, levels.length ? "0" : "–");
  setFigure("#live-position", 0);
  document.body.dataset.live = "running";
  $("#live-start").disabled = true;
  $("#live-stop").disabled = false;
  const run = new LiveRun(model, rows, speed > 0 ? 1000 / speed : 0, chart);
  run.startTime = startTime;
  state.live = run;
  try {
    await run.start();
  } catch (error) {
    run.fail(error.message);
  }
}

/* ---------------------------------------------------------------- start-up */

async function loadAll() {
  try {
    const [models, datasets] = await Promise.all([api("/v1/models"), api("/v1/ui/datasets")]);
    state.models = models.models;
    state.datasets = datasets.datasets;
    notice("");
  } catch (error) {
    notice(error instanceof ApiError && error.status === 401
      ? "The service needs an API key: enter it above."
      : "Could not load the models: " + error.message);
    return;
  }
  fillLiveControls();
  await renderModels();
  document.body.dataset.ready = "true";
}

function init() {
  chart = new window.LineChart($("#live-chart"), [
    { name: "actual", color: getComputedStyle(document.documentElement).getPropertyValue("--actual").trim(), points: [], width: 2.2 },
    { name: "forecast", color: getComputedStyle(document.documentElement).getPropertyValue("--forecast").trim(), points: [], width: 1.3 },
  ],
  { name: "95 % interval", color: getComputedStyle(document.documentElement).getPropertyValue("--band").trim(), points: [] },
  { name: "outside 95 %", color: getComputedStyle(document.documentElement).getPropertyValue("--flagged").trim(), points: [] });
  $("#api-key").value = state.key;
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.key = $("#api-key").value.trim();
    if (state.key) sessionStorage.setItem(KEY_STORAGE, state.key); else sessionStorage.removeItem(KEY_STORAGE);
    loadAll();
  });
  $("#live-form").addEventListener("submit", startLive);
  $("#live-stop").addEventListener("click", () => state.live && state.live.finish("Stopped by you."));
  $("#live-model").addEventListener("change", () => { matchDataset(); $("#paste-label").hidden = $("#live-dataset").value !== PASTE; });
  $("#live-dataset").addEventListener("change", () => { $("#paste-label").hidden = $("#live-dataset").value !== PASTE; });
  loadAll();
  pollStats();
}

document.addEventListener("DOMContentLoaded", init);
