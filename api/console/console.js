// The MCU operator console: a few hash-routed pages over the HTTP API (#/models, #/models/ID,
// #/requests, #/requests/ID). The API key lives in this tab's sessionStorage only; it travels in the
// Authorization header and never in a URL. Every value from the API reaches the page as text (textContent),
// never as HTML.
"use strict";

const KEY = "mcu.apiKey";
const METRICS = [
  ["forget_accuracy", "forget accuracy", "#c0392b"],
  ["retain_accuracy", "retain accuracy", "#2f5fd0"],
  ["test_accuracy", "test accuracy", "#1e8e5a"],
  ["mia_efficacy", "MIA efficacy", "#8e44ad"],
];
const POLL_MS = 1000;

let identity = null; // {name, scopes} of the signed-in key
let meta = null; // GET /v1/meta: the server's request states and transitions (keys with requests:read)
let timer = null; // the request page's polling
let routeToken = 0; // bumped by each navigation: a page still loading for an older one never renders

// --- small helpers -------------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const fmt = (x, digits = 3) => (typeof x === "number" ? x.toFixed(digits) : "—");
const when = (iso) => (iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "—");
const can = (scope) => !!identity && (identity.scopes.includes(scope) || identity.scopes.includes("admin"));
const finished = (state) => meta.terminal_states.includes(state);
const stateBadge = (state) => el("span", { class: `state ${state}`, "data-state": state }, state);

class ApiError extends Error {
  constructor(status, detail, type, errors) {
    super(detail);
    this.status = status;
    this.type = type || "";
    this.errors = errors || []; // problem+json `errors`: e.g. the acknowledgement a failing point needs
  }
}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}` };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method: options.method || "GET", headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  if (response.status === 401) {
    signOut("The key was refused (unknown, revoked or expired): sign in again.");
    throw new ApiError(401, "signed out");
  }
  if (!response.ok) {
    let problem = {};
    try { problem = await response.json(); } catch (_) { /* not problem+json */ }
    throw new ApiError(response.status, problem.detail || response.statusText, problem.type, problem.errors);
  }
  return options.raw ? response : response.json();
}

async function all(path, params = {}) {
  const items = [];
  let token = null;
  do {
    const query = new URLSearchParams({ ...params, page_size: "500", ...(token ? { page_token: token } : {}) });
    const page = await api(`${path}?${query}`);
    items.push(...page.items);
    token = page.next_page_token;
  } while (token);
  return items;
}

function show(token, ...nodes) {
  if (token !== routeToken) return;
  const main = document.getElementById("main");
  main.replaceChildren(...nodes.filter((node) => node));
}

function failure(error) {
  if (error.status !== 401) show(routeToken, el("p", { class: "error", role: "alert" }, `Error: ${error.message}`));
}

// --- sign-in -----------------------------------------------------------------------------------------------

function signOut(message) {
  sessionStorage.removeItem(KEY);
  identity = null;
  meta = null;
  stopPolling();
  document.getElementById("nav").hidden = true;
  signInPage(message);
}

function signInPage(message) {
  const input = el("input", { id: "api-key", type: "password", autocomplete: "off", required: true,
    placeholder: "mcu_…" });
  const form = el("form", { class: "card signin", id: "sign-in" },
    el("h1", {}, "Sign in"),
    el("p", { class: "muted" }, "Paste an API key. It is kept in this browser tab only (sessionStorage) and sent "
      + "to the API in the Authorization header."),
    el("label", { for: "api-key" }, "API key"), input,
    message ? el("p", { class: "error", role: "alert" }, message) : null,
    el("button", { type: "submit", class: "primary" }, "Sign in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, input.value.trim());
    input.value = "";
    if (await loadIdentity()) route();
  });
  show(routeToken, form);
}

async function loadIdentity() {
  try {
    identity = await api("/v1/keys/me");
    meta = can("requests:read") ? await api("/v1/meta") : null;
  } catch (error) {
    if (error.status !== 401) signOut(`Cannot sign in: ${error.message}`);
    return false;
  }
  document.getElementById("who").textContent = `${identity.name} · ${identity.scopes.join(", ")}`;
  for (const link of document.querySelectorAll("nav [data-scope]")) link.hidden = !can(link.dataset.scope);
  document.getElementById("nav").hidden = false;
  return true;
}

// --- models ------------------------------------------------------------------------------------------------

async function modelsPage(token) {
  const models = await all("/v1/models");
  show(token, el("h1", {}, "Models"), el("section", {}, el("table", { id: "models" },
    el("thead", {}, el("tr", {}, ["name", "id", "architecture", "state", "current version", "dataset", "created"]
      .map((h) => el("th", {}, h)))),
    el("tbody", {}, models.map((m) => el("tr", { "data-id": m.id },
      el("td", {}, el("a", { href: `#/models/${encodeURIComponent(m.id)}` }, m.name)),
      el("td", { class: "mono" }, m.id), el("td", {}, m.architecture), el("td", {}, stateBadge(m.state)),
      el("td", { class: "num" }, m.current_version), el("td", { class: "mono" }, m.dataset_id),
      el("td", {}, when(m.created_at))))))),
  models.length ? null : el("p", { class: "muted" }, "No models yet."));
}

async function download(modelId, version, button) {
  return save(`/v1/models/${encodeURIComponent(modelId)}/versions/${version}/weights`,
    `${modelId}-v${version}.safetensors`, button);
}

