// The dashboard: one page, five sections, plain JS. Calls /v1 (the service's API) and /ui/api with the session cookie.
"use strict";
const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const TRAFFIC = document.querySelector('meta[name="traffic-log"]').content === "1";  // the server logs answers: feedback
const $ = s => document.querySelector(s);
const el = (tag, props, ...kids) => {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  for (const k of kids) e.append(k);
  return e;
};
const state = {job: null, jobTimer: null, models: [], files: [], battle: null};

function showError(message) {
  const p = $("#error");
  p.textContent = message || "";
  p.classList.toggle("hidden", !message);
}

async function api(path, opts) {
  opts = opts || {};
  const headers = Object.assign({"x-csrf-token": CSRF}, opts.headers || {});
  if (opts.json !== undefined) { headers["content-type"] = "application/json"; opts.body = JSON.stringify(opts.json); }
  const r = await fetch(path, {method: opts.method || (opts.body ? "POST" : "GET"), headers, body: opts.body,
                               credentials: "same-origin"});
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = {text}; }
  if (!r.ok) {
    const msg = (data && data.error && data.error.message) || `${r.status} ${r.statusText}`;
    showError(msg);
    throw new Error(msg);
  }
  showError("");
  return data;
}

function busy(node, label) {  // progress for long work: a label and the seconds so far
  const t0 = Date.now();
  node.classList.remove("hidden");
  node.textContent = `${label}…`;
  const timer = setInterval(() => { node.textContent = `${label}… ${Math.round((Date.now() - t0) / 1000)} s`; }, 500);
  return () => { clearInterval(timer); node.classList.add("hidden"); };
}

