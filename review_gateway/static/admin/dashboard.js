// Operator dashboard: charts of every service's metrics and the failed-job list. PHI-free by
// construction (metrics carry facility names, model names and counts only); text via textContent.
import { barChart, buckets, el, grouped, meanByLabel, onLogin } from "./charts.js";

const state = { token: "" };

async function api(path, options = {}) {
  const headers = { "Authorization": `Bearer ${state.token}`, ...(options.headers || {}) };
  const reply = await fetch(path, { ...options, headers });
  const body = reply.status === 204 ? null : await reply.json();
  if (!reply.ok) throw new Error(body?.error?.message || `HTTP ${reply.status}`);
  return body;
}

function render(data) {
  const services = document.getElementById("services");
  services.replaceChildren();
  for (const [name, s] of Object.entries(data.services)) {
    const row = el("tr");
    row.append(el("td", name), el("td", s.up ? "up" : "down", { class: s.up ? "up" : "down" }), el("td", s.error));
    services.append(row);
  }
  const x = data.samples;
  const charts = document.getElementById("charts");
  charts.replaceChildren(
    barChart("Ingest volume (facility / adapter / outcome)", grouped(x, "sidecar_ingest_instances_total", ["facility", "source", "outcome"])),
    barChart("Ingest rejections by reason", grouped(x, "sidecar_ingest_rejections_total", ["reason"])),
    barChart("Queue depth per consumer", grouped(x, "sidecar_queue_depth", ["consumer"])),
    barChart("Redeliveries per consumer", grouped(x, "sidecar_consumer_redeliveries_total", ["consumer"])),
    barChart("Failed jobs by kind", grouped(x, "sidecar_jobs_failed_total", ["kind"])),
    barChart("Mean inference latency per model", meanByLabel(x, "sidecar_inference_seconds", "model"), " s"),
    barChart("Eligibility (facility / outcome)", grouped(x, "sidecar_eligibility_decisions_total", ["facility", "outcome"])),
    barChart("Errors per facility", grouped(x, "sidecar_errors_total", ["facility"])),
    barChart("SLO: received → AI ready", buckets(x, "sidecar_study_received_to_ai_ready_seconds")),
  );
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

async function loadDeadLetters() {
  const params = new URLSearchParams();
  const facility = document.getElementById("dl-facility").value.trim();
  const kind = document.getElementById("dl-kind").value.trim();
  if (facility) params.set("facility", facility);
  if (kind) params.set("kind", kind);
  const body = await api(`/api/v1/admin/dead-letters?${params}`);
  const tbody = document.getElementById("dead-letters");
  tbody.replaceChildren();
  for (const d of body.dead_letters) {
    const row = el("tr");
    const actions = el("td");
    const redrive = el("button", "Re-drive", { type: "button" });
    redrive.addEventListener("click", () => act("redrive", { sequences: [d.sequence] }));
    const discard = el("button", "Discard", { type: "button" });
    discard.addEventListener("click", () => {
      const reason = window.prompt("Why discard this job?");
      if (reason) act("discard", { sequences: [d.sequence], reason });
    });
    actions.append(redrive, discard);
    row.append(el("td", d.sequence), el("td", d.at || ""), el("td", d.kind), el("td", d.facility),
      el("td", d.accession), el("td", d.deliveries), el("td", `${d.error_class}: ${d.error_message}`), actions);
    tbody.append(row);
  }
  return body.dead_letters;
}

async function act(action, selection) {
  const status = document.getElementById("dl-status");
  try {
    const body = await api(`/api/v1/admin/dead-letters/${action}`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(selection) });
    const done = body.redriven || body.discarded || [];
    status.textContent = `${action === "redrive" ? "re-driven" : "discarded"}: ${done.join(", ") || "none"}`;
  } catch (err) {
    status.textContent = `failed: ${err.message}`;
  }
  await loadDeadLetters();
}