// A file the API serves only with the key (never in a URL): fetched with it, then saved from a blob.
async function save(path, filename, button) {
  button.disabled = true;
  try {
    const response = await api(path, { raw: true });
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", { href: url, download: filename });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (error) {
    alert(`Download failed: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

function metricCells(metrics, columns = METRICS) {
  const m = metrics || {}, errors = m.std_errors || {}, rows = m.rows || {};  // points and versions carry both
  const where = Object.entries(rows).map(([split, n]) => `${n} ${split}`).join(", ");
  return columns.map(([key]) => el("td", { class: "num", "data-metric": key, title: typeof errors[key] === "number"
    ? `± ${fmt(errors[key], 4)} (standard error; rows: ${where})` : null }, fmt(m[key])));
}

// A version published by a class-wise request was measured like its curve: test accuracy on the retained
// classes only, the forgotten classes' apart. Its cells say so; the forgotten-class column appears when needed.
function versionCells(version, columns) {
  const cells = metricCells(version.metrics, columns);
  if (typeof (version.metrics || {}).forgotten_class_test_accuracy === "number") {
    const test = cells.find((c) => c.dataset.metric === "test_accuracy");
    test.append(el("div", { class: "muted small" }, "retained classes"));
  }
  return cells;
}

async function modelPage(token, modelId) {
  const id = encodeURIComponent(modelId);
  const [model, versions] = await Promise.all([api(`/v1/models/${id}`), all(`/v1/models/${id}/versions`)]);
  const pre = model.preprocessing;
  // the original upload's test accuracy is on every class: class-wise versions' cells say "retained classes"
  const columns = metricColumns(versions.some((v) => typeof (v.metrics || {}).forgotten_class_test_accuracy
    === "number"), "test accuracy");
  show(token, el("h1", {}, `Model ${model.name} `, stateBadge(model.state)),
    el("section", {}, el("dl", { class: "facts" },
      el("dt", {}, "id"), el("dd", { class: "mono" }, model.id),
      el("dt", {}, "architecture"), el("dd", {}, model.architecture),
      el("dt", {}, "dataset"), el("dd", { class: "mono" }, model.dataset_id),
      el("dt", {}, "preprocessing"), el("dd", {}, `${pre.preset || "custom"}: mean ${JSON.stringify(pre.mean)}, `
        + `std ${JSON.stringify(pre.std)}`),
      el("dt", {}, "current version"), el("dd", {}, model.current_version),
      model.error ? [el("dt", {}, "error"), el("dd", { class: "error" }, model.error.detail)] : null,
      model.warnings.length ? [el("dt", {}, "warnings"), el("dd", { class: "error" }, model.warnings.join("; "))]
        : null)),
    el("h2", {}, "Versions and lineage"),
    el("section", {}, el("table", { id: "versions" },
      el("thead", {}, el("tr", {}, ["version", "from", "request", "t", "sha256",
        ...columns.map(([, label]) => label), "created", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, versions.map((v) => el("tr", { "data-version": v.version },
        el("td", {}, `v${v.version}`, v.version === model.current_version ? el("span", { class: "muted" }, " (current)")
          : null),
        el("td", {}, v.parent_version ? `v${v.parent_version}` : "original upload"),
        el("td", {}, v.deletion_request_id
          ? el("a", { href: `#/requests/${encodeURIComponent(v.deletion_request_id)}`, class: "mono" },
            v.deletion_request_id) : "—"),
        el("td", { class: "num" }, fmt(v.t, 2)), el("td", { class: "mono" }, v.sha256), ...versionCells(v, columns),
        el("td", {}, when(v.created_at)),
        el("td", {}, v.weights_deleted_at  // the retention policy deleted them: the API answers 410
          ? el("span", { class: "muted", title: `deleted ${when(v.weights_deleted_at)}` }, "weights deleted")
          : can("models:read") ? el("button", { type: "button", class: "download",
            onclick: (e) => download(model.id, v.version, e.target) }, "Download") : null)))))),
    el("p", {}, el("a", { href: `#/requests?model_id=${encodeURIComponent(model.id)}` },
      "Deletion requests on this model")));
}

// --- deletion requests -------------------------------------------------------------------------------------

function dueCell(request) {
  if (!request.due_at) return el("td", {}, "—");
  const overdue = request.overdue; // the server's judgement: still owes its answer and past due_at
  return el("td", { class: overdue ? "overdue" : null }, when(request.due_at).slice(0, 10) + (overdue ? " overdue" : ""));
}

// The whole job's share done (mask → base → curve → evaluate): a measured curve is the whole job done.
const overallOf = (request) => (request.curve ? 1 : request.progress.overall || 0);
const percent = (share) => `${Math.round(share * 100)}%`;

function duration(seconds) {
  const s = Math.max(0, Math.round(seconds)), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  if (h) return `${h} h ${String(m).padStart(2, "0")} min`;
  return m ? `${m} min ${String(s % 60).padStart(2, "0")} s` : `${s} s`;
}

function timeLeft(seconds) {
  return seconds < 60 ? "less than a minute left" : `about ${Math.round(seconds / 60)} min left`;
}

async function requestsPage(token, params) {
  const filters = {};
  for (const name of ["state", "model_id"]) if (params.get(name)) filters[name] = params.get(name);
  const [requests, models] = await Promise.all([all("/v1/deletion-requests", filters),
    can("models:read") ? all("/v1/models") : []]);
  const withDue = requests.some((r) => r.due_at);
  const apply = () => {
    const query = new URLSearchParams();
    if (stateSelect.value) query.set("state", stateSelect.value);
    if (modelSelect.value) query.set("model_id", modelSelect.value);
    location.hash = `#/requests?${query}`;
  };
  const stateSelect = el("select", { id: "filter-state", onchange: apply }, el("option", { value: "" }, "any state"),
    meta.states.map((s) => el("option", { value: s, selected: s === filters.state }, s)));
  const modelSelect = el("select", { id: "filter-model", onchange: apply }, el("option", { value: "" }, "any model"),
    models.map((m) => el("option", { value: m.id, selected: m.id === filters.model_id }, `${m.name} (${m.id})`)));
  if (filters.model_id && !models.some((m) => m.id === filters.model_id)) {
    modelSelect.append(el("option", { value: filters.model_id, selected: true }, filters.model_id));
  }
  show(token, el("h1", {}, "Deletion requests"),
    el("div", { class: "filters" }, el("label", {}, "State ", stateSelect), el("label", {}, "Model ", modelSelect)),
    el("section", {}, el("table", { id: "requests" },
      el("thead", {}, el("tr", {}, ["request", "external id", "model", "state", "job done", "forget", "created",
        withDue ? "due" : null].filter((h) => h !== null).map((h) => el("th", {}, h)))),
      el("tbody", {}, requests.map((r) => el("tr", { "data-id": r.id },
        el("td", {}, el("a", { href: `#/requests/${encodeURIComponent(r.id)}`, class: "mono" }, r.id)),
        el("td", {}, r.external_id || "—"),
        el("td", {}, el("a", { href: `#/models/${encodeURIComponent(r.model_id)}`, class: "mono" }, r.model_id),
          ` v${r.model_version}`),
        el("td", {}, stateBadge(r.state)),
        el("td", { class: "overall", title: `phase ${r.progress.phase} ${percent(r.progress.fraction)}` },
          percent(overallOf(r)), r.curve ? null : el("span", { class: "muted" }, ` · ${r.progress.phase}`)),
        el("td", { class: "num" }, r.forget_count), el("td", {}, when(r.created_at)),
        withDue ? dueCell(r) : null))))),
    requests.length ? null : el("p", { class: "muted" }, "No deletion requests match."));
}