function fmtTime(s) {
  if (s == null) return "";
  s = Math.round(s);
  return s >= 3600 ? `${Math.floor(s / 3600)} h ${Math.round(s % 3600 / 60)} min` : s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

// ---- navigation -------------------------------------------------------------------------------
const PAGES = ["data", "jobs", "runs", "playground", "arena"];
function route() {
  const page = PAGES.includes(location.hash.slice(1)) ? location.hash.slice(1) : "data";
  for (const p of PAGES) $(`#page-${p}`).classList.toggle("hidden", p !== page);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("current", a.getAttribute("href") === `#${page}`);
  if (page === "data" || page === "jobs" || page === "arena") loadFiles();
  if (page === "jobs") loadJobs();
  if (page === "runs") loadRuns();
  if (page === "playground" || page === "arena") loadModels();
  if (page === "arena") loadBoard();
}

// ---- files and models -------------------------------------------------------------------------
async function loadFiles() {
  const files = (await api("/v1/files?purpose=fine-tune")).data;
  state.files = files;
  const fill = (sel, keep, first) => {
    const old = sel.value;
    sel.textContent = "";
    if (first) sel.append(el("option", {value: "", textContent: first}));
    for (const f of files) if (!keep || keep(f)) sel.append(el("option", {value: f.id, textContent: `${f.filename} (${f.id}, ${f.status})`}));
    if ([...sel.options].some(o => o.value === old)) sel.value = old;
  };
  fill($("#stored-files"), null, "—");
  fill($("#job-train"), f => f.status === "processed");
  fill($("#job-valid"), f => f.status === "processed", "none");
  fill($("#arena-file"), f => f.status === "processed", "—");
}

async function loadModels() {
  state.models = (await api("/v1/models")).data.map(m => m.id);
  $("#job-model").value = state.models[0] || "";
  for (const sel of document.querySelectorAll(".model-select")) fillModels(sel);
}

function fillModels(sel) {
  const old = sel.value;
  sel.textContent = "";
  for (const m of state.models) sel.append(el("option", {value: m, textContent: m}));
  if (state.models.includes(old)) sel.value = old;
}

// ---- data -------------------------------------------------------------------------------------
async function upload(ev) {
  ev.preventDefault();
  const file = $("#upload-file").files[0];
  if (!file) return;
  const form = new FormData();
  form.append("file", file);
  form.append("purpose", "fine-tune");
  const done = busy($("#data-progress"), `uploading and checking ${file.name}`);
  try {
    const obj = await api("/v1/files", {method: "POST", body: form});
    await loadFiles();
    $("#stored-files").value = obj.id;
    await inspect(obj.id);
  } finally { done(); }
}

async function inspect(id) {
  if (!id) return;
  const done = busy($("#data-progress"), "reading statistics and masks");
  let r;
  try { r = await api(`/ui/api/files/${encodeURIComponent(id)}/inspect`); } finally { done(); }
  const out = $("#data-result");
  out.textContent = "";
  const rep = r.report || {};
  const problems = rep.problems || [];
  const errors = problems.filter(p => p.severity !== "warning");
  out.append(el("h2", {id: "data-title", textContent: `${r.filename}: ${r.status === "processed" ? "ready to train" : "has problems"}`}));
  out.append(el("p", {id: "data-summary", textContent:
    `${rep.examples ?? "?"} examples in ${rep.lines ?? "?"} lines · format ${rep.format ?? "?"} · ${errors.length} error(s), ${problems.length - errors.length} warning(s)`}));
  if (rep.layout) out.append(el("pre", {textContent: rep.layout}));
  if (problems.length) {
    const body = el("tbody");
    for (const p of problems) body.append(el("tr", {className: `problem-${p.severity}`},
      el("td", {textContent: p.line ? `line ${p.line}` : "file"}), el("td", {textContent: p.category}),
      el("td", {textContent: p.severity}), el("td", {textContent: p.message})));
    out.append(el("table", {id: "problems"}, el("thead", {}, el("tr", {}, ...["Where", "Check", "Severity", "Message"].map(h => el("th", {textContent: h})))), body));
  } else if (r.status_details) {
    out.append(el("pre", {id: "problems", textContent: r.status_details}));
  }
  const s = r.stats;
  if (s) {
    out.append(el("h2", {textContent: "Statistics"}));
    const grid = el("div", {className: "stats"});
    for (const [role, values] of Object.entries(s.histograms)) {
      const sum = s.lengths[role] || {};
      const fig = el("figure", {}, el("figcaption", {textContent: `${role}: ${s.length_unit} (median ${sum.median}, p95 ${sum.p95}, max ${sum.max})`}));
      const box = el("div", {className: "chart"});
      fig.append(box);
      grid.append(fig);
      barChart(box, histogram(values, 10), {label: `${role} lengths`});
    }
    if (s.labels) {
      const box = el("div", {className: "chart"});
      grid.append(el("figure", {}, el("figcaption", {textContent: `labels (${Object.keys(s.labels).length})`}), box));
      barChart(box, Object.entries(s.labels).slice(0, 20), {label: "labels", color: "#8172b2"});
    }
    out.append(grid);
    const dups = s.exact_duplicate_clusters.length, near = s.near_duplicate_clusters.length;
    out.append(el("p", {textContent: `duplicates: ${dups} exact cluster(s)` + (dups ? ` (lines ${s.exact_duplicate_clusters.slice(0, 5).map(c => c.join(", ")).join("; ")})` : "")
      + `, ${near} near-duplicate cluster(s)` + (near ? ` (lines ${s.near_duplicate_clusters.slice(0, 5).map(c => c.join(", ")).join("; ")})` : "")
      + ` · languages: ${Object.entries(s.languages).map(([k, v]) => `${k} ${v}`).join(", ")}`}));
  } else if (r.stats_error) {
    out.append(el("p", {className: "error", textContent: r.stats_error}));
  }
  if (r.preview.length) {
    out.append(el("h2", {textContent: "What the model learns"}));
    out.append(el("p", {className: "hint", textContent: "The training text as the chat template renders it; highlighted tokens are the ones trained on (from the labels training uses)."}));
    for (const ex of r.preview) {
      const pre = el("pre", {className: "preview"});
      for (const seg of ex.segments) pre.append(seg.trained ? el("mark", {className: "trained", textContent: seg.text}) : document.createTextNode(seg.text));
      if (ex.note) pre.append(document.createTextNode(ex.note));
      out.append(el("p", {className: "hint", textContent: `line ${ex.line}` + (ex.tokens ? `: ${ex.trained_tokens} of ${ex.tokens} tokens trained` : "")}), pre);
    }
  }
}

// ---- jobs -------------------------------------------------------------------------------------
function jobBody() {
  const num = (id, f) => { const v = $(id).value.trim(); return v === "" ? undefined : f(v); };
  const type = $("#job-type").value;
  const hp = {n_epochs: num("#job-epochs", parseInt), batch_size: num("#job-batch", parseInt),
              learning_rate_multiplier: num("#job-lr", parseFloat)};
  const tailored = {method: $("#job-method").value || undefined, max_steps: num("#job-steps", parseInt)};
  return {model: $("#job-model").value, training_file: $("#job-train").value, validation_file: $("#job-valid").value || undefined,
          suffix: $("#job-suffix").value || undefined, method: {type, [type]: {hyperparameters: hp}}, tailored,
          n_epochs: hp.n_epochs, batch_size: hp.batch_size};
}

let methodList = [];
async function loadMethods() {
  methodList = (await api("/ui/api/methods")).methods;
  fillMethods();
}
function fillMethods() {
  const wants = $("#job-type").value === "dpo" ? "preference" : "chat";
  const sel = $("#job-method");
  sel.textContent = "";
  sel.append(el("option", {value: "", textContent: "default"}));
  for (const m of methodList) if (m.trains_on === wants) sel.append(el("option", {value: m.name, textContent: m.name}));
}

async function estimateJob() {
  const done = busy($("#estimate-progress"), "estimating (tokens, memory, time)");
  try {
    const r = await api("/ui/api/estimate", {json: jobBody()});
    $("#estimate").textContent = r.text;
    $("#estimate").classList.remove("hidden");
    $("#job-start").disabled = false;
  } finally { done(); }
}

async function startJob(ev) {
  ev.preventDefault();
  const body = jobBody();
  delete body.n_epochs; delete body.batch_size;
  const job = await api("/v1/fine_tuning/jobs", {json: body});
  $("#job-start").disabled = true;
  await loadJobs();
  selectJob(job.id);
}

async function loadJobs() {
  const jobs = (await api("/v1/fine_tuning/jobs?limit=100")).data;
  const body = $("#job-table tbody");
  body.textContent = "";
  for (const j of jobs) {
    const tr = el("tr", {className: "selectable" + (j.id === state.job ? " selected" : ""), tabIndex: 0},
      el("td", {textContent: j.id}), el("td", {textContent: j.status, className: "status"}),
      el("td", {textContent: j.fine_tuned_model || j.model}), el("td", {textContent: new Date(j.created_at * 1000).toLocaleString()}));
    tr.dataset.job = j.id;
    tr.addEventListener("click", () => selectJob(j.id));
    tr.addEventListener("keydown", e => { if (e.key === "Enter") selectJob(j.id); });
    body.append(tr);
  }
}

function selectJob(id) {
  state.job = id;
  clearTimeout(state.jobTimer);
  $("#job-detail").classList.remove("hidden");
  refreshJob();
}

async function refreshJob() {
  const id = state.job;
  if (!id) return;
  const [job, curve, events] = await Promise.all([
    api(`/v1/fine_tuning/jobs/${id}`), api(`/ui/api/jobs/${id}/curve`), api(`/v1/fine_tuning/jobs/${id}/events?limit=200`)]);
  if (id !== state.job) return;
  $("#job-title").textContent = `${job.id}${job.fine_tuned_model ? " → " + job.fine_tuned_model : ""}`;
  const last = curve.train[curve.train.length - 1];
  $("#job-status").textContent = `${job.status}` + (last ? ` · step ${last.step}${curve.total_steps ? "/" + curve.total_steps : ""}` : "")
    + (curve.eta_s != null ? ` · ETA ${fmtTime(curve.eta_s)}` : "") + (job.error && job.error.message ? ` · ${job.error.message}` : "");
  $("#job-status").dataset.points = curve.train.length;
  const active = ["validating_files", "queued", "running"].includes(job.status);
  for (const b of document.querySelectorAll("#job-detail [data-action]")) {
    const a = b.dataset.action;
    b.disabled = !(a === "cancel" ? !["succeeded", "failed", "cancelled"].includes(job.status) : a === "pause" ? active : job.status === "paused");
  }
  const vlines = curve.checkpoints.map(c => ({x: c.step, best: c.step === curve.best_step}));
  lineChart($("#loss-chart"), [
    {name: "train loss", color: "#2f5fb3", points: curve.train.filter(p => p.loss != null).map(p => [p.step, p.loss])},
    {name: "validation loss", color: "#c44e52", marker: "diamond", points: curve.validation.filter(p => p.loss != null).map(p => [p.step, p.loss])},
  ], {vlines, xmax: curve.total_steps, label: "loss curve", empty: "waiting for the first step"});
  lineChart($("#acc-chart"), [
    {name: "train accuracy", color: "#2f5fb3", points: curve.train.filter(p => p.accuracy != null).map(p => [p.step, p.accuracy])},
    {name: "validation accuracy", color: "#c44e52", marker: "diamond", points: curve.validation.filter(p => p.accuracy != null).map(p => [p.step, p.accuracy])},
  ], {vlines, xmax: curve.total_steps, label: "accuracy curve", empty: "waiting for the first step"});
  const flags = $("#job-flags");
  flags.textContent = "";
  if (curve.red_flags) {
    flags.append(el("h3", {textContent: "Red flags: ", className: `verdict-${curve.red_flags.verdict}`}, curve.red_flags.verdict || ""));
    const ul = el("ul");
    for (const f of curve.red_flags.flags || []) {
      const li = el("li", {className: `verdict-${f.verdict}`, textContent: `${f.name}: ${f.verdict}: ${f.summary}`});
      if (f.fixes && f.fixes.length && f.verdict !== "ok") li.append(el("ul", {}, ...f.fixes.map(x => el("li", {textContent: x}))));
      ul.append(li);
    }
    flags.append(ul);
  }
  const list = $("#job-events");
  list.textContent = "";
  for (const e of events.data.slice().reverse()) list.append(el("li", {className: `level-${e.level}`, textContent: e.message}));
  list.scrollTop = list.scrollHeight;
  const row = document.querySelector(`#job-table tr[data-job="${id}"] .status`);
  if (row) row.textContent = job.status;
  if (active || job.status === "paused") state.jobTimer = setTimeout(refreshJob, 1000);
}

async function controlJob(action) {
  await api(`/v1/fine_tuning/jobs/${state.job}/${action}`, {method: "POST"});
  clearTimeout(state.jobTimer);
  refreshJob();
  loadJobs();
}

// ---- wiring -----------------------------------------------------------------------------------
function guard(f) { return (...a) => f(...a).catch(e => showError(e.message)); }
document.addEventListener("DOMContentLoaded", () => {
  if ($('meta[name="keyed"]').content === "1") $("#logout").classList.remove("hidden");
  $("#logout").addEventListener("submit", guard(async ev => {
    ev.preventDefault();
    await fetch("/ui/logout", {method: "POST", headers: {"x-csrf-token": CSRF}, credentials: "same-origin"});
    location.href = "/ui/login";
  }));
  $("#upload-form").addEventListener("submit", guard(upload));
  $("#stored-files").addEventListener("change", guard(() => inspect($("#stored-files").value)));
  $("#job-type").addEventListener("change", fillMethods);
  $("#job-form").addEventListener("input", () => { $("#job-start").disabled = true; });
  $("#job-estimate").addEventListener("click", guard(estimateJob));
  $("#job-form").addEventListener("submit", guard(startJob));
  for (const b of document.querySelectorAll("#job-detail [data-action]")) b.addEventListener("click", guard(() => controlJob(b.dataset.action)));
  $("#play-form").addEventListener("submit", guard(play));
  $("#play-add").addEventListener("click", () => addPanel());
  $("#arena-form").addEventListener("submit", guard(battle));
  for (const b of document.querySelectorAll("#votes button")) b.addEventListener("click", guard(() => vote(b.dataset.vote)));
  $("#arena-save").addEventListener("click", guard(savePreferences));
  window.addEventListener("hashchange", guard(async () => route()));
  guard(async () => { await loadModels(); addPanel(state.models[0]); addPanel(state.models[1] || state.models[0]); await loadMethods(); route(); })();
});
