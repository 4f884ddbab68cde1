// Charts, DOM helpers and the login form shared by the operator pages (no inline script or style).
export function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

// Sums samples of `name` grouped by the label values `keys` names.
export function grouped(samples, name, keys) {
  const out = new Map();
  for (const s of samples) {
    if (s.name !== name) continue;
    const key = keys.map((k) => s.labels[k] || "-").join(" / ");
    out.set(key, (out.get(key) || 0) + s.value);
  }
  return [...out.entries()].sort((a, b) => b[1] - a[1]);
}

export function meanByLabel(samples, base, label) {
  const sums = new Map(grouped(samples, `${base}_sum`, [label]));
  return grouped(samples, `${base}_count`, [label])
    .filter(([, n]) => n > 0).map(([k, n]) => [k, (sums.get(k) || 0) / n]);
}

export function buckets(samples, name) {
  const total = new Map();
  for (const s of samples) {
    if (s.name !== `${name}_bucket`) continue;
    total.set(s.labels.le, (total.get(s.labels.le) || 0) + s.value);
  }
  const les = [...total.keys()].sort((a, b) => parseFloat(a) - parseFloat(b));
  let previous = 0;
  return les.map((le) => { const c = total.get(le); const v = c - previous; previous = c; return [`≤ ${le} s`, v]; });
}

export function barChart(title, rows, unit = "") {
  const figure = el("figure", undefined, { "aria-label": title });
  figure.append(el("figcaption", title));
  const canvas = el("canvas", undefined, { role: "img", "aria-label": `${title}: ${rows.length} bars` });
  canvas.width = 860; canvas.height = 440;
  figure.append(canvas);
  const ctx = canvas.getContext("2d");
  ctx.font = "22px system-ui, sans-serif";
  if (!rows.length) { ctx.fillStyle = "#777"; ctx.fillText("no data yet", 20, 60); return figure; }
  const max = Math.max(...rows.map(([, v]) => v), 1e-9);
  const h = Math.min(44, 420 / rows.length);
  rows.slice(0, 10).forEach(([label, value], i) => {
    const y = 10 + i * h;
    const w = Math.max(2, (value / max) * 480);
    ctx.fillStyle = "#3f6fd8"; ctx.fillRect(330, y, w, h - 8);
    ctx.fillStyle = "#1d2330";
    ctx.fillText(label.slice(0, 26), 6, y + h - 14);
    const shown = Number.isInteger(value) ? value : value.toFixed(2);
    ctx.fillText(`${shown}${unit}`, 336 + w, y + h - 14);
  });
  figure.dataset.bars = String(Math.min(rows.length, 10));
  return figure;
}


// The pages' login form: on success hides it, shows the section `sectionId` and hands the
// bearer token (kept in memory only) to `then`; a refusal is shown in the form.
export function onLogin(sectionId, then) {
  document.getElementById("login").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const reply = await fetch("/api/v1/auth/login", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: form.get("username"), password: form.get("password") }) });
    const body = await reply.json();
    if (!reply.ok) { document.getElementById("login-error").textContent = body?.error?.message || "login failed"; return; }
    document.getElementById("who").textContent = `${form.get("username")} (${body.role})`;
    document.getElementById("login").hidden = true;
    document.getElementById(sectionId).hidden = false;
    await then(body.access_token);
  });
}