function confirmDialog(title, body, onConfirm) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-body").replaceChildren(body);
  const error = document.getElementById("confirm-error");
  error.textContent = "";
  const yes = document.getElementById("confirm-yes");
  yes.disabled = false;
  yes.onclick = async (event) => {
    event.preventDefault();
    yes.disabled = true;
    try {
      await onConfirm();
      dialog.close();
    } catch (failed) {
      error.textContent = failed.message;
      yes.disabled = false;
    }
  };
  dialog.showModal();
}

// --- the curve: what each metric means, the erasure criterion as the API judges it ------------------------

// A class-wise request (forget by classes) measures test accuracy on the retained classes' test rows only,
// and the forgotten classes' test accuracy on their own (docs/evaluation.md): its points carry the latter.
const classwise = (curve) => !!curve && curve.points.some((p) => typeof p.forgotten_class_test_accuracy === "number");

function metricColumns(classWise, testLabel = "test accuracy (retained classes)") {
  if (!classWise) return METRICS;
  return METRICS.flatMap((m) => (m[0] !== "test_accuracy" ? [m] : [[m[0], testLabel, m[2]],
    ["forgotten_class_test_accuracy", "test accuracy (forgotten class)", "#d4862a"]]));
}
const metricsOf = (curve) => metricColumns(classwise(curve));

// domain/erasure.py, mirrored: the metrics at t are the measured point's when t is on the grid, else linear
// between its measured neighbours (point_at); the criterion is one-sided with two binomial standard errors
// of the target over the forget rows as sampling noise (judge). Keep the two in step.
const JUDGED = ["forget_accuracy", "retain_accuracy", "test_accuracy", "mia_efficacy"];
const ACKNOWLEDGE_PREFIX = "erasure criterion not met";
// Why a curve lacks an MIA target: the operator's targets name none, or SVCs trained on resamples of θ_o's attack
// rows disagree (docs/algorithm.md §4).
const noMiaTarget = (request) => ((request.config || {}).targets ? "the operator's targets name none"
  : "the original model's attack called the same rows non-member in shares that depended on the rows it was "
    + "trained on: a coin flip");

function pointAt(points, t) {
  const ordered = [...points].sort((a, b) => a.t - b.t);
  const keys = [...JUDGED, "forgotten_class_test_accuracy"];
  for (let i = 0; i + 1 < ordered.length; i++) {
    const left = ordered[i], right = ordered[i + 1];
    if (left.t <= t && t <= right.t) {
      const w = right.t === left.t ? 0 : (t - left.t) / (right.t - left.t);
      const at = { t, from: w === 0 ? [left.t] : w === 1 ? [right.t] : [left.t, right.t] };
      for (const k of keys) {
        at[k] = typeof left[k] === "number" && typeof right[k] === "number" ? (1 - w) * left[k] + w * right[k] : null;
      }
      return at;
    }
  }
  const nearest = ordered.reduce((a, b) => (Math.abs(b.t - t) < Math.abs(a.t - t) ? b : a));
  return { ...Object.fromEntries(keys.map((k) => [k, nearest[k]])), t, from: [nearest.t] };
}

const noise = (target, rows) => 2 * Math.sqrt(target * (1 - target) / Math.max(1, rows));
// The job's forget rows (a coalesced job's union): every curve point is measured on all of them.
const forgetRows = (request) => ((request.curve.points[0] || {}).rows || {}).forget || request.forget_count;

function judge(point, request) {
  const targets = request.curve.targets, criterion = request.erasure_criterion, rows = forgetRows(request);
  const reasons = [], checks = [];
  const fa = targets.forget_accuracy;
  if (typeof fa === "number") {
    const allowed = fa + criterion.forget_tolerance + noise(fa, rows);
    const ok = !(point.forget_accuracy > allowed + 1e-9);
    checks.push(`forget accuracy ${fmt(point.forget_accuracy)} ${ok ? "≤" : ">"} ${fmt(allowed)}`);
    if (!ok) {
      reasons.push(`forget accuracy ${fmt(point.forget_accuracy)} is above ${fmt(allowed)} (target ${fmt(fa)} + `
        + `tolerance ${fmt(criterion.forget_tolerance)} + sampling noise)`);
    }
  }
  const mia = targets.mia_efficacy;
  if (typeof mia === "number") {
    const floor = mia - criterion.mia_tolerance - noise(mia, rows);
    const ok = !(point.mia_efficacy < floor - 1e-9);
    checks.push(`MIA efficacy ${fmt(point.mia_efficacy)} ${ok ? "≥" : "<"} ${fmt(floor)}`);
    if (!ok) {
      reasons.push(`MIA efficacy ${fmt(point.mia_efficacy)} is below ${fmt(floor)} (target ${fmt(mia)} − `
        + `tolerance ${fmt(criterion.mia_tolerance)} − sampling noise)`);
    }
  } else {
    checks.push(`MIA efficacy not judged (${noMiaTarget(request)})`);
  }
  return { met: !reasons.length, reasons, checks, acknowledgement: `${ACKNOWLEDGE_PREFIX}: ${reasons.join("; ")}` };
}

function judgedOn(estimate) {
  return estimate.from.length === 2 ? `the estimate at t = ${fmt(estimate.t, 2)}, linear between the measured points `
    + `t = ${fmt(estimate.from[0], 2)} and t = ${fmt(estimate.from[1], 2)}` : `the measured point t = ${fmt(estimate.from[0], 2)}`;
}

// One line: does the point at t pass the request's erasure criterion, judged as the API will judge it?
function verdictLine(request, t, id) {
  const estimate = pointAt(request.curve.points, t), judgement = judge(estimate, request);
  const how = ` Judged as the API judges it: on ${judgedOn(estimate)} (forget tolerance `
    + `${fmt(request.erasure_criterion.forget_tolerance)}, MIA tolerance ${fmt(request.erasure_criterion.mia_tolerance)}, `
    + `sampling noise over ${forgetRows(request)} forget rows).`;
  const line = judgement.met
    ? `✓ t = ${fmt(t, 2)} meets the erasure criterion (${judgement.checks.join(", ") || "no target to check"}).`
    : `✗ t = ${fmt(t, 2)} does not meet the erasure criterion: ${judgement.reasons.join("; ")}.`;
  return { judgement, estimate, node: el("p", { id, class: judgement.met ? "verdict pass" : "verdict fail",
    "data-met": String(judgement.met) }, line, el("span", { class: "muted" }, how)) };
}

