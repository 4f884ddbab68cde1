// Review analytics for auditors: charts and tables from /api/v1/analytics, CSV links.
import { barChart, el, onLogin } from "./charts.js";

const state = { token: "", query: "" };

async function api(path) {
  const reply = await fetch(path, { headers: { "Authorization": `Bearer ${state.token}` } });
  const body = await reply.json();
  if (!reply.ok) throw new Error(body?.error?.message || `HTTP ${reply.status}`);
  return body;
}

function fill(id, rows, cells) {
  const tbody = document.getElementById(id);
  tbody.replaceChildren();
  for (const row of rows) {
    const tr = el("tr");
    for (const value of cells(row)) tr.append(el("td", value));
    tbody.append(tr);
  }
}

const pct = (n, d) => (d ? `${((100 * n) / d).toFixed(1)} %` : "-");

function render(data) {
  const by = (dimension) => data.rates.filter((r) => r.dimension === dimension);
  const rate = (rows) => rows.map((r) => [r.value, r.reviewed ? r.accepted / r.reviewed : 0]);
  document.getElementById("charts").replaceChildren(
    barChart("Acceptance rate by model version", rate(by("model"))),
    barChart("Acceptance rate by modality", rate(by("modality"))),
    barChart("Acceptance rate by facility", rate(by("facility"))),
    barChart("Rejected findings by label", by("label").map((r) => [r.value, r.rejected])),
    barChart("Median turnaround per stage", data.turnaround.map((t) => [t.stage, t.p50_s]), " s"),
    barChart("Findings radiologists added", data.added.map((a) => [`${a.facility} / ${a.label}`, a.count])),
  );
  fill("rates", data.rates, (r) => [r.dimension, r.value, r.reviewed, r.accepted, r.edited, r.rejected, r.ignored, pct(r.accepted, r.reviewed)]);
  fill("turnaround", data.turnaround, (t) => [t.stage, t.studies, t.p50_s.toFixed(1), t.p90_s.toFixed(1), t.mean_s.toFixed(1)]);
  fill("added", data.added, (a) => [a.facility, a.modality, a.label, a.count]);
  fill("shadow", data.shadow, (c) => [c.facility, c.studies, c.studies_with_findings, c.findings, c.mean_confidence.toFixed(2), c.studies_reported]);
}

async function csv(table) {
  // The CSV needs the bearer token, so it is fetched and handed to the browser as a file.
  const reply = await fetch(`/api/v1/analytics/${table}.csv?${state.query}`, { headers: { "Authorization": `Bearer ${state.token}` } });
  const url = URL.createObjectURL(await reply.blob());
  const link = el("a", "", { href: url, download: `review-${table}.csv` });
  document.body.append(link); link.click(); link.remove();
  URL.revokeObjectURL(url);
}

async function load() {
  const form = new FormData(document.getElementById("filters"));
  const params = new URLSearchParams();
  for (const key of ["facility", "since", "until"]) if (form.get(key)) params.set(key, form.get(key));
  state.query = params.toString();
  render(await api(`/api/v1/analytics?${state.query}`));
}

onLogin("analytics", async (token) => {
  state.token = token;
  try { await load(); } catch (err) { document.getElementById("login-error").textContent = err.message; }
});
document.getElementById("filters").addEventListener("submit", (event) => { event.preventDefault(); load(); });
for (const table of ["rates", "turnaround", "added", "shadow"]) {
  document.getElementById(`csv-${table}`).addEventListener("click", (event) => { event.preventDefault(); csv(table); });
}