async function loadFacilities() {
  const body = await api("/api/v1/admin/facilities");
  const keys = [...new Set(body.facilities.flatMap((f) => Object.keys(f)))].filter((k) => k !== "name");
  const head = el("tr");
  for (const k of ["name", ...keys]) head.append(el("th", k));
  document.getElementById("facility-head").replaceChildren(head);
  const tbody = document.getElementById("facilities");
  tbody.replaceChildren();
  for (const f of body.facilities) {
    const row = el("tr");
    for (const k of ["name", ...keys]) {
      const v = f[k];
      row.append(el("td", Array.isArray(v) ? v.join(",") : v === null || v === undefined ? "" : v));
    }
    tbody.append(row);
  }
}

// "key=value" lines → typed settings: true/false, numbers (keys ending _s, _days, _port or
// _max), comma
// lists for enabled_models; an empty value clears a setting (retention_days= : kept forever).
function parseSettings(text) {
  const out = {};
  for (const line of text.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const at = line.indexOf("=");
    if (at < 1) throw new Error(`not key=value: ${line}`);
    const key = line.slice(0, at).trim();
    const raw = line.slice(at + 1).trim();
    if (key === "enabled_models") out[key] = raw === "all" ? "all" : raw.split(",").map((m) => m.trim()).filter(Boolean);
    else if (raw === "true" || raw === "false") out[key] = raw === "true";
    else if (raw !== "" && !Number.isNaN(Number(raw)) && /_(s|days|port|max)$/.test(key)) out[key] = Number(raw);
    else out[key] = raw;
  }
  return out;
}

document.getElementById("facility-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const status = document.getElementById("facility-status");
  const name = String(form.get("name")).trim();
  try {
    const settings = parseSettings(String(form.get("settings") || ""));
    const create = event.submitter?.value === "create";
    await api(create ? "/api/v1/admin/facilities" : `/api/v1/admin/facilities/${encodeURIComponent(name)}`, {
      method: create ? "POST" : "PATCH", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(create ? { name, settings } : { settings }) });
    status.textContent = `${create ? "added" : "changed"}: ${name}`;
    await loadFacilities();
  } catch (err) {
    status.textContent = `not saved: ${err.message}`;
  }
});

// The account lifecycle: each button one admin API call, audited by the workflow service with
// the admin's name; a password reset asks for the new password (never shown back).
async function userAction(name, action) {
  const status = document.getElementById("user-status");
  const options = { method: "POST", headers: { "Content-Type": "application/json" } };
  if (action === "reset-password") {
    const password = window.prompt(`New password for ${name} (every session of ${name} ends)`);
    if (!password) return;
    options.body = JSON.stringify({ password });
  }
  try {
    const body = await api(`/api/v1/admin/users/${encodeURIComponent(name)}/${action}`, options);
    status.textContent = `${action}: ${name}${body.changed ? "" : " (no change)"}`;
  } catch (err) {
    status.textContent = `${action} refused: ${err.message}`;
  }
  await loadUsers();
}

async function loadUsers() {
  const body = await api("/api/v1/admin/users");
  const tbody = document.getElementById("users");
  tbody.replaceChildren();
  for (const u of body.users) {
    const row = el("tr");
    const actions = el("td");
    for (const [action, label] of [[u.disabled ? "enable" : "disable", u.disabled ? "Enable" : "Disable"],
      ["revoke-sessions", "Revoke sessions"], ["reset-password", "Reset password"]]) {
      const button = el("button", label, { type: "button", "aria-label": `${label} ${u.username}` });
      button.addEventListener("click", () => userAction(u.username, action));
      actions.append(button);
    }
    row.append(el("td", u.username), el("td", u.role), el("td", u.facility || ""),
      el("td", u.disabled ? "disabled" : "enabled", { class: u.disabled ? "down" : "up" }),
      el("td", u.sessions_revoked_at || ""), actions);
    tbody.append(row);
  }
}

async function refresh() {
  render(await api("/api/v1/admin/metrics"));
  await loadFacilities();
  await loadUsers();
  await loadDeadLetters();
}

onLogin("dashboard", async (token) => { state.token = token; await refresh(); });
document.getElementById("refresh").addEventListener("click", refresh);
document.getElementById("dl-redrive-all").addEventListener("click", () => {
  const facility = document.getElementById("dl-facility").value.trim();
  const kind = document.getElementById("dl-kind").value.trim();
  act("redrive", { facility, kind });
});
document.addEventListener("keydown", (event) => { if (event.key === "r" && state.token && event.target === document.body) refresh(); });