// The reference the proof-of-erasure report uses: θ_o as the curve's t = 0 point, measured on the same rows.
const originalPoint = (curve) => curve.points.find((p) => p.t === 0) || null;

function choosePoint(request, t) {
  const curve = request.curve, metrics = metricsOf(curve);
  const measured = curve.points.find((p) => p.t === t);
  const estimate = pointAt(curve.points, t);
  const full = t === curve.recommended_t ? curve.recommended_point : null; // φ(recommended t) on every row
  const original = originalPoint(curve);
  const columns = [
    [measured ? `t = ${fmt(t, 2)} (measured)` : `t = ${fmt(t, 2)} (estimate)`, measured || estimate],
    full ? [`t = ${fmt(t, 2)} (every row)`, full] : null,
    ["target", curve.targets],
    ["original (t = 0)", original || {}],
  ].filter(Boolean);
  const table = el("table", { id: "confirm-metrics" },
    el("thead", {}, el("tr", {}, el("th", {}, "metric"), columns.map(([h]) => el("th", { class: "num" }, h)))),
    el("tbody", {}, metrics.map(([key, label]) => el("tr", { "data-metric": key }, el("td", {}, label),
      columns.map(([, values]) => el("td", { class: "num" }, fmt(values[key])))))));
  const verdict = verdictLine(request, t, "verdict");
  // A point that fails the criterion is published only when the operator says why (kept in the audit trail and
  // printed on the report); the API needs the text to begin with ACKNOWLEDGE_PREFIX.
  const acknowledgement = el("textarea", { id: "acknowledge", rows: "4" });
  acknowledgement.value = verdict.judgement.met ? "" : `${verdict.judgement.acknowledgement}. Published because: `;
  const ackBlock = el("div", { id: "acknowledge-block", hidden: verdict.judgement.met },
    el("p", { class: "error" }, `To publish it anyway, say why, keeping the beginning "${ACKNOWLEDGE_PREFIX}" `
      + "(kept in the audit trail and printed on the proof-of-erasure report):"), acknowledgement);
  confirmDialog(`Select the point at t = ${fmt(t, 2)}?`,
    el("div", {}, el("p", {}, "The worker builds this model, recomputes its BatchNorm statistics on retain data, "
      + "measures it on every row and publishes it as the model's next version."), table,
    el("p", { class: "muted" }, "original: the curve's t = 0 point (the model before unlearning, measured on the "
      + "same rows as the curve's points), the reference the proof-of-erasure report uses."
      + (measured ? "" : " estimate: linear between the neighbouring measured points.")),
    verdict.node, ackBlock),
    async () => {
      const body = { t };
      if (!ackBlock.hidden && acknowledgement.value.trim()) body.acknowledge = acknowledgement.value.trim();
      try {
        await api(`/v1/deletion-requests/${encodeURIComponent(request.id)}/selection`, { method: "POST", body });
      } catch (failed) {
        const problem = failed.errors[0] || {};
        if (failed.status !== 409 || !failed.type.endsWith("/erasure-criterion-not-met") || !problem.acknowledge) {
          throw failed;
        }
        ackBlock.hidden = false; // the API judged otherwise, or the text lacked the prefix: what it needs
        if (!acknowledgement.value.trim().toLowerCase().startsWith(ACKNOWLEDGE_PREFIX)) {
          acknowledgement.value = `${problem.acknowledge}. Published because: `;
        }
        throw new Error(`The API refused it: ${problem.msg}. To publish it anyway, say why in the box above, `
          + `keeping the beginning "${ACKNOWLEDGE_PREFIX}".`);
      }
      poll(routeToken, request.id);
    });
}

function regionInWords(curve) {
  const spans = curve.effective_region.map(([lo, hi]) => (lo === hi ? `t = ${fmt(lo, 2)}` : `t ${fmt(lo, 2)}–${fmt(hi, 2)}`));
  const meaning = "the measured points whose average distance to the targets (over the metrics that have one) is "
    + "smaller, by more than the forget set's sampling noise, than that of the base-unlearned model at t = 1";
  return spans.length ? `Effective region (shaded): ${spans.join(", ")}: ${meaning}.`
    : `Effective region: none. No measured point is nearer the targets than the base-unlearned model at t = 1 (${meaning}).`;
}

function drawCurve(container, request, metrics, onPick) {
  const curve = request.curve;
  const t = curve.points.map((p) => p.t);
  const traces = metrics.map(([key, label, color]) => ({
    x: t, y: curve.points.map((p) => p[key]), name: label, legendgroup: key, mode: "lines+markers", type: "scatter",
    line: { color, width: 2 }, marker: { size: 9, color }, hovertemplate: `${label}: %{y:.3f}<extra></extra>`,
  }));
  // Targets are traces of their metric's legend group (not shapes): hiding a metric hides its target too, and
  // the y-axis, scaled to what is shown, closes in on the rest.
  for (const [key, label, color] of metrics) {
    const target = curve.targets[key];
    if (typeof target === "number") {
      traces.push({ x: [0, 1], y: [target, target], name: `${label} target`, legendgroup: key, showlegend: false,
        mode: "lines", type: "scatter", hoverinfo: "skip", line: { color, width: 1, dash: "dot" } });
    }
  }
  const vline = (x, style) => ({ type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1, line: style });
  const shapes = curve.effective_region.map(([lo, hi]) => ({ type: "rect", xref: "x", yref: "paper", x0: lo, x1: hi,
    y0: 0, y1: 1, fillcolor: "rgba(30,142,90,0.09)", line: { width: 0 }, layer: "below" }));
  shapes.push(vline(curve.recommended_t, { color: "#1d2330", width: 2, dash: "dash" }));
  const annotations = [{ x: curve.recommended_t, y: 1, yref: "paper", yanchor: "bottom", showarrow: false,
    text: `recommended t = ${fmt(curve.recommended_t, 2)}` }];
  const chosen = request.selection;
  if (chosen) {
    shapes.push(vline(chosen.t, { color: "#b8860b", width: 3 }));
    annotations.push({ x: chosen.t, y: 0.97, yref: "paper", yanchor: "top", xanchor: "left", xshift: 4,
      showarrow: false, bgcolor: "#fff6d6", text: `chosen t = ${fmt(chosen.t, 2)}` });
  }
  const cursor = shapes.length; // the chooser's t, moved by setCursor
  shapes.push(vline(0, { color: "#687086", width: 1, dash: "dot" }));
  shapes[cursor].visible = false;
  const layout = {
    margin: { l: 55, r: 20, t: 30, b: 70 }, hovermode: "x unified", shapes, annotations,
    xaxis: { title: { text: "t (0 = original, 1 = base-unlearned)", standoff: 22 }, range: [-0.02, 1.02],
      zeroline: false, hoverformat: ".2f" },
    yaxis: { title: { text: "accuracy / efficacy" }, autorange: true, rangemode: "normal" }, // to the data shown
    legend: { orientation: "h", y: 1.14 },
  };
  Plotly.newPlot(container, traces, layout, { displaylogo: false, responsive: true,
    modeBarButtonsToRemove: ["select2d", "lasso2d"] });
  container.on("plotly_click", (event) => {
    const point = curve.points.find((p) => p.t === event.points[0].x);
    if (point) onPick(point.t);
  });
  return (x) => Plotly.relayout(container, { [`shapes[${cursor}].x0`]: x, [`shapes[${cursor}].x1`]: x,
    [`shapes[${cursor}].visible`]: true });
}

