// The runs, playground and arena pages (helpers and wiring: app.js).
"use strict";

// ---- runs -------------------------------------------------------------------------------------
async function loadRuns() {
  const runs = (await api("/ui/api/runs")).data;
  const body = $("#run-table tbody");
  body.textContent = "";
  for (const r of runs) {
    const report = el("button", {type: "button", textContent: "Open report"});
    report.addEventListener("click", () => {
      const frame = $("#run-report");
      frame.src = `/ui/runs/report?model=${encodeURIComponent(r.model)}`;
      frame.classList.remove("hidden");
    });
    const drift = el("button", {type: "button", textContent: "Drift"});
    drift.addEventListener("click", guard(() => loadDrift(r.model)));
    const downloads = el("span", {className: "buttons"});
    for (const fmt of ["adapter", "merged", "gguf"]) {
      const b = el("button", {type: "button", textContent: fmt});
      b.addEventListener("click", () => exportRun(r.model, fmt));
      downloads.append(b);
    }
    body.append(el("tr", {}, el("td", {textContent: r.model}), el("td", {textContent: r.method || r.kind}),
      el("td", {textContent: r.red_flags || "—", className: `verdict-${r.red_flags}`}), el("td", {}, report), el("td", {}, drift), el("td", {}, downloads)));
  }
  if (!runs.length) body.append(el("tr", {}, el("td", {colSpan: 6, textContent: "no runs yet: a finished job appears here"})));
}

// The model's drift checks over time (GET /v1/drift?model=ID): the latest verdict, a chart of each statistic, a table.
const DRIFT_FIELDS = ["checked_at", "since", "verdict", "n_traffic", "report"];
const DRIFT_COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3"];
async function loadDrift(model) {
  const r = await api(`/v1/drift?model=${encodeURIComponent(model)}`);
  const points = r.data, box = $("#run-drift");
  box.classList.remove("hidden");
  $("#drift-title").textContent = `Drift of ${r.model}`;
  const last = points[points.length - 1], verdict = $("#drift-verdict");
  verdict.textContent = last ? `latest verdict: ${last.verdict} (${points.length} check(s); the last at ${last.checked_at}, `
    + `${last.n_traffic} traffic inputs)` : `no drift check yet: run \`tailored drift\` on this model's run (with the server's traffic log)`;
  verdict.className = last ? `verdict-${last.verdict.replace(" ", "-")}` : "hint";
  verdict.dataset.checks = points.length;
  const stats = [...new Set(points.flatMap(p => Object.keys(p)))].filter(k => !DRIFT_FIELDS.includes(k));
  const series = stats.map((name, i) => ({name, color: DRIFT_COLORS[i % DRIFT_COLORS.length],
    points: points.map((p, j) => [j + 1, p[name]]).filter(q => typeof q[1] === "number")}));
  lineChart($("#drift-chart"), series.filter(s => s.points.length), {label: `drift statistics of ${r.model}`,
    xlabel: "check (oldest first)", empty: "no drift check yet"});
  const head = $("#drift-table thead"), body = $("#drift-table tbody");
  head.textContent = ""; body.textContent = "";
  head.append(el("tr", {}, ...["checked at", "verdict", "inputs", ...stats].map(t => el("th", {textContent: t}))));
  for (const p of points.slice().reverse()) body.append(el("tr", {}, el("td", {textContent: p.checked_at}),
    el("td", {textContent: p.verdict, className: `verdict-${p.verdict.replace(" ", "-")}`}), el("td", {textContent: p.n_traffic}),
    ...stats.map(k => el("td", {textContent: typeof p[k] === "number" ? p[k].toPrecision(3) : "—"}))));
}

async function exportRun(model, fmt) {
  const status = $("#export-status");
  const done = busy(status, `exporting ${model} as ${fmt}`);
  try {
    const r = await api("/ui/api/runs/export", {json: {model, format: fmt}});
    done();
    status.classList.remove("hidden");
    status.textContent = "";
    status.append(el("a", {href: r.download, textContent: `download ${fmt} (${(r.bytes / 1e6).toFixed(1)} MB)`}),
                  document.createTextNode(r.warnings.length ? ` · ${r.warnings.join("; ")}` : ""));
  } catch (e) { done(); status.classList.remove("hidden"); status.textContent = e.message; }
}

// ---- playground -------------------------------------------------------------------------------
let panelCount = 0;
function addPanel(model) {
  const n = ++panelCount;
  const sel = el("select", {className: "model-select", id: `play-model-${n}`});
  fillModels(sel);
  if (model) sel.value = model;
  const panel = el("article", {className: "panel"},
    el("label", {textContent: `Model ${n} `, htmlFor: sel.id}, sel),
    el("p", {className: "answered", textContent: "answered by: —"}), el("pre", {className: "answer"}),
    el("div", {className: "feedback buttons hidden"}));
  $("#play-panels").append(panel);
}

