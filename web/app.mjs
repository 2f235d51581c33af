// The inspector page: open a .distillgan file in this tab (headers only), show what it holds.
// Every string from the file reaches the page through textContent, never as HTML.
import { DTYPES, DistillganError, NaNValue, Ref, Tuple, openArchive, tensorValues } from "../js/distillgan.mjs";

const $ = (id) => document.getElementById(id);
const MAX_HIST_BYTES = 64 << 20; // a histogram reads at most this much of a tensor (evenly spaced elements beyond)
let current = null;
let rows = [];
let sort = { key: "offset", asc: true };

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function fmtBytes(n) {
  n = Number(n);
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? `${n} B` : `${n.toFixed(n < 10 ? 2 : 1)} ${units[i]}`;
}

const fmtInt = (n) => BigInt(n).toLocaleString("en-US");

function fmtValue(v) {
  if (v === null) return "nil";
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "number") return Object.is(v, -0) ? "-0.0" : String(v);
  if (v instanceof NaNValue) return `NaN (bits ${v.bits})`;
  if (v instanceof Uint8Array) return `bytes[${v.length}]`;
  if (typeof v === "string") return JSON.stringify(v);
  return String(v);
}

function kv(table, pairs) {
  table.replaceChildren();
  for (const [k, v] of pairs) {
    const tr = el("tr");
    tr.append(el("th", k), el("td", v));
    table.append(tr);
  }
}

/** A source over a same-origin URL served with Range support (`distillgan view`): one range request per read. */
class HttpSource {
  constructor(url, size) {
    this.url = url;
    this.size = size;
    this.name = url;
    this.bytesRead = 0;
  }
  static async open(url) {
    const r = await fetch(url, { method: "HEAD", cache: "no-store" });
    if (!r.ok) throw new DistillganError("io-error", `${url}: HTTP ${r.status}`);
    return new HttpSource(url, Number(r.headers.get("Content-Length")));
  }
  async read(offset, n) {
    if (n === 0) return new Uint8Array(0);
    const r = await fetch(this.url, { headers: { Range: `bytes=${offset}-${offset + n - 1}` }, cache: "no-store" });
    const buf = new Uint8Array(await r.arrayBuffer());
    this.bytesRead += buf.length;
    if (r.status !== 206 || buf.length !== n) throw new DistillganError("file-changed", `${this.url}: asked ${n} bytes at ${offset}, got ${buf.length} (HTTP ${r.status})`);
    return buf;
  }
}

function setStatus(state, text) {
  const s = $("status");
  s.dataset.state = state;
  s.textContent = text;
}

async function show(input, name) {
  const t0 = performance.now();
  setStatus("loading", `Opening ${name}…`);
  $("error").hidden = true;
  $("model").hidden = true;
  current = null;
  try {
    current = await openArchive(input, { name });
  } catch (e) {
    if (!(e instanceof DistillganError)) throw e;
    $("error-code").textContent = e.code;
    $("error-message").textContent = e.message;
    $("error").hidden = false;
    setStatus("error", `${name}: not opened (error ${e.code}).`);
    document.body.dataset.openMs = String(performance.now() - t0);
    return;
  }
  renderSummary(current, name);
  $("model").hidden = false;
  window.distillganInspector.lastBytesRead = current.source.bytesRead ?? null;
  const ms = performance.now() - t0;
  document.body.dataset.openMs = String(ms);
  setStatus("ok", `${name}: ${fmtBytes(current.size)}, format version 1, opened in ${ms.toFixed(1)} ms (headers only: ${fmtBytes(current.source.bytesRead ?? 0)} read).`);
  // the rest is drawn after the metadata is on screen
  setTimeout(() => renderDetails(current), 0);
}

