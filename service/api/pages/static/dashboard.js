// The learning dashboard: versions and the gate's decisions, online metrics per version,
// search analytics, what the serving model learned, and one query's memory and rankings.
// Everything is read from the JSON API; charts are drawn here (charts.js).
(() => {
"use strict";

const { api, el, ApiError } = window.fr;
const { lineChart, barChart } = window.charts;
const $ = (id) => document.getElementById(id);
const TYPES = ["text", "image", "composed"];
const DAY_MS = 86400000;

function pct(v) { return v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)}%`; }
function num(v, d = 3) { return typeof v === "number" ? v.toFixed(d) : "–"; }
function dayMs(d) { return Date.parse(`${d}T00:00:00Z`); }
function range() { return { since: $("since").value, until: $("until").value }; }
function say(text, error = false) {
  $("board-status").textContent = text;
  $("board-status").className = error ? "error" : "muted";
}

function table(node, head, rows) {
  node.replaceChildren(
    el("thead", {}, el("tr", {}, head.map((h) => el("th", { class: h.num ? "num" : "" }, h.label)))),
    el("tbody", {}, rows.length
      ? rows.map((r) => el("tr", {}, r.map((c, i) => el("td", { class: head[i].num ? "num" : "" }, c))))
      : el("tr", {}, el("td", { colspan: head.length, class: "muted" }, "nothing yet"))),
  );
}

// ---- sign-in --------------------------------------------------------------------------------
async function session() {
  const s = await api("/dashboard/session");
  $("who").textContent = s.open ? "no API keys: open on this machine" : s.signed_in ? `signed in (${s.role})` : "";
  $("sign-out").hidden = s.open || !s.signed_in;
  const needed = !s.open && !s.signed_in;
  $("sign-in").hidden = !needed;
  $("board").hidden = needed;
  return !needed;
}

$("sign-in-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    await api("/dashboard/session", { method: "POST", json: { key: $("key").value } });
    $("key").value = "";
    $("sign-in-status").textContent = "";
    if (await session()) load();
  } catch (e) {
    $("sign-in-status").className = "error";
    $("sign-in-status").textContent = e.message;
  }
});
$("sign-out").addEventListener("click", async () => {
  await api("/dashboard/session", { method: "DELETE" });
  await session();
});

// ---- model versions -------------------------------------------------------------------------
function gateCell(run) {
  if (!run || !run.detail) return "–";
  const d = run.detail;
  const accepted = new Set(d.accepted_types || []);
  return el("ul", {}, Object.entries(d.type_reasons || {}).map(([t, why]) => {
    const p = (d.paired || {})[t];
    const ci = p ? ` (gain ${num(p.gain, 4)}, CI ${num(p.ci_low, 4)}..${num(p.ci_high, 4)}, ${p.searches} searches)` : "";
    return el("li", {}, el("strong", {}, `${t}: ${accepted.has(t) ? "accepted" : "kept"}`), ` ${why}${ci}`);
  }));
}

async function loadVersions(admin) {
  const [models, runs] = await Promise.all([api("/v1/models"), api("/v1/models/runs", { params: { limit: 200 } })]);
  const byCandidate = new Map(runs.runs.filter((r) => r.candidate).map((r) => [r.candidate, r]));
  const rows = models.versions.map((v) => {
    const metrics = (v.metrics || {}).holdout || {};
    const perType = el("ul", {}, TYPES.filter((t) => metrics[t]).map((t) =>
      el("li", {}, `${t}: ${num(metrics[t]["ips_ndcg@10"])} (${metrics[t].engaged ?? 0} engaged)`)));
    const status = el("span", {}, el("span", { class: `badge ${v.status}` }, v.status),
      v.active ? el("span", { class: "badge active" }, "active") : null);
    const activate = v.active || v.status === "rejected" ? "" : el("button", {
      type: "button", disabled: !admin, title: admin ? "" : "needs an admin",
      onclick: async () => {
        if (!confirm(`Serve ${v.version} everywhere?`)) return;
        try {
          await api(`/v1/models/${encodeURIComponent(v.version)}/activate`, { method: "POST" });
          say(`${v.version} is active.`);
          load();
        } catch (e) { say(`Could not activate: ${e.message}`, true); }
      },
    }, "Activate");
    return [v.version, new Date(v.created_at).toLocaleString(), status, perType, gateCell(byCandidate.get(v.version)), activate];
  });
  table($("versions"), [{ label: "Version" }, { label: "Created" }, { label: "Status" },
    { label: "Holdout IPS-NDCG@10 per type" }, { label: "Gate per type (reason)" }, { label: "" }], rows);
  const series = TYPES.map((t) => ({
    name: `${t} holdout NDCG`,
    points: models.versions.map((v) => [v, ((v.metrics || {}).holdout || {})[t]])
      .filter(([, m]) => m && m.engaged)
      .map(([v, m]) => [Date.parse(v.created_at), m["ips_ndcg@10"]]),
  })).filter((s) => s.points.length);
  lineChart($("timeline"), "Versions over time: holdout IPS-NDCG@10 (promoted and rejected)", series, { dates: true, yMax: 1 });
}

// ---- online metrics, analytics --------------------------------------------------------------
function perVersionSeries(days, value) {
  const by = new Map();
  for (const d of days) {
    const v = value(d);
    if (v === null || v === undefined) continue;
    if (!by.has(d.model_version)) by.set(d.model_version, []);
    by.get(d.model_version).push([dayMs(d.day), v]);
  }
  return [...by.entries()].map(([name, points]) => ({ name, points }));
}

async function loadOnline() {
  const [versions, live, volume] = await Promise.all([
    api("/v1/analytics/versions", { params: range() }),
    api("/v1/metrics/online"),
    api("/v1/analytics/volume", { params: range() }),
  ]);
  const days = versions.days;
  lineChart($("chart-ctr"), `Click-through per day and version (${versions.click_event})`, perVersionSeries(days, (d) => d.click_through), { dates: true });
  lineChart($("chart-conversion"), `Conversion per day and version (${versions.conversion_event})`, perVersionSeries(days, (d) => d.conversion), { dates: true });
  lineChart($("chart-mrr"), "Click MRR per day and version", perVersionSeries(days, (d) => d.click_mrr), { dates: true });
  const events = new Map();
  for (const d of volume.days) {
    for (const [t, c] of Object.entries(d.events)) {
      if (!events.has(t)) events.set(t, new Map());
      const m = events.get(t);
      m.set(d.day, (m.get(d.day) || 0) + c.events);
    }
  }
  lineChart($("chart-events"), "Feedback events per day", [...events.entries()].map(([t, m]) => ({
    name: t, points: [...m.entries()].map(([d, n]) => [dayMs(d), n]),
  })), { dates: true });
  const searches = TYPES.map((t) => ({
    name: `${t} searches`,
    points: volume.days.filter((d) => d.query_type === t).map((d) => [dayMs(d.day), d.searches]),
  })).filter((s) => s.points.length);
  lineChart($("chart-types"), "Searches per day and query type", searches, { dates: true });
  table($("live"), [{ label: "Version" }, { label: "Searches", num: 1 }, { label: "CTR", num: 1 },
    { label: "Click MRR", num: 1 }, { label: "Purchase rate", num: 1 }, { label: "Drift alarms", num: 1 }],
  Object.entries(live.versions).map(([v, m]) => [v, m.searches, pct(m.ctr), num(m.click_mrr), pct(m.purchase_rate),
    m.drifts ? el("strong", { class: "error" }, m.drifts) : "0"]));
}

function queryTable(node, list) {
  table(node, [{ label: "Query" }, { label: "Type" }, { label: "Searches", num: 1 }, { label: "No results", num: 1 },
    { label: "CTR", num: 1 }, { label: "Conversion", num: 1 }],
  list.queries.map((q) => [
    q.query ? el("button", { type: "button", class: "linklike", onclick: () => lookUp(q.query) }, q.query) : el("em", {}, "(photo)"),
    q.query_type, q.searches, q.no_results, pct(q.click_through), pct(q.conversion)]));
}

async function loadAnalytics() {
  const params = range();
  const [top, none, unclicked, positions] = await Promise.all([
    api("/v1/analytics/queries", { params: { ...params, list: "top", limit: 15 } }),
    api("/v1/analytics/queries", { params: { ...params, list: "no_results", limit: 15 } }),
    api("/v1/analytics/queries", { params: { ...params, list: "no_clicks", limit: 15 } }),
    api("/v1/analytics/positions", { params }),
  ]);
  queryTable($("top-queries"), top);
  queryTable($("no-results"), none);
  queryTable($("no-clicks"), unclicked);
  const clicks = positions.events[top.click_event] || [];
  barChart($("chart-positions"), `Where ${top.click_event}s came from (position)`,
    clicks.filter((p) => p.position <= 30).map((p) => ({ label: String(p.position), value: p.events })));
}

// ---- what the serving model learned ---------------------------------------------------------
async function loadServing() {
  const m = await api("/v1/models/serving");
  lineChart($("chart-bias"), `Position bias (${m.position_bias.source}, eta ${num(m.position_bias.eta, 2)}): P(examined)`,
    [{ name: m.version, points: m.position_bias.examination.map((p, i) => [i + 1, p]) }], { yMax: 1 });
  barChart($("chart-class-weights"), "Class weights of the training loss",
    Object.entries(m.class_weights || {}).filter(([, v]) => typeof v === "number").map(([k, v]) => ({ label: k, value: v })), { colourBy: true });
  const terms = [...new Set(Object.values(m.mix || {}).flatMap((w) => Object.keys(w)))];
  table($("mix"), [{ label: "Query type" }, ...terms.map((t) => ({ label: t, num: 1 }))],
    Object.entries(m.mix || {}).map(([type, w]) => [type, ...terms.map((t) => num(w[t]))]));
}

// ---- one query ------------------------------------------------------------------------------
async function lookUp(query) {
  $("query").value = query;
  try {
    const [mem, ranks] = await Promise.all([
      api("/v1/memory", { params: { query, limit: 10 } }),
      api("/v1/analytics/rankings", { params: { query, ...range() } }),
    ]);
    $("memory").replaceChildren(
      el("p", { class: "muted" }, `normal form "${mem.normal}", ${num(mem.searches, 1)} searches (decayed)`),
      (() => { const t = el("table", { class: "data" }); table(t, [{ label: "Product" }, { label: "Looks", num: 1 }, { label: "Events" }, { label: "Lift", num: 1 }],
        mem.products.map((p) => [p.title || p.product_id, num(p.examinations, 1), Object.entries(p.events).map(([k, v]) => `${k} ${num(v, 1)}`).join(", "), num(p.lift)])); return t; })(),
      mem.similar_queries.length ? el("p", { class: "muted" }, `borrows from: ${mem.similar_queries.map((s) => `${s.query} (${num(s.similarity, 2)})`).join(", ")}`) : "",
    );
    $("rankings").replaceChildren(...(ranks.versions.length ? ranks.versions.map((v) => el("div", {},
      el("h4", {}, `${v.model_version} · ${new Date(v.searched_at).toLocaleString()}`),
      el("ol", {}, v.products.slice(0, 10).map((p) => el("li", {}, p.title || p.product_id)))))
      : [el("p", { class: "muted" }, "not searched in this range")]));
  } catch (e) {
    $("memory").replaceChildren(el("p", { class: "error" }, e.message));
  }
}

$("query-form").addEventListener("submit", (ev) => { ev.preventDefault(); lookUp($("query").value.trim()); });

// ---- loading --------------------------------------------------------------------------------
async function load() {
  say("Loading…");
  const s = await api("/dashboard/session");
  const admin = s.open || s.role === "admin";
  const parts = [loadVersions(admin), loadOnline(), loadAnalytics(), loadServing()];
  const failed = (await Promise.allSettled(parts)).filter((r) => r.status === "rejected");
  if (failed.length) say(`Some panels failed: ${failed.map((f) => f.reason.message).join("; ")}`, true);
  else say(`Updated ${new Date().toLocaleTimeString()}.`);
  document.body.dataset.loaded = "1";
}

$("range").addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
$("train").addEventListener("click", async () => {
  try {
    const run = await api("/v1/models/train", { method: "POST" });
    say(`Refresh ${run.run_id} queued; reload in a minute.`);
  } catch (e) { say(`Could not start a refresh: ${e.message}`, true); }
});

(async () => {
  const today = new Date();
  $("until").value = today.toISOString().slice(0, 10);
  $("since").value = new Date(today.getTime() - 29 * DAY_MS).toISOString().slice(0, 10);
  if (await session()) load();
})();
window.addEventListener("unhandledrejection", (ev) => {
  if (ev.reason instanceof ApiError) say(ev.reason.message, true);
});
})();
