// pymk operator console: search a user, see its recommendations and ego network, ask "why this person",
// act (dismiss, block) through the public API, watch the service's metrics and read the model card.
// Every call goes to this service's own API with the operator's key (Authorization: Bearer); libraries are
// the bundled cytoscape and chart.js (pymk/console/static/vendor), nothing is fetched from elsewhere.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { user: null, k: 10, cy: null, why: null, charts: {}, statsTimer: null };
window.pymk = state; // for the browser tests and the curious operator

function keyHeader() {
  const key = $("#key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// A JSON call; throws an Error whose message is the service's own words (never a stack trace).
async function api(method, path, body) {
  let r;
  try {
    r = await fetch(path, {
      method,
      headers: { ...keyHeader(), ...(body ? { "Content-Type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
  } catch (e) {
    throw new Error("the service did not answer (is pymk serve running?)");
  }
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (!r.ok) {
    let detail = data && data.detail;
    if (Array.isArray(detail)) detail = detail.map((d) => d.msg).join("; ");
    const why = {
      401: "this service asks for an API key: paste an admin key above",
      403: "this key may not do that (it needs the admin scope)",
      429: "rate limit reached: try again in a moment",
    }[r.status];
    throw new Error(detail ? `${detail}${why ? ` (${why})` : ""}` : (why || `the service answered ${r.status}`));
  }
  return data;
}

function say(text, kind = "error") {
  const m = $("#message");
  if (!text) { m.hidden = true; m.textContent = ""; return; }
  m.hidden = false;
  m.className = kind;
  m.textContent = text;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

// a user as the operator knows them: "name (id)" when the service has display names (PYMK_USER_NAMES), else the id
function who(id, names) {
  const name = names && names[String(id)];
  return name ? `${name} (${id})` : String(id);
}

// -- search, recommendations, ego network ------------------------------------------------------------------
async function show(user, k) {
  say("");
  $("#why-panel").hidden = true;
  let ego;
  try {
    ego = await api("GET", `/v1/console/users/${encodeURIComponent(user)}/ego?k=${k}`);
  } catch (e) {
    $("#recs").hidden = true;
    $("#summary").textContent = "";
    drawEgo(null);
    say(`User ${user}: ${e.message}`);
    return;
  }
  state.user = ego.user_id;
  state.k = k;
  const notes = [`${ego.friends} friends`, `${ego.recommendations.length} recommendations`,
                 ego.cached ? "from the cache" : "computed now"];
  if (ego.degraded) notes.push(`degraded: ${ego.degraded_sources.join(", ")}`);
  $("#summary").textContent = `User ${who(ego.user_id, ego.names)}: ${notes.join(" · ")}`;
  if (ego.degraded) say(`Served degraded (${ego.degraded_sources.join(", ")}): some stores did not answer; ` +
                        "the list comes from what this worker holds.", "info");
  fillTable(ego);
  drawEgo(ego);
}

function fillTable(ego) {
  const body = $("#recs tbody");
  body.replaceChildren();
  for (const r of ego.recommendations) {
    body.append(el("tr", { "data-user": r.user_id },
      el("td", { class: "num" }, r.rank),
      el("td", {}, who(r.user_id, ego.names)),
      el("td", { class: "num" }, r.score.toFixed(4)),
      el("td", { class: "num" }, r.mutual_friends),
      el("td", {}, r.mutual_sample.map((m) => who(m, ego.names)).join(", ")),
      el("td", {}, r.source),
      el("td", {},
        el("button", { class: "why", onclick: () => why(r.user_id) }, "why"),
        el("button", { class: "dismiss", onclick: () => act("dismissals", { candidate_id: r.user_id }, r.user_id) }, "dismiss"),
        el("button", { class: "block", onclick: () => act("blocks", { blocked_id: r.user_id }, r.user_id) }, "block"))));
  }
  $("#recs").hidden = ego.recommendations.length === 0;
  if (!ego.recommendations.length) say(`User ${ego.user_id} has no recommendations right now.`, "info");
}

function drawEgo(ego) {
  if (state.cy) { state.cy.destroy(); state.cy = null; }
  if (!ego) return;
  const nodes = new Map();
  nodes.set(ego.user_id, "me");
  for (const f of ego.friends_drawn) nodes.set(f, "friend");
  for (const r of ego.recommendations) nodes.set(r.user_id, "rec");
  const elements = [...nodes].map(([id, kind]) => ({ data: { id: String(id), label: (ego.names || {})[String(id)] || String(id), kind } }));
  ego.edges.forEach(([a, b], i) => {
    if (nodes.has(a) && nodes.has(b)) elements.push({ data: { id: `e${i}`, source: String(a), target: String(b) } });
  });
  state.cy = cytoscape({
    container: $("#ego"),
    elements,
    layout: { name: "concentric", concentric: (n) => ({ me: 3, friend: 2, rec: 1 })[n.data("kind")], levelWidth: () => 1,
              minNodeSpacing: 12, animate: false },
    style: [
      { selector: "node", style: { label: "data(label)", "font-size": 9, width: 16, height: 16, "text-valign": "bottom" } },
      { selector: 'node[kind = "me"]', style: { "background-color": "#1d2433", width: 26, height: 26 } },
      { selector: 'node[kind = "friend"]', style: { "background-color": "#7aa2e3" } },
      { selector: 'node[kind = "rec"]', style: { "background-color": "#f0a030", shape: "round-rectangle" } },
      { selector: "edge", style: { width: 1, "line-color": "#c5cbd8", "curve-style": "haystack" } },
      { selector: ".hl", style: { "line-color": "#f0a030", width: 2.5, "background-color": "#e0621b" } },
    ],
  });
  state.cy.on("tap", 'node[kind = "rec"]', (evt) => why(Number(evt.target.id())));
}

// -- why this person --------------------------------------------------------------------------------------
async function why(cand) {
  let x;
  try {
    x = await api("GET", `/v1/console/users/${state.user}/explanations/${cand}`);
  } catch (e) {
    say(`Explanation of ${cand} for ${state.user}: ${e.message}`);
    return;
  }
  document.querySelectorAll("#recs tr").forEach((tr) => tr.classList.toggle("selected", tr.dataset.user === String(cand)));
  if (state.cy) {
    state.cy.elements().removeClass("hl");
    const node = state.cy.getElementById(String(cand));
    node.addClass("hl");
    node.connectedEdges().addClass("hl");
  }
  $("#why-panel").hidden = false;
  $("#why-title").textContent = `Why ${who(cand, x.names)} for ${who(state.user, x.names)}`;
  const facts = el("dl");
  const add = (k, v) => facts.append(el("dt", {}, k), el("dd", {}, v));
  if (!x.in_stage1) add("Stage 1", x.reason || "not a candidate");
  else {
    add("Stage-1 sources", x.sources.join(", "));
    add("Stage-1 position", `${x.stage1_position} of ${x.stage1_candidates}`);
    add("Ranker", `${x.ranker}: score ${x.score === null ? "-" : x.score.toFixed(4)}, rank ${x.rank ?? "-"}`);
    for (const [name, v] of Object.entries(x.signals)) add(name.toUpperCase(), v.toFixed(5));
  }
  add("Mutual friends", `${x.mutual_friends}${x.mutual_sample.length ? ": " + x.mutual_sample.map((m) => who(m, x.names)).join(", ") : ""}`);
  $("#why-facts").replaceChildren(facts);
  const canvas = $("#why-chart");
  if (state.why) { state.why.destroy(); state.why = null; }
  canvas.parentElement.hidden = !x.contributions;
  if (x.contributions) {
    const top = x.contributions.features.slice(0, 12);
    state.why = new Chart(canvas, {
      type: "bar",
      data: { labels: top.map((f) => `${f.name} = ${f.value === null ? "n/a" : +f.value.toFixed(4)}`),
              datasets: [{ label: "contribution to the ranker's score", data: top.map((f) => f.contribution),
                           backgroundColor: top.map((f) => (f.contribution >= 0 ? "#2e7d4f" : "#b3261e")) }] },
      options: { indexAxis: "y", animation: false, maintainAspectRatio: false,
                 plugins: { title: { display: true, text: `LightGBM contributions (bias ${x.contributions.bias.toFixed(3)})` } } },
    });
  } else if (x.in_stage1) {
    facts.append(el("dt", {}, "Contributions"), el("dd", {}, `the ${x.ranker} ranker is a heuristic: its score is the signal above`));
  }
}

// -- actions ----------------------------------------------------------------------------------------------
async function act(kind, body, cand) {
  try {
    const res = await api("POST", `/v1/users/${state.user}/${kind}`, body);
    say(`${kind === "blocks" ? "Blocked" : "Dismissed"} ${cand} for ${state.user}` +
        (res.degraded ? " (Redis did not take it yet: applied here, replayed when it returns)" : ""), "info");
  } catch (e) {
    say(`Could not ${kind === "blocks" ? "block" : "dismiss"} ${cand}: ${e.message}`);
    return;
  }
  const keep = $("#message").textContent;
  await show(state.user, state.k);
  say(keep, "info");
}

// -- live charts ------------------------------------------------------------------------------------------
function lineChart(canvas, title, labels) {
  return new Chart(canvas, {
    type: "line",
    data: { labels: [], datasets: labels.map((l) => ({ label: l, data: [], pointRadius: 0, tension: 0.2 })) },
    options: { animation: false, maintainAspectRatio: false, plugins: { title: { display: true, text: title } },
               scales: { y: { beginAtZero: true } } },
  });
}

function push(chart, label, values, keep = 60) {
  chart.data.labels.push(label);
  values.forEach((v, i) => chart.data.datasets[i].data.push(v));
  if (chart.data.labels.length > keep) {
    chart.data.labels.shift();
    chart.data.datasets.forEach((d) => d.data.shift());
  }
  chart.update();
}

const CHART_STEPS = ["stage1", "features", "rank", "explain", "cache", "sync"]; // the request-flow steps charted
let last = null;
async function poll() {
  let s;
  try {
    s = await api("GET", "/v1/console/stats");
  } catch (e) {
    $("#redis").textContent = "metrics unavailable";
    return;
  }
  const badge = $("#redis");
  badge.textContent = `redis: ${s.redis}`;
  badge.className = `badge ${s.redis}`;
  const t = new Date().toLocaleTimeString();
  const c = state.charts;
  // rates over the last interval, from the cumulative counters
  const now = { req: s.requests.cached + s.requests.uncached, hit: s.cache.hit || 0, miss: s.cache.miss || 0,
                degraded: Object.values(s.degraded).reduce((a, b) => a + b, 0), events: s.stream_events };
  const d = last ? Object.fromEntries(Object.keys(now).map((k) => [k, now[k] - last[k]])) : null;
  last = now;
  push(c.latency, t, [s.request_p50_ms, s.request_p99_ms]);
  push(c.cache, t, [d && d.hit + d.miss ? d.hit / (d.hit + d.miss) : s.cache_hit_rate, d ? d.degraded : 0]);
  push(c.steps, t, CHART_STEPS.map((k) => (s.steps[k] ? s.steps[k].mean_ms : null)));
  push(c.stream, t, [d ? d.events : 0, s.stream_lag_mean_s === null ? null : s.stream_lag_mean_s * 1e3]);
}

function startCharts() {
  state.charts = {
    latency: lineChart($("#chart-latency"), "request latency (ms, bucket bound)", ["p50", "p99"]),
    cache: lineChart($("#chart-cache"), "cache hit rate / degraded requests", ["hit rate", "degraded"]),
    steps: lineChart($("#chart-steps"), "mean time per step (ms)", CHART_STEPS),
    stream: lineChart($("#chart-stream"), "stream: events applied / mean lag (ms)", ["events", "lag ms"]),
  };
  poll();
  state.statsTimer = setInterval(poll, 2000);
}

// -- model card -------------------------------------------------------------------------------------------
async function card() {
  let m;
  try {
    m = await api("GET", "/v1/console/model");
  } catch (e) {
    $("#model").textContent = "model: unavailable";
    $("#card").textContent = `The model card could not be read: ${e.message}`;
    return;
  }
  $("#model").textContent = `model ${m.model_version} · ${m.users.toLocaleString()} users · ` +
                            `${m.edges.toLocaleString()} friendships · ranker ${m.ranker}`;
  const box = $("#card");
  box.replaceChildren();
  const facts = el("dl");
  for (const [k, v] of [["version", m.model_version], ["built", m.created_at], ["pymk", m.pymk_version],
                        ["from", m.source && (m.source.path || m.source.edges || JSON.stringify(m.source))],
                        ["executor", m.executor && (m.executor.kind || JSON.stringify(m.executor))]]) {
    if (v) facts.append(el("dt", {}, k), el("dd", {}, v));
  }
  box.append(facts);
  const stages = el("table", { id: "stages" }, el("thead", {}, el("tr", {}, el("th", {}, "build stage"), el("th", {}, "seconds"), el("th", {}, "what it chose"))));
  const tb = el("tbody");
  for (const [name, st] of Object.entries(m.stages || {})) {
    // the ranker stage records what its validation preferred; the config may ask for a ranker regardless
    let chose = st.chosen ? `${st.chosen}` : (st.users ? `${st.users.toLocaleString()} users` : "");
    if (name === "ranker") chose = st.chosen && st.chosen !== m.ranker ?
      `serving ${m.ranker} (the config's; validation preferred ${st.chosen})` : `serving ${m.ranker}`;
    tb.append(el("tr", {}, el("td", {}, name), el("td", { class: "num" }, st.seconds === undefined ? "-" : st.seconds.toFixed(1)), el("td", {}, chose)));
  }
  stages.append(tb);
  box.append(stages);
  if (!m.evaluation) {
    box.append(el("p", { class: "muted", id: "no-eval" },
      m.evaluation_error ? `Evaluation unreadable: ${m.evaluation_error}` :
      "No evaluation recorded for this model. Run `pymk eval --edges FILE --json MODEL/eval.json` to show one here."));
    return;
  }
  const ev = m.evaluation;
  const rows = Object.entries(ev.methods || {}).map(([method, metrics]) => ({ method, ...metrics }));
  const table = el("table", { id: "evaluation" });
  const cols = rows.length ? Object.keys(rows[0]) : [];
  table.append(el("thead", {}, el("tr", {}, ...cols.map((c) => el("th", {}, c)))));
  const eb = el("tbody");
  for (const r of rows) eb.append(el("tr", {}, ...cols.map((c) => el("td", {}, typeof r[c] === "number" ? +r[c].toFixed(4) : r[c]))));
  table.append(eb);
  const notes = [`${(ev.users || 0).toLocaleString()} users, ${(ev.test_edges || 0).toLocaleString()} test edges`];
  if (ev.two_hop_ceiling !== undefined) notes.push(`2-hop ceiling ${ev.two_hop_ceiling.toFixed(4)}`);
  if (ev.stage1_recall && ev.stage1_recall["@1000"] !== undefined) notes.push(`Stage-1 recall@1000 ${ev.stage1_recall["@1000"].toFixed(4)}`);
  box.append(el("h3", {}, `Evaluation${ev.dataset ? ` on ${ev.dataset}` : ""}`), el("p", { class: "muted" }, notes.join(" · ")), table);
}

// -- start ------------------------------------------------------------------------------------------------
$("#key").value = sessionStorage.getItem("pymk-key") || "";
$("#key").addEventListener("change", () => { sessionStorage.setItem("pymk-key", $("#key").value.trim()); card(); });
$("#search").addEventListener("submit", (e) => {
  e.preventDefault();
  const user = $("#user").value.trim();
  if (!/^\d+$/.test(user)) { say(`"${user}" is not a user id: ids are non-negative integers.`); return; }
  const k = Math.max(1, Math.min(100, Number($("#k").value) || 10));
  history.replaceState(null, "", `?user=${user}&k=${k}`);
  show(user, k);
});
if (typeof cytoscape === "undefined" || typeof Chart === "undefined") {
  say("The console's bundled libraries are missing: run scripts/build_console.sh (pymk/console/static/vendor).");
} else {
  card();
  startCharts();
  const q = new URLSearchParams(location.search);
  if (q.get("user")) { $("#user").value = q.get("user"); $("#k").value = q.get("k") || 10; show(q.get("user"), Number(q.get("k") || 10)); }
}