function renderSummary(a, name) {
  const meta = a.manifest.get("metadata");
  kv($("meta"), [["file", name], ["latent_dim", fmtValue(a.manifest.get("latent_dim"))], ...[...meta].map(([k, v]) => [k, Array.isArray(v) ? v.join(", ") || "—" : fmtValue(v)])]);
  const voc = a.manifest.get("vocoder_state");
  if (voc === null) kv($("vocoder"), [["vocoder", "none bundled"]]);
  else {
    const tm = voc instanceof Map ? voc.get("training_metadata") : undefined;
    const pick = (...keys) => { for (const k of keys) if (tm instanceof Map && tm.has(k)) return fmtValue(tm.get(k)); return "—"; };
    const hasCheckpoint = voc instanceof Map && voc.has("checkpoint") && voc.get("checkpoint") !== null;
    const vt = a.tables["vocoder.safetensors"];
    kv($("vocoder"), [
      ["type", voc instanceof Map && typeof voc.get("type") === "string" ? voc.get("type") : "—"],
      ["epochs", pick("epochs", "epoch")],
      ["loss", pick("final_loss", "loss")],
      ["training date", pick("training_date")],
      ["resumable checkpoint", hasCheckpoint ? "yes (optimizer and discriminator states included)" : "no (weights only)"],
      ["tensors", vt ? `${vt.tensors.length}, ${fmtBytes(vt.tensors.reduce((s, t) => s + t.nbytes, 0))}` : "—"],
    ]);
  }
  const tb = $("members").tBodies[0];
  tb.replaceChildren();
  for (const m of a.members) {
    const tr = el("tr");
    tr.append(el("td", m.name), el("td", fmtInt(m.dataOffset), "num"), el("td", fmtInt(m.size), "num"), el("td", m.crc32.toString(16).padStart(8, "0")));
    tb.append(tr);
  }
  $("verify-progress").value = 0;
  $("verify-result").textContent = "";
  $("verify-result").dataset.state = "idle";
}

function renderDetails(a) {
  rows = [];
  for (const [member, table] of Object.entries(a.tables)) {
    for (const t of table.tensors) rows.push({ member, name: t.name, dtype: t.dtype, shape: t.shape, elements: t.elements, nbytes: t.nbytes, offset: t.offset, t });
  }
  renderTotals();
  renderTable();
  renderChart();
  renderHistogramChoices();
  renderTree(a);
}

function renderTotals() {
  const by = new Map();
  for (const r of rows) {
    const x = by.get(r.dtype) ?? { n: 0, params: 0n, bytes: 0 };
    x.n++; x.params += r.elements; x.bytes += r.nbytes;
    by.set(r.dtype, x);
  }
  const tb = $("totals").tBodies[0];
  tb.replaceChildren();
  let all = { n: 0, params: 0n, bytes: 0 };
  for (const [dtype, x] of [...by].sort((p, q) => q[1].bytes - p[1].bytes)) {
    const tr = el("tr");
    tr.dataset.dtype = dtype;
    tr.append(el("td", dtype), el("td", String(x.n), "num"), el("td", fmtInt(x.params), "num"), el("td", fmtBytes(x.bytes), "num"));
    tb.append(tr);
    all = { n: all.n + x.n, params: all.params + x.params, bytes: all.bytes + x.bytes };
  }
  const tr = el("tr");
  tr.dataset.dtype = "all";
  tr.append(el("th", "total"), el("th", String(all.n), "num"), el("th", fmtInt(all.params), "num"), el("th", fmtBytes(all.bytes), "num"));
  tb.append(tr);
}

function renderTable() {
  const q = $("filter").value.trim().toLowerCase();
  const shown = rows.filter((r) => !q || r.name.toLowerCase().includes(q) || r.dtype.toLowerCase() === q || r.member.includes(q));
  const k = sort.key;
  const cmp = (a, b) => {
    const x = k === "shape" ? a.shape.length * 1e18 + a.elements : a[k], y = k === "shape" ? b.shape.length * 1e18 + b.elements : b[k];
    return x < y ? -1 : x > y ? 1 : 0;
  };
  shown.sort((a, b) => (sort.asc ? cmp(a, b) : -cmp(a, b)));
  const tb = $("tensors").tBodies[0];
  tb.replaceChildren();
  for (const r of shown.slice(0, 5000)) {
    const tr = el("tr");
    tr.append(el("td", r.member.replace(".safetensors", "")), el("td", r.name), el("td", r.dtype), el("td", `[${r.shape.join(", ")}]`),
      el("td", fmtInt(r.elements), "num"), el("td", fmtInt(r.nbytes), "num"));
    tr.addEventListener("click", () => { $("hist-tensor").value = `${r.member}\n${r.name}`; drawHistogram(); });
    tb.append(tr);
  }
  $("count").textContent = `${shown.length} of ${rows.length} tensors${shown.length > 5000 ? " (first 5000 shown)" : ""}`;
  for (const th of $("tensors").tHead.rows[0].cells) {
    th.classList.toggle("sorted", th.dataset.key === sort.key);
    th.classList.toggle("asc", th.dataset.key === sort.key && sort.asc);
  }
}