// The control's steps: a typed 0.125 is 0.13, as shown (Number("0.13") and 13 / 100 are the same double).
const hundredths = (value) => (value === "" ? NaN : Math.round(Number(value) * 100) / 100);

// A control for any t in [0, 1]: its estimate and verdict as it moves, and the recommended t one click away.
function chooser(request, open, setCursor) {
  const curve = request.curve;
  const selectable = request.state === "awaiting_selection", allowed = can("requests:select");
  const slider = el("input", { type: "range", id: "t-slider", min: "0", max: "1", step: "0.01" });
  const input = el("input", { type: "number", id: "t-input", min: "0", max: "1", step: "0.01" });
  const line = el("div", { id: "t-estimate" });
  const chooseButton = el("button", { type: "button", id: "choose-t", class: "primary", disabled: !allowed,
    title: allowed ? null : "this key lacks the scope requests:select", onclick: () => open(hundredths(input.value)) },
  "Choose this t…");
  const update = (value) => {
    const t = hundredths(value);
    const valid = Number.isFinite(t) && t >= 0 && t <= 1;
    chooseButton.disabled = !valid || !allowed;
    if (!valid) return line.replaceChildren(el("p", { class: "error" }, "t is a number from 0 to 1."));
    const estimate = pointAt(curve.points, t);
    line.replaceChildren(el("p", {}, `At t = ${fmt(t, 2)}: `, metricsOf(curve).map(([k, l]) => `${l} ${fmt(estimate[k])}`)
      .join(", "), estimate.from.length === 2 ? " (estimate)" : " (measured)"), verdictLine(request, t, "t-verdict").node);
    setCursor(t);
  };
  slider.addEventListener("input", () => { input.value = slider.value; update(slider.value); });
  input.addEventListener("input", () => { slider.value = input.value; update(input.value); });
  const start = request.selection ? request.selection.t : curve.recommended_t;
  slider.value = input.value = String(start);
  update(String(start));
  return el("div", { id: "chooser" },
    el("div", { class: "row" }, el("label", { for: "t-input" }, "t"), slider, input,
      selectable ? [chooseButton, el("button", { type: "button", id: "choose-recommended", disabled: !allowed,
        title: allowed ? null : "this key lacks the scope requests:select", onclick: () => {
          slider.value = input.value = String(curve.recommended_t);
          update(input.value);
          open(curve.recommended_t);
        } }, `Choose the recommended t = ${fmt(curve.recommended_t, 2)}…`)] : null),
    line);
}

// The measured points, plus a row at the recommended t and at the chosen t where they are not on the grid.
function pointsTable(request, published, open) {
  const curve = request.curve, metrics = metricsOf(curve);
  const selectable = request.state === "awaiting_selection";
  const chosen = request.selection ? request.selection.t : null;
  const rows = curve.points.map((p) => ({ t: p.t, values: p, source: "measured" }));
  const extra = (t, values, source) => {
    if (t !== null && !rows.some((r) => r.t === t)) rows.push({ t, values, source });
  };
  extra(chosen, published || pointAt(curve.points, chosen ?? 0), published ? "every row (published)" : "estimate");
  extra(curve.recommended_t, curve.recommended_point || pointAt(curve.points, curve.recommended_t),
    curve.recommended_point ? "every row" : "estimate");
  rows.sort((a, b) => a.t - b.t);
  return el("table", { id: "points" },
    el("thead", {}, el("tr", {}, el("th", { class: "num" }, "t"),
      metrics.map(([, label]) => el("th", { class: "num" }, label)), el("th", {}, "measured on"), el("th", {}, ""))),
    el("tbody", {}, rows.map((r) => el("tr", { "data-t": r.t, class: [r.t === curve.recommended_t ? "recommended"
      : null, r.t === chosen ? "chosen" : null].filter(Boolean).join(" ") || null },
    el("td", { class: "num" }, fmt(r.t, 2), r.t === curve.recommended_t ? el("div", { class: "tag" }, "recommended")
      : null, r.t === chosen ? el("div", { class: "tag chosen" }, request.selection.model_version
      ? `chosen → version ${request.selection.model_version}` : "chosen") : null),
    ...metricCells(r.values, metrics), el("td", { class: "muted" }, r.source),
    el("td", {}, selectable && (r.source !== "estimate" || r.t === curve.recommended_t)
      ? el("button", { type: "button", class: "choose", disabled: !can("requests:select"),
        title: can("requests:select") ? null : "this key lacks the scope requests:select",
        onclick: () => open(r.t) }, "Choose…") : null)))));
}

