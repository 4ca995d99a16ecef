// The MCU operator console: a few hash-routed pages over the HTTP API (#/models, #/models/ID,
// #/requests, #/requests/ID). The API key lives in this tab's sessionStorage only; it travels in the
// Authorization header and never in a URL. Every value from the API reaches the page as text (textContent),
// never as HTML.
"use strict";

const KEY = "mcu.apiKey";
const STATES = ["queued", "running", "awaiting_selection", "materializing", "succeeded", "failed", "cancelling",
  "cancelled"];
const FINISHED = ["succeeded", "failed", "cancelled"];
const METRICS = [
  ["forget_accuracy", "forget accuracy", "#c0392b"],
  ["retain_accuracy", "retain accuracy", "#2f5fd0"],
  ["test_accuracy", "test accuracy", "#1e8e5a"],
  ["mia_efficacy", "MIA efficacy", "#8e44ad"],
];
const POLL_MS = 1000;

let identity = null; // {name, scopes} of the signed-in key
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
const stateBadge = (state) => el("span", { class: `state ${state}`, "data-state": state }, state);

class ApiError extends Error {
  constructor(status, detail, type) {
    super(detail);
    this.status = status;
    this.type = type || "";
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
    throw new ApiError(response.status, problem.detail || response.statusText, problem.type);
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

function metricCells(metrics) {
  const m = metrics || {}, errors = m.std_errors || {}, rows = m.rows || {};  // points and versions carry both
  const where = Object.entries(rows).map(([split, n]) => `${n} ${split}`).join(", ");
  return METRICS.map(([key]) => el("td", { class: "num", title: typeof errors[key] === "number"
    ? `± ${fmt(errors[key], 4)} (standard error; rows: ${where})` : null }, fmt(m[key])));
}

async function modelPage(token, modelId) {
  const id = encodeURIComponent(modelId);
  const [model, versions] = await Promise.all([api(`/v1/models/${id}`), all(`/v1/models/${id}/versions`)]);
  const pre = model.preprocessing;
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
        ...METRICS.map(([, label]) => label), "created", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, versions.map((v) => el("tr", { "data-version": v.version },
        el("td", {}, `v${v.version}`, v.version === model.current_version ? el("span", { class: "muted" }, " (current)")
          : null),
        el("td", {}, v.parent_version ? `v${v.parent_version}` : "original upload"),
        el("td", {}, v.deletion_request_id
          ? el("a", { href: `#/requests/${encodeURIComponent(v.deletion_request_id)}`, class: "mono" },
            v.deletion_request_id) : "—"),
        el("td", { class: "num" }, fmt(v.t, 2)), el("td", { class: "mono" }, v.sha256), ...metricCells(v.metrics),
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
  const overdue = !FINISHED.includes(request.state) && new Date(request.due_at) < new Date();
  return el("td", { class: overdue ? "overdue" : null }, when(request.due_at).slice(0, 10) + (overdue ? " overdue" : ""));
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
    STATES.map((s) => el("option", { value: s, selected: s === filters.state }, s)));
  const modelSelect = el("select", { id: "filter-model", onchange: apply }, el("option", { value: "" }, "any model"),
    models.map((m) => el("option", { value: m.id, selected: m.id === filters.model_id }, `${m.name} (${m.id})`)));
  if (filters.model_id && !models.some((m) => m.id === filters.model_id)) {
    modelSelect.append(el("option", { value: filters.model_id, selected: true }, filters.model_id));
  }
  show(token, el("h1", {}, "Deletion requests"),
    el("div", { class: "filters" }, el("label", {}, "State ", stateSelect), el("label", {}, "Model ", modelSelect)),
    el("section", {}, el("table", { id: "requests" },
      el("thead", {}, el("tr", {}, ["request", "external id", "model", "state", "progress", "forget", "created",
        withDue ? "due" : null].filter((h) => h !== null).map((h) => el("th", {}, h)))),
      el("tbody", {}, requests.map((r) => el("tr", { "data-id": r.id },
        el("td", {}, el("a", { href: `#/requests/${encodeURIComponent(r.id)}`, class: "mono" }, r.id)),
        el("td", {}, r.external_id || "—"),
        el("td", {}, el("a", { href: `#/models/${encodeURIComponent(r.model_id)}`, class: "mono" }, r.model_id),
          ` v${r.model_version}`),
        el("td", {}, stateBadge(r.state)),
        el("td", {}, `${r.progress.phase} ${Math.round(r.progress.fraction * 100)}%`),
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

function choosePoint(request, point, original) {
  const targets = request.curve.targets;
  const table = el("table", { id: "confirm-metrics" },
    el("thead", {}, el("tr", {}, el("th", {}, "metric"), el("th", { class: "num" }, `t = ${fmt(point.t, 2)}`),
      el("th", { class: "num" }, "target"), el("th", { class: "num" }, `original (v${request.model_version})`))),
    el("tbody", {}, METRICS.map(([key, label]) => el("tr", { "data-metric": key }, el("td", {}, label),
      el("td", { class: "num" }, fmt(point[key])), el("td", { class: "num" }, fmt(targets[key])),
      el("td", { class: "num" }, fmt((original || {})[key]))))));
  // A point that fails the erasure criterion is refused (409) until the operator says why it goes out anyway.
  const acknowledgement = el("textarea", { id: "acknowledge", rows: "3", cols: "60" });
  const ackBlock = el("div", { id: "acknowledge-block", hidden: "" },
    el("p", { class: "error" }, "This point does not meet the erasure criterion. To publish it anyway, say why "
      + "(kept in the audit trail and printed on the proof-of-erasure report):"), acknowledgement);
  confirmDialog(`Select the point at t = ${fmt(point.t, 2)}?`,
    el("div", {}, el("p", {}, "The worker builds this model, recomputes its BatchNorm statistics on retain data and "
      + "publishes it as the model's next version."), table, ackBlock),
    async () => {
      const body = { t: point.t };
      if (!ackBlock.hidden) body.acknowledge = acknowledgement.value;
      try {
        await api(`/v1/deletion-requests/${encodeURIComponent(request.id)}/selection`, { method: "POST", body });
      } catch (failed) {
        if (failed.status === 409 && failed.type.endsWith("/erasure-criterion-not-met") && ackBlock.hidden) {
          ackBlock.hidden = false;
          acknowledgement.value = "erasure criterion not met: ";
        }
        throw failed;
      }
      poll(routeToken, request.id);
    });
}

function drawCurve(container, request, original) {
  const curve = request.curve;
  const t = curve.points.map((p) => p.t);
  const traces = METRICS.map(([key, label, color]) => ({
    x: t, y: curve.points.map((p) => p[key]), name: label, mode: "lines+markers", type: "scatter",
    line: { color, width: 2 }, marker: { size: 9, color },
    hovertemplate: `${label}: %{y:.3f}<extra></extra>`,
  }));
  const shapes = curve.effective_region.map(([lo, hi]) => ({ type: "rect", xref: "x", yref: "paper", x0: lo, x1: hi,
    y0: 0, y1: 1, fillcolor: "rgba(30,142,90,0.09)", line: { width: 0 }, layer: "below" }));
  for (const [key, , color] of METRICS) {
    const target = curve.targets[key];
    if (typeof target === "number") {
      shapes.push({ type: "line", xref: "paper", x0: 0, x1: 1, y0: target, y1: target,
        line: { color, width: 1, dash: "dot" } });
    }
  }
  shapes.push({ type: "line", xref: "x", yref: "paper", x0: curve.recommended_t, x1: curve.recommended_t, y0: 0,
    y1: 1, line: { color: "#1d2330", width: 2, dash: "dash" } });
  const layout = {
    margin: { l: 50, r: 20, t: 30, b: 45 }, hovermode: "x unified", shapes,
    xaxis: { title: { text: "t (0 = original, 1 = base-unlearned)" }, range: [-0.02, 1.02], zeroline: false },
    yaxis: { title: { text: "accuracy / efficacy" }, range: [-0.03, 1.03] },
    legend: { orientation: "h", y: 1.12 },
    annotations: [{ x: curve.recommended_t, y: 1, yref: "paper", yanchor: "bottom", showarrow: false,
      text: `recommended t = ${fmt(curve.recommended_t, 2)}` }],
  };
  Plotly.newPlot(container, traces, layout, { displaylogo: false, responsive: true,
    modeBarButtonsToRemove: ["select2d", "lasso2d"] });
  container.on("plotly_click", (event) => {
    const point = curve.points[event.points[0].pointIndex];
    if (request.state === "awaiting_selection" && can("requests:select")) choosePoint(request, point, original);
  });
}

function pointsTable(request, original) {
  const curve = request.curve;
  const nearest = curve.points.reduce((a, b) => (Math.abs(b.t - curve.recommended_t)
    < Math.abs(a.t - curve.recommended_t) ? b : a));
  const selectable = request.state === "awaiting_selection";
  const caption = el("caption", { class: "muted" }, `Targets: ${METRICS.map(([k, l]) => `${l} `
    + `${fmt(curve.targets[k])}`).join(", ")}. Recommended t = ${fmt(curve.recommended_t, 2)} (highlighted: the `
    + `nearest measured point); effective region ${JSON.stringify(curve.effective_region)}.`
    + (curve.recommended_point ? ` On every row at the recommended t: ${METRICS.map(([k, l]) => `${l} `
      + `${fmt(curve.recommended_point[k])}`).join(", ")}.` : "") + " Hover a value for its standard error.");
  return el("table", { id: "points" }, caption,
    el("thead", {}, el("tr", {}, el("th", { class: "num" }, "t"),
      METRICS.map(([, label]) => el("th", { class: "num" }, label)), el("th", {}, ""))),
    el("tbody", {}, curve.points.map((p) => el("tr", { class: p === nearest ? "recommended" : null, "data-t": p.t },
      el("td", { class: "num" }, fmt(p.t, 2)), ...metricCells(p),
      el("td", {}, selectable ? el("button", { type: "button", class: "choose", disabled: !can("requests:select"),
        title: can("requests:select") ? null : "this key lacks the scope requests:select",
        onclick: () => choosePoint(request, p, original) }, "Choose…") : null)))));
}

function stopPolling() {
  if (timer) clearTimeout(timer);
  timer = null;
}

async function requestPage(token, requestId) {
  show(token, el("h1", {}, "Deletion request ", el("span", { class: "mono" }, requestId)),
    el("section", { id: "summary" }), el("div", { id: "curve-section" }), el("h2", {}, "Events"),
    el("section", {}, el("ol", { class: "timeline", id: "events" })));
  await poll(token, requestId);
}

async function poll(token, requestId) {
  stopPolling();
  const id = encodeURIComponent(requestId);
  const request = await api(`/v1/deletion-requests/${id}`);
  if (token !== routeToken) return; // navigated away
  renderSummary(request);
  const events = await all(`/v1/deletion-requests/${id}/events`);
  if (token !== routeToken) return;
  document.getElementById("events").replaceChildren(...events.map((e) => el("li", { "data-type": e.type },
    el("span", { class: "at" }, when(e.at)), el("strong", {}, e.type), e.state ? ` → ${e.state}` : "",
    e.actor ? el("span", { class: "muted" }, ` by ${e.actor}`) : "",
    e.detail ? el("div", { class: "mono muted" }, JSON.stringify(e.detail)) : "")));
  const section = document.getElementById("curve-section");
  if (request.curve && section.dataset.state !== request.state) {
    section.dataset.state = request.state; // redrawn when the state changes (e.g. the buttons go)
    let original = null;
    if (can("models:read")) {
      const versions = await all(`/v1/models/${encodeURIComponent(request.model_id)}/versions`);
      original = (versions.find((v) => v.version === request.model_version) || {}).metrics;
      if (token !== routeToken) return;
    }
    const plot = el("div", { id: "curve" });
    section.replaceChildren(el("h2", {}, "Curve"), el("section", {}, plot, pointsTable(request, original)));
    drawCurve(plot, request, original);
  }
  if (!FINISHED.includes(request.state) && token === routeToken) {
    timer = setTimeout(() => poll(token, requestId).catch(failure), POLL_MS);
  }
}

function renderSummary(request) {
  const progress = request.progress;
  const epoch = progress.epoch ? ` · epoch ${progress.epoch}/${progress.epochs}` : "";
  const cancellable = !FINISHED.includes(request.state) && request.state !== "cancelling";
  const facts = [
    ["state", stateBadge(request.state)],
    ["progress", el("span", { class: "progress" }, el("progress", { max: "1", value: String(progress.fraction) }),
      `${progress.phase} ${Math.round(progress.fraction * 100)}%${epoch}`)],
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
  const reportPath = `/v1/deletion-requests/${encodeURIComponent(request.id)}/report`;
  const evidence = request.state === "succeeded" && can("requests:read") ? el("div", { class: "actions" },
    el("button", { type: "button", id: "report-json", onclick: (e) => save(reportPath, `${request.id}-report.json`,
      e.target) }, "Proof of erasure (signed JSON)"),
    el("button", { type: "button", id: "report-html", onclick: (e) => save(`${reportPath}?format=html`,
      `${request.id}-report.html`, e.target) }, "Proof of erasure (printable)")) : null;
  document.getElementById("summary").replaceChildren(...[dl, actions, evidence].filter(Boolean));
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