function moduleOf(name) {
  const slash = name.lastIndexOf("/");
  const key = name.slice(slash + 1);
  const dot = key.lastIndexOf(".");
  return dot > 0 ? name.slice(0, slash + 1 + dot) : name.slice(0, Math.max(slash, 0)) || name;
}

function renderChart() {
  const by = new Map();
  for (const r of rows) by.set(moduleOf(r.name), (by.get(moduleOf(r.name)) ?? 0) + r.nbytes);
  const top = [...by].sort((a, b) => b[1] - a[1]).slice(0, 24);
  const max = top.length ? top[0][1] || 1 : 1;
  const chart = $("chart");
  chart.replaceChildren();
  for (const [mod, bytes] of top) {
    const bar = el("div", undefined, "bar");
    const fill = el("div", undefined, "fill");
    fill.style.width = `${Math.max(1, Math.round((bytes / max) * 360))}px`;
    bar.append(el("span", mod, "label"), fill, el("span", fmtBytes(bytes)));
    bar.title = mod;
    chart.append(bar);
  }
  if (by.size > top.length) chart.append(el("p", `… and ${by.size - top.length} smaller modules`));
}

function renderHistogramChoices() {
  const sel = $("hist-tensor");
  sel.replaceChildren();
  for (const r of [...rows].sort((a, b) => b.nbytes - a.nbytes)) {
    if (r.nbytes === 0) continue;
    const o = el("option", `${r.name} (${r.dtype} [${r.shape.join(", ")}])`);
    o.value = `${r.member}\n${r.name}`;
    sel.append(o);
  }
  $("hist").replaceChildren();
  $("hist-info").textContent = sel.options.length ? "" : "no tensor holds data";
  if (sel.options.length) drawHistogram();
}

async function drawHistogram() {
  const [member, name] = $("hist-tensor").value.split("\n");
  const r = rows.find((x) => x.member === member && x.name === name);
  if (!r || !current) return;
  const a = current;
  const info = $("hist-info");
  info.textContent = "reading…";
  let values;
  if (r.nbytes <= MAX_HIST_BYTES) values = tensorValues(r.dtype, await a.tensorBytes(member, r.t));
  else { // evenly spaced samples of the tensor, each read with its own range
    const size = r.dtype === "C64" ? 8 : DTYPES[r.dtype];
    const n = r.nbytes / size, step = Math.floor(n / 65536);
    const parts = [];
    for (let i = 0; i < 65536; i++) parts.push(tensorValues(r.dtype, await a.source.read(r.offset + i * step * size, size))[0]);
    values = Float64Array.from(parts);
  }
  if (a !== current) return;
  let lo = Infinity, hi = -Infinity, nonFinite = 0;
  for (const v of values) { if (Number.isFinite(v)) { if (v < lo) lo = v; if (v > hi) hi = v; } else nonFinite++; }
  const bins = new Array(60).fill(0);
  if (lo === Infinity) { lo = 0; hi = 0; }
  const width = hi - lo || 1;
  for (const v of values) if (Number.isFinite(v)) bins[Math.min(59, Math.floor(((v - lo) / width) * 60))]++;
  const svg = $("hist");
  svg.replaceChildren();
  const peak = Math.max(1, ...bins);
  bins.forEach((c, i) => {
    const h = Math.round((c / peak) * 180);
    const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    rect.setAttribute("x", String(i * 10 + 20));
    rect.setAttribute("y", String(190 - h));
    rect.setAttribute("width", "9");
    rect.setAttribute("height", String(h));
    const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
    title.textContent = `${c} values in [${(lo + (i * width) / 60).toPrecision(4)}, ${(lo + ((i + 1) * width) / 60).toPrecision(4)})`;
    rect.append(title);
    svg.append(rect);
  });
  svg.dataset.values = String(values.length);
  info.textContent = `${values.length.toLocaleString("en-US")} values${r.nbytes > MAX_HIST_BYTES ? " (evenly spaced sample)" : ""}, min ${lo.toPrecision(4)}, max ${hi.toPrecision(4)}${nonFinite ? `, ${nonFinite} NaN/inf` : ""}`;
}