function curveNotes(request) {
  const curve = request.curve, metrics = metricsOf(curve), rows = (curve.points[0] || {}).rows;
  const notes = [
    `Targets (dotted; what a model that never saw the forget set would show, estimated from the original): `
      + `${metrics.filter(([k]) => typeof curve.targets[k] === "number").map(([k, l]) => `${l} ${fmt(curve.targets[k])}`)
        .join(", ")}.`,
    `Recommended t = ${fmt(curve.recommended_t, 2)} (dashed)`
      + (curve.points.some((p) => p.t === curve.recommended_t) ? ", a measured point." : ", between measured points")
      + (curve.recommended_point ? "; measured there on every row as well (the table's row)." : "."),
    typeof curve.targets.mia_efficacy === "number" ? null : `MIA efficacy has no target (${noMiaTarget(request)}): `
      + "neither the recommended t nor the erasure criterion uses it; judge forgetting by the accuracies and the "
      + "proof-of-erasure report's per-sample checks.",
    regionInWords(curve),
    classwise(curve) ? "Class-wise request: test accuracy is measured on the retained classes' test rows only; the "
      + "forgotten classes' test accuracy has its own line and column." : null,
    rows ? `Each point is measured on ${Object.entries(rows).map(([s, n]) => `${n} ${s.replaceAll("_", " ")}`)
      .join(", ")} rows; hover a value for its standard error. Click a legend entry to hide a metric: the y-axis `
      + "follows what is shown." : null,
  ];
  return el("ul", { id: "curve-notes", class: "notes" }, notes.filter(Boolean).map((n) => el("li", {}, n)));
}

async function renderCurve(token, request) {
  let published = null; // the chosen point as published: measured on every row
  if (request.selection && request.selection.model_version && can("models:read")) {
    const versions = await all(`/v1/models/${encodeURIComponent(request.model_id)}/versions`);
    published = (versions.find((v) => v.version === request.selection.model_version) || {}).metrics || null;
  }
  if (token !== routeToken) return;
  const open = (t) => { if (request.state === "awaiting_selection" && can("requests:select")) choosePoint(request, t); };
  const plot = el("div", { id: "curve" });
  const section = document.getElementById("curve-section");
  section.replaceChildren(el("h2", {}, "Curve"), el("section", {}, plot));
  const setCursor = drawCurve(plot, request, metricsOf(request.curve), open);
  plot.parentNode.append(chooser(request, open, setCursor), curveNotes(request), pointsTable(request, published, open));
}

function stopPolling() {
  if (timer) clearTimeout(timer);
  timer = null;
}

async function requestPage(token, requestId) {
  show(token, el("h1", {}, "Deletion request ", el("span", { class: "mono" }, requestId)),
    el("section", { id: "summary" }), el("h2", {}, "Job"), el("section", {}, el("dl", { class: "facts", id: "job" })),
    el("div", { id: "curve-section" }), el("h2", {}, "Events"),
    el("section", {}, el("ol", { class: "timeline", id: "events" })));
  await poll(token, requestId);
}

async function poll(token, requestId) {
  stopPolling();
  const id = encodeURIComponent(requestId);
  const request = await api(`/v1/deletion-requests/${id}`);
  if (token !== routeToken) return; // navigated away
  renderSummary(request);
  renderJob(request);
  const events = await all(`/v1/deletion-requests/${id}/events`);
  if (token !== routeToken) return;
  document.getElementById("events").replaceChildren(...events.map((e) => el("li", { "data-type": e.type },
    el("span", { class: "at" }, when(e.at)), " ", el("span", { class: "actor" }, actorOf(e.actor)), " ",
    el("span", { class: "what" }, sentence(e, request.id)))));
  const section = document.getElementById("curve-section");
  if (request.curve && section.dataset.state !== request.state) {
    section.dataset.state = request.state; // redrawn when the state changes (e.g. the buttons go)
    await renderCurve(token, request);
  }
  if (!finished(request.state) && token === routeToken) {
    timer = setTimeout(() => poll(token, requestId).catch(failure), POLL_MS);
  }
}

function progressLine(request) {
  const p = request.progress, running = !request.curve && !finished(request.state);
  const parts = [`${percent(overallOf(request))} of the job`,
    request.curve || p.phase === request.state ? null : `${p.phase} ${percent(p.fraction)}`, // not "queued 0%"
    p.epoch && running ? `epoch ${p.epoch}/${p.epochs}` : null,
    running && typeof p.eta_seconds === "number" ? el("span", { id: "eta" }, timeLeft(p.eta_seconds)) : null];
  return el("span", { class: "progress" }, el("progress", { max: "1", value: String(overallOf(request)) }),
    el("span", { id: "progress-text" }, parts.filter(Boolean).flatMap((x, i) => (i ? [" · ", x] : [x]))));
}