async function streamInto(panel, messages, temperature, topP, maxTokens) {
  const model = panel.querySelector("select").value;
  const out = panel.querySelector(".answer"), who = panel.querySelector(".answered");
  out.textContent = ""; who.textContent = "answered by: …";
  panel.dataset.done = "0";
  const rate = panel.querySelector(".feedback");
  rate.classList.add("hidden");
  let id = null;
  const r = await fetch("/v1/chat/completions", {method: "POST", credentials: "same-origin",
    headers: {"content-type": "application/json", "x-csrf-token": CSRF},
    body: JSON.stringify({model, messages, temperature, top_p: topP, max_tokens: maxTokens, stream: true})});
  if (!r.ok) { const e = await r.json(); out.textContent = e.error.message; panel.dataset.done = "1"; return; }
  const reader = r.body.getReader(), dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buf += dec.decode(value, {stream: true});
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 2);
      if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
      const chunk = JSON.parse(line.slice(6));
      if (chunk.error) { out.textContent += `\n[${chunk.error.message}]`; continue; }
      who.textContent = `answered by: ${chunk.model}`;  // the server's word on which model answered
      who.dataset.model = chunk.model;
      id = chunk.id;
      for (const c of chunk.choices) if (c.delta && c.delta.content) out.textContent += c.delta.content;
    }
  }
  if (TRAFFIC && id) feedbackButtons(rate, id);
  panel.dataset.done = "1";
}

// Good / bad on a logged answer (POST /v1/traffic/{id}/feedback; the completion id is the traffic id).
function feedbackButtons(box, id) {
  box.textContent = "";
  const said = el("span", {className: "hint", textContent: "Was this answer good?"});
  for (const rating of ["good", "bad"]) {
    const b = el("button", {type: "button", textContent: rating === "good" ? "✓ Good" : "✗ Bad"});
    b.addEventListener("click", guard(async () => {
      await api(`/v1/traffic/${encodeURIComponent(id)}/feedback`, {json: {rating}});
      said.textContent = `rated ${rating}`;
      box.dataset.rating = rating;
    }));
    box.append(b);
  }
  box.append(said);
  delete box.dataset.rating;
  box.dataset.id = id;
  box.classList.remove("hidden");
}

async function play(ev) {
  ev.preventDefault();
  const messages = [];
  if ($("#play-system").value.trim()) messages.push({role: "system", content: $("#play-system").value.trim()});
  messages.push({role: "user", content: $("#play-prompt").value});
  const t = parseFloat($("#play-temp").value || "0"), top = parseFloat($("#play-top-p").value || "1");
  const m = parseInt($("#play-max").value || "64");
  await Promise.all([...document.querySelectorAll("#play-panels .panel")].map(p => streamInto(p, messages, t, top, m)));
}

// ---- arena ------------------------------------------------------------------------------------
async function battle(ev) {
  ev.preventDefault();
  const done = busy($("#arena-progress"), "both models are answering");
  try {
    const b = await api("/ui/api/arena/battles", {json: {prompt: $("#arena-prompt").value, file_id: $("#arena-file").value || undefined,
                                                         max_tokens: parseInt($("#arena-max").value || "64")}});
    state.battle = b.id;
    $("#battle").classList.remove("hidden");
    $("#answer-a").textContent = b.answers[0];
    $("#answer-b").textContent = b.answers[1];
    $("#name-a").textContent = ""; $("#name-b").textContent = "";
    for (const x of document.querySelectorAll("#votes button")) x.disabled = false;
  } finally { done(); }
}

async function vote(v) {
  const b = await api(`/ui/api/arena/battles/${state.battle}/vote`, {json: {vote: v}});
  $("#name-a").textContent = `= ${b.models[0]}`;
  $("#name-b").textContent = `= ${b.models[1]}`;
  for (const x of document.querySelectorAll("#votes button")) x.disabled = true;
  await loadBoard();
}

async function loadBoard() {
  const r = await api("/ui/api/arena/leaderboard");
  $("#arena-summary").textContent = `${r.votes} vote(s), ${r.decisive} decisive; intervals from ${r.bootstrap_rounds} bootstrap resamples of the votes`;
  $("#arena-summary").dataset.votes = r.votes;
  const body = $("#leaderboard tbody");
  body.textContent = "";
  for (const m of r.data) body.append(el("tr", {}, el("td", {textContent: m.model}), el("td", {textContent: m.battles}),
    el("td", {textContent: `${m.wins} / ${m.losses} / ${m.ties} / ${m.both_bad}`}),
    el("td", {textContent: m.win_rate == null ? "—" : `${(100 * m.win_rate).toFixed(0)}%`}),
    el("td", {textContent: `${m.bt} (${m.bt_low ?? "—"} – ${m.bt_high ?? "—"})`})));
}

async function savePreferences() {
  const r = await api("/ui/api/arena/preferences", {method: "POST"});
  $("#arena-saved").textContent = `saved ${r.pairs} preference pair(s) as ${r.file.id} (${r.file.filename}, ${r.file.status})`
    + (r.left_out_identical ? `; ${r.left_out_identical} left out (identical answers)` : "")
    + (r.left_out_empty ? `; ${r.left_out_empty} left out (an empty answer)` : "") + ": start a dpo job with it on the jobs page";
  $("#arena-saved").dataset.file = r.file.id;
}