function describeRef(ref) {
  const table = current.tables[ref.member];
  const aliases = current.manifest.get("members").get(ref.member).get("aliases");
  const target = aliases.has(ref.name) ? aliases.get(ref.name) : ref.name;
  const t = table.tensors.find((x) => x.name === target);
  const grad = ref.requiresGrad ? ", requires_grad" : "";
  return `${ref.kind} ${t.dtype} [${t.shape.join(", ")}] ${fmtBytes(t.nbytes)}${grad}${target !== ref.name ? ` (tied to ${target})` : ""}`;
}

function treeNode(key, v, depth) {
  const isContainer = v instanceof Map || Array.isArray(v) || v instanceof Tuple;
  if (!isContainer) {
    const leaf = el("div", undefined, "leaf");
    leaf.append(el("span", `${key}: `));
    leaf.append(v instanceof Ref ? el("span", describeRef(v), "tensor") : el("span", fmtValue(v)));
    return leaf;
  }
  const d = el("details");
  if (depth < 1) d.open = true;
  const entries = v instanceof Map ? [...v] : (v instanceof Tuple ? v.items : v).map((x, i) => [i, x]);
  d.append(el("summary", `${key} ${v instanceof Map ? `{${entries.length}}` : v instanceof Tuple ? `(${entries.length})` : `[${entries.length}]`}`));
  // children are built when the node is opened: a state dict may hold a million entries
  const fill = () => {
    if (d.dataset.filled) return;
    d.dataset.filled = "1";
    for (const [k, x] of entries.slice(0, 2000)) d.append(treeNode(typeof k === "bigint" ? `${k}` : k, x, depth + 1));
    if (entries.length > 2000) d.append(el("div", `… ${entries.length - 2000} more`, "leaf"));
  };
  if (d.open) fill();
  d.addEventListener("toggle", fill);
  return d;
}

function renderTree(a) {
  const tree = $("tree");
  tree.replaceChildren();
  for (const slot of ["spectrogram_config", "training_config", "analysis", "extra", "vocoder_state", "state_dict"]) tree.append(treeNode(slot, a.values[slot], slot === "state_dict" ? 1 : 0));
}

async function verify() {
  if (!current) return;
  const a = current;
  const res = $("verify-result"), bar = $("verify-progress");
  $("verify").disabled = true;
  res.dataset.state = "running";
  res.textContent = "checking…";
  try {
    await a.verify({ onProgress: (done, total) => { bar.max = total || 1; bar.value = done; } });
    res.dataset.state = "ok";
    res.textContent = `intact: every CRC-32 matches (${fmtBytes(a.members.slice(1).reduce((s, m) => s + m.size, 0))} checked)`;
  } catch (e) {
    if (!(e instanceof DistillganError)) throw e;
    res.dataset.state = "error";
    res.textContent = `error ${e.code}: ${e.message}`;
  } finally {
    $("verify").disabled = false;
  }
}

$("file").addEventListener("change", (ev) => { const f = ev.target.files[0]; if (f) show(f, f.name); });
$("verify").addEventListener("click", verify);
$("filter").addEventListener("input", renderTable);
$("hist-tensor").addEventListener("change", drawHistogram);
for (const th of $("tensors").tHead.rows[0].cells) {
  th.addEventListener("click", () => { sort = { key: th.dataset.key, asc: sort.key === th.dataset.key ? !sort.asc : true }; renderTable(); });
}
document.addEventListener("dragover", (e) => { e.preventDefault(); document.body.classList.add("dragging"); });
document.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
document.addEventListener("drop", (e) => {
  e.preventDefault();
  document.body.classList.remove("dragging");
  const f = e.dataTransfer?.files?.[0];
  if (f) show(f, f.name);
});
const src = new URLSearchParams(location.search).get("src");
if (src && src.startsWith("/") && !src.startsWith("//")) HttpSource.open(src).then((s) => show(s, new URLSearchParams(location.search).get("name") || src));
window.distillganInspector = { show };