function renderSummary(request) {
  const cancellable = request.state !== "cancelling" && meta.transitions[request.state].includes("cancelled");
  const facts = [
    ["state", stateBadge(request.state)],
    ["progress", progressLine(request)],
    ["model", el("span", {}, el("a", { href: `#/models/${encodeURIComponent(request.model_id)}`, class: "mono" },
      request.model_id), ` version ${request.model_version}`)],
    ["external id", request.external_id || "—"],
    ["forget", `${request.forget_count} samples · fingerprint ${request.forget_fingerprint.slice(0, 16)}…`],
    ["method", `${request.base_method} · selection ${request.selection_mode}`],
    ["created", when(request.created_at)],
    ["received", when(request.received_at)],
    ["due", el("span", { id: "due" }, dueCell(request).textContent, request.due_extension
      ? ` (extended ${request.due_extension.days} days: ${request.due_extension.reason})` : "")],
    request.selection && request.selection.acknowledgement ? ["erasure criterion",
      el("span", { class: "error" }, `not met; published on acknowledgement: ${request.selection.acknowledgement}`)]
      : null,
    request.selection ? ["selected", el("span", { id: "selected" }, `t = ${fmt(request.selection.t, 2)} by `
      + `${request.selection.selected_by || "—"}`, request.selection.model_version ? [" → ",
      el("a", { href: `#/models/${encodeURIComponent(request.model_id)}`, id: "published-version" },
        `version ${request.selection.model_version}`)] : "")] : null,
    request.approval ? ["approval", el("span", { id: "approval" }, `${request.approval.decision} by `
      + `${request.approval.by} (${when(request.approval.at)}): ${request.approval.reason}`)] : null,
    request.error ? ["error", el("span", { class: "error" }, `${request.error.title}: ${request.error.detail}`)] : null,
  ].filter(Boolean);
  const dl = el("dl", { class: "facts" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  const actions = cancellable && can("requests:write") ? el("div", { class: "actions" }, el("button", { type: "button",
      class: "danger", id: "cancel", onclick: () => confirmDialog("Cancel this deletion request?",
        el("p", {}, "A queued request stops at once, a running one within one training batch. Nothing is published."),
        async () => {
          await api(`/v1/deletion-requests/${encodeURIComponent(request.id)}/cancel`, { method: "POST" });
          poll(routeToken, request.id);
        }) }, "Cancel request…")) : null;
  // The approval gate: a key with requests:approve decides; the API refuses the submitter's own key (403).
  const approvals = request.state === "awaiting_approval" && can("requests:approve") ? el("div", { class: "actions" },
    el("button", { type: "button", id: "approve", onclick: () => decideDialog(request, "approve") }, "Approve…"),
    el("button", { type: "button", class: "danger", id: "deny", onclick: () => decideDialog(request, "deny") },
      "Deny…")) : null;
  const reportPath = `/v1/deletion-requests/${encodeURIComponent(request.id)}/report`;
  const evidence = request.state === "succeeded" && can("requests:read") ? el("div", { class: "actions" },
    el("button", { type: "button", id: "report-json", onclick: (e) => save(reportPath, `${request.id}-report.json`,
      e.target) }, "Proof of erasure (signed JSON)"),
    el("button", { type: "button", id: "report-html", onclick: (e) => save(`${reportPath}?format=html`,
      `${request.id}-report.html`, e.target) }, "Proof of erasure (printable)")) : null;
  document.getElementById("summary").replaceChildren(...[dl, approvals, actions, evidence].filter(Boolean));
}

function decideDialog(request, decision) {
  const reason = el("textarea", { id: "approval-reason", rows: "3" });
  confirmDialog(decision === "approve" ? "Approve this deletion request?" : "Deny this deletion request?",
    el("div", {}, el("p", {}, decision === "approve"
      ? "Its job starts: it publishes a new version of the model and deletes superseded weights and training rows."
      : "It is cancelled: nothing runs."),
    el("label", { for: "approval-reason" }, "Reason (kept in the audit trail and the report)"), reason),
    async () => {
      if (!reason.value.trim()) throw new Error("Give the reason.");
      await api(`/v1/deletion-requests/${encodeURIComponent(request.id)}/approval`,
        { method: "POST", body: { decision, reason: reason.value } });
      poll(routeToken, request.id);
    });
}

// The config as dotted keys and values, e.g. `base.epochs 4`: every default is filled in by the API.
function flatten(value, prefix = "") {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return [[prefix, value]];
  const entries = Object.entries(value);
  if (!entries.length) return [[prefix, "{}"]];
  return entries.flatMap(([k, v]) => flatten(v, prefix ? `${prefix}.${k}` : k));
}

function configBlock(request) {
  const entries = flatten(request.config);
  return el("details", { id: "config" }, el("summary", {}, `base method ${request.base_method}, ${entries.length} `
    + "settings (every default filled in)"),
  el("dl", { class: "config" }, entries.map(([k, v]) => el("div", { "data-key": k }, el("dt", { class: "mono" }, k),
    el("dd", { class: "mono" }, typeof v === "string" ? v : JSON.stringify(v))))));
}

// The job's diagnostics (GET of one request only): duration, last heartbeat, seconds per phase, the training.
function renderJob(request) {
  const timings = request.timings, training = request.training;
  const phases = ["mask", "base", "curve", "evaluate"];
  const betas = training ? Object.entries(training.beta_counts).sort(([a], [b]) => Number(a) - Number(b))
    .map(([beta, n]) => `β ${beta} × ${n}`).join(", ") : "";
  const rollbacks = training && training.rollbacks.length ? training.rollbacks.map((r) => `epoch ${r.epoch} `
    + `(lr → ${r.lr})`).join(", ") : "none";
  const started = request.started_at ? new Date(request.started_at) : null;
  const ended = request.finished_at ? new Date(request.finished_at) : null;
  const losses = training ? training.epoch_losses : [];
  const facts = [
    ["duration", el("span", { id: "duration" }, !started ? "not started yet"
      : ended ? `${duration((ended - started) / 1000)} from start to finish (started ${when(request.started_at)}, `
        + `finished ${when(request.finished_at)})`
        : timings ? `started ${when(request.started_at)}; the curve job took ${duration(timings.total)}`
          : `running for ${duration((Date.now() - started) / 1000)} (started ${when(request.started_at)})`)],
    ["last heartbeat", el("span", { id: "last-heartbeat" }, request.last_heartbeat_at ? when(request.last_heartbeat_at)
      : "no worker has reported yet")],
    timings ? ["curve job", el("span", { id: "timings" }, `${duration(timings.total)}: `
      + phases.map((p) => `${p} ${fmt(timings[p], 1)} s`).join(" · "))] : null,
    training ? ["training", el("span", { id: "training" }, `${training.batches} batches`
      + ` (${training.skipped_nonfinite_batches} skipped) · ${betas} · rollbacks: ${rollbacks}`
      + (typeof training.final_lr === "number" ? ` · final lr ${training.final_lr}` : "")
      + (training.device ? ` · on ${training.device}` : ""))] : null,
    training ? ["loss per epoch", losses.length ? el("table", { id: "epoch-losses", class: "compact" },
      el("tr", {}, el("th", {}, "epoch"), losses.map((_, i) => el("td", { class: "num" }, i + 1))),
      el("tr", {}, el("th", {}, "loss"), losses.map((x) => el("td", { class: "num" }, fmt(x, 4)))))
      : el("span", { class: "muted" }, "not kept for this job")] : null,
    ["config", configBlock(request)],
  ].filter(Boolean);
  const job = document.getElementById("job");
  const open = job.querySelector("#config") && job.querySelector("#config").open; // a poll keeps it as it was
  job.replaceChildren(...facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]).flat());
  if (open) job.querySelector("#config").open = true;
}

// --- events as sentences -----------------------------------------------------------------------------------

function actorOf(actor) {
  if (!actor) return "The service";
  return actor === "worker" || actor === "reconciler" ? `The ${actor}` : actor; // else a key's name
}

const PHASES = { mask: "the parameter mask", base: "the base unlearning", curve: "training the curve",
  evaluate: "measuring the curve's points" };
const list = (xs) => (Array.isArray(xs) ? xs.join(", ") : String(xs));
const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

// What an audit event says, in words (the events worker/, domain/ and the reconciler record); the actor is
// printed before it. An unknown type is still readable: its name and its detail's keys and values.
function sentence(e, requestId) {
  const d = e.detail || {}, to = e.state ? ` The request is now ${e.state}.` : "";
  switch (e.type) {
    case "state_changed":
      if ("forget_count" in d) {
        const erased = Object.entries(d.already_erased_by || {}).map(([r, n]) => `${n} by ${r}`);
        return `submitted the request: forget ${plural(d.forget_count, "sample", "samples")}`
          + (d.external_id ? ` (external id ${d.external_id})` : "")
          + (erased.length ? `; rows already erased were left out (${erased.join(", ")})` : "")
          + (d.joined_job ? `; it joined the job of ${d.joined_job}` : "") + `.${to}`;
      }
      if ("recommended_t" in d) {
        return `measured the curve: ${plural(d.points, "point", "points")}, recommended t = ${fmt(d.recommended_t, 2)}.${to}`;
      }
      if ("t" in d) {
        const auto = d.selected_by === "auto";
        return `${auto ? "selected automatically" : "selected"} the point t = ${fmt(d.t, 2)}`
          + (d.instead_of !== undefined ? ` instead of the recommended t = ${fmt(d.instead_of, 2)}, which does not meet `
            + `the erasure criterion (${list(d.because)})` : "")
          + (d.acknowledgement ? `, acknowledging: "${d.acknowledgement}"` : "") + `.${to}`;
      }
      if (d.approval) return `${d.approval} the request: ${d.reason}.${to}`; // the approval gate's decision
      if (d.error) return `stopped the job: it failed (${d.error}).${to}`;
      if (d.worker) return `took the job (worker ${d.worker}).${to}`;
      if (d.left_job) return `took the request out of the job of ${d.left_job}.${to}`;
      return `moved the request to ${e.state}${d.reason ? `: ${d.reason}` : ""}${d.job ? ` (with its job ${d.job})` : ""}.`;
    case "claimed": return `claimed the job${d.worker ? ` (worker ${d.worker})` : ""}.`;
    case "resumed": return `resumed the job after its previous worker stopped reporting${d.worker ? ` (worker ${d.worker})` : ""}.`;
    case "phase_started": return `started ${PHASES[d.phase] || `the phase ${d.phase}`} (phase “${d.phase}”).`;
    case "resumed_from_checkpoint": return `resumed the curve training from its checkpoint after epoch ${d.epoch}.`;
    case "erasure_criterion_not_met":
      return `found that ${d.t !== undefined ? `the point t = ${fmt(d.t, 2)}` : "the selected point"} does not meet the `
        + `erasure criterion: ${list(d.reasons || [])}${d.detail ? ` (${d.detail})` : ""}.`;
    case "erasure_criterion_undecidable": return `warned that the erasure criterion cannot decide: ${d.detail}.`;
    case "point_attacks_requested": return `asked for the auditor's attacks on the point t = ${fmt(d.t, 2)}.`;
    case "point_attacks_done":
      return `ran the auditor's attacks on the point t = ${fmt(d.t, 2)}: the erasure criterion is `
        + `${d.met ? "met" : "not met"} there.`;
    case "point_attacks_failed": return `could not run the attacks on the point t = ${fmt(d.t, 2)} (${d.error}).`;
    case "member_joined": return `added request ${d.request} to this job.`;
    case "job_handed_over": return `handed the job over from ${d.from} to ${d.to}.`;
    case "job_restarted": return `restarted the job: ${d.reason} (requests now in it: ${list(d.members || [])}).`;
    case "version_published":
      return `published version ${d.version} of the model (t = ${fmt(d.t, 2)}, sha256 ${String(d.sha256).slice(0, 12)}…).`;
    case "rebased": return `moved the request from model version ${d.from_version} to ${d.to_version}, the newest.${to}`;
    case "superseded_weights_deleted":
      return `deleted the weights of superseded version${(d.versions || []).length === 1 ? "" : "s"} `
        + `${list(d.versions || [])}${(d.kept || []).length ? ` (kept: ${list(d.kept)})` : ""}.`;
    case "shards_rewritten":
      return `rewrote ${plural((d.shards || []).length, "shard", "shards")} of dataset ${d.dataset_id} without the `
        + `${plural(d.rows, "erased training row", "erased training rows")}.`;
    case "training_rows_erased":
      return `erased ${plural(d.rows, "training row", "training rows")} of this request from dataset ${d.dataset_id}`
        + (d.by_request && d.by_request !== requestId ? ` (with request ${d.by_request})` : "") + ".";
    case "artifacts_deleted":
      return `deleted the job's intermediate files (${list(d.artifacts || []) || "none left"}; `
        + `${plural(d.objects, "object", "objects")}).`;
    case "callback_attempt":
      return `${d.delivered ? "delivered" : "could not deliver"} the “${d.event}” callback to ${d.url} (attempt `
        + `${d.attempt}${d.status ? `, HTTP ${d.status}` : ""}${d.error ? `: ${d.error}` : ""}).`;
    case "overdue": return `noted that the request passed its due date (${when(d.due_at)}) without an answer.`;
    case "due_date_extended":
      return `extended the due date by ${plural(d.days, "day", "days")} to ${when(d.due_at).slice(0, 10)}: ${d.reason}.`;
    default: {
      const said = Object.entries(d).map(([k, v]) => `${k.replaceAll("_", " ")} ${Array.isArray(v) ? list(v)
        : v !== null && typeof v === "object" ? JSON.stringify(v) : v}`);
      return `recorded “${e.type.replaceAll("_", " ")}”${said.length ? `: ${said.join(", ")}` : ""}.${to}`;
    }
  }
}

// --- routing -----------------------------------------------------------------------------------------------

async function route() {
  stopPolling();
  const token = ++routeToken;
  if (!sessionStorage.getItem(KEY)) return signInPage();
  if (!identity && !(await loadIdentity())) return;
  const [path, query] = (location.hash.slice(1) || "/models").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query || "");
  try {
    if (parts[0] === "requests" && parts[1]) await requestPage(token, parts[1]);
    else if (parts[0] === "requests") await requestsPage(token, params);
    else if (parts[0] === "models" && parts[1]) await modelPage(token, parts[1]);
    else if (can("models:read")) await modelsPage(token);
    else if (can("requests:read")) await requestsPage(token, params);
    else show(token, el("p", {}, "This key can read neither models nor deletion requests."));
  } catch (error) {
    failure(error);
  }
}

document.getElementById("sign-out").addEventListener("click", () => signOut());
window.addEventListener("hashchange", route);
route();
