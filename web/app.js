// fooocus-rs browser UI: builds itself from api/options, submits to api/generate, follows the
// ws event stream (JSON events + binary JPEG previews). Every URL is relative to the page, so
// the app works under a path prefix (e.g. a notebook proxy at /proxy/7865/).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { options: null, job: null, styles: new Set(), socket: null, previewUrl: null, retry: 500 };
const NUMBER_FIELDS = ["guidance_scale", "sharpness", "adm_positive", "adm_negative", "adm_end",
  "adaptive_cfg", "clip_skip", "refiner_switch", "image_number"];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

function fillSelect(select, values, chosen) {
  select.replaceChildren(...values.map((v) => {
    const [value, label] = Array.isArray(v) ? v : [v, v];
    const option = el("option", { value, text: label });
    if (value === chosen) option.selected = true;
    return option;
  }));
}

async function api(path, init) {
  const response = await fetch(path, init);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

function today() {
  const d = new Date();
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

// ---- options → controls ----
function buildControls(o) {
  const d = o.defaults;
  $("performance").replaceChildren(...o.performance.map((p) => el("label", { class: "inline" },
    Object.assign(el("input", { type: "radio", name: "performance", value: p }), { checked: p === d.performance }), " " + p)));
  fillSelect($("aspect_ratio"), o.aspect_ratios.map((a) => [a.value, a.label]), d.aspect_ratio);
  fillSelect($("output_format"), o.output_formats, d.output_format);
  fillSelect($("sampler"), o.samplers, d.sampler);
  fillSelect($("scheduler"), o.schedulers, d.scheduler);
  fillSelect($("base_model"), o.models, d.base_model);
  fillSelect($("refiner_model"), ["None", ...o.models], d.refiner_model || "None");
  $("negative_prompt").value = d.negative_prompt;
  for (const f of NUMBER_FIELDS) $(f).value = d[f];
  d.styles.forEach((s) => state.styles.add(s));
  renderStyles();
  const rows = [];
  for (let i = 0; i < 5; i++) {
    const chosen = d.loras[i];
    const select = el("select", { "aria-label": `LoRA ${i + 1}` });
    fillSelect(select, ["None", ...o.loras], chosen ? chosen.name : "None");
    const weight = el("input", { type: "number", min: "-2", max: "2", step: "0.01", value: chosen ? chosen.weight : 1, "aria-label": `LoRA ${i + 1} weight` });
    rows.push(el("div", { class: "lora" }, select, weight));
  }
  $("loras").replaceChildren(el("div", { class: "legend", text: "LoRAs" }), ...rows);
}

function renderStyles() {
  const query = $("style-search").value.trim().toLowerCase();
  const names = state.options ? state.options.styles : [];
  $("styles").replaceChildren(...names.filter((n) => !query || n.toLowerCase().includes(query)).map((name) => {
    const box = el("input", { type: "checkbox", value: name });
    box.checked = state.styles.has(name);
    box.addEventListener("change", () => { box.checked ? state.styles.add(name) : state.styles.delete(name); renderChips(); });
    return el("label", { class: "style" }, box, " " + name);
  }));
  renderChips();
}

function renderChips() {
  $("style-selected").replaceChildren(...[...state.styles].map((name) => {
    const chip = el("button", { type: "button", class: "chip", title: "remove", text: name + " ×" });
    chip.addEventListener("click", () => { state.styles.delete(name); renderStyles(); });
    return chip;
  }));
}

// ---- request ----
function collectRequest() {
  const r = { prompt: $("prompt").value };
  {
    const perf = document.querySelector("input[name=performance]:checked");
    if (perf) r.performance = perf.value;
    r.aspect_ratio = $("aspect_ratio").value;
    r.output_format = $("output_format").value;
    r.negative_prompt = $("negative_prompt").value;
    r.styles = [...state.styles];
    r.base_model = $("base_model").value;
    r.refiner_model = $("refiner_model").value;
    r.sampler = $("sampler").value;
    r.scheduler = $("scheduler").value;
    for (const f of NUMBER_FIELDS) { const v = Number($(f).value); if ($(f).value !== "" && Number.isFinite(v)) r[f] = v; }
    const steps = Number($("steps").value);
    if (steps > 0) r.steps = steps;
    if (!$("random_seed").checked && $("seed").value !== "") r.seed = Number($("seed").value);
    r.loras = [...document.querySelectorAll(".lora")].map((row) => ({ name: row.children[0].value, weight: Number(row.children[1].value) }))
      .filter((l) => l.name !== "None");
  }
  return r;
}

async function generate() {
  showError("");
  try {
    const answer = await api("api/generate", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(collectRequest()) });
    state.job = answer.job_id;
    setRunning(true);
    $("step-text").textContent = answer.position > 0 ? `Waiting: ${answer.position} job(s) ahead` : "Starting…";
    $("bar-fill").style.width = "0%";
  } catch (e) { showError(e.message); }
}

function setRunning(running) {
  $("stop").hidden = $("skip").hidden = !running;
  $("progress").hidden = !running;
  $("generate").textContent = running ? "Queue another" : "Generate";
}

// ---- images ----
function addImage(container, url, meta, first = true) {
  const img = el("img", { src: url, alt: meta && meta.prompt ? meta.prompt : "generated image", loading: "lazy" });
  const button = el("button", { type: "button", class: "thumb", title: "open" }, img);
  button.addEventListener("click", () => openViewer(url, meta));
  first ? container.prepend(button) : container.append(button);
  $("placeholder").hidden = true;
}

function openViewer(url, meta) {
  $("viewer-img").src = url;
  $("viewer-open").href = url;
  $("viewer-params").textContent = meta ? JSON.stringify(meta, null, 2) : "(no parameters stored)";
  $("copy-seed").onclick = () => meta && navigator.clipboard && navigator.clipboard.writeText(String(meta.seed));
  $("reuse").onclick = () => { if (meta) reuse(meta); $("viewer").close(); };
  $("viewer").showModal();
}

function reuse(m) {
  $("prompt").value = m.prompt || "";
  $("negative_prompt").value = m.negative_prompt || "";
  state.styles = new Set(m.styles || []);
  renderStyles();
  $("random_seed").checked = false; $("seed-row").hidden = false; $("seed").value = m.seed;
  for (const [field, key] of [["guidance_scale", "guidance_scale"], ["sharpness", "sharpness"]]) if (m[key] !== undefined) $(field).value = m[key];
}

async function loadHistory() {
  try {
    const h = await api(`api/history?date=${today()}`);
    const box = $("history");
    box.replaceChildren();
    for (const day of h.days) for (const image of day.images) addImage(box, image.url, image.metadata, false);
    $("log-link").href = `outputs/${today()}/log.html`;
  } catch (e) { /* an empty day */ }
}

// ---- events ----
function connect() {
  const url = new URL("ws", document.baseURI);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(url);
  socket.binaryType = "blob";
  state.socket = socket;
  socket.onopen = () => { $("conn").textContent = "connected"; $("conn").className = "conn ok"; state.retry = 500; };
  socket.onclose = () => {
    $("conn").textContent = "reconnecting…"; $("conn").className = "conn bad";
    setTimeout(connect, state.retry); state.retry = Math.min(state.retry * 2, 8000);
  };
  socket.onmessage = (message) => {
    if (typeof message.data !== "string") return showPreview(message.data);
    let event; try { event = JSON.parse(message.data); } catch { return; }
    onEvent(event);
  };
}

function showPreview(blob) {
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = URL.createObjectURL(blob);
  $("preview").src = state.previewUrl;
  $("preview").hidden = false;
  $("placeholder").hidden = true;
}

/** Keeps the newest finished image in the stage (until the next run's previews replace it). */
function showFinished(url) {
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = null;
  $("preview").src = url;
  $("preview").hidden = false;
  state.finished = true;
}

function onEvent(e) {
  if (e.type === "hello" || e.type === "lagged") return;
  if (e.job_id !== state.job) { if (e.type === "image") addImage($("history"), e.url, e.parameters); return; }
  switch (e.type) {
    case "started": $("step-text").textContent = "Starting…"; state.finished = false; break;
    case "stage": $("step-text").textContent = e.text; break;
    case "progress": $("bar-fill").style.width = `${e.percent}%`; $("step-text").textContent = e.text; break;
    case "image":
      addImage($("gallery"), e.url, e.parameters); addImage($("history"), e.url, e.parameters);
      showFinished(e.url); break;
    case "failed": showError(e.message); // fall through
    case "done": case "stopped":
      setRunning(false); state.job = null; $("preview").hidden = !state.finished; break;
  }
}

// ---- wiring ----
async function init() {
  $("prompt-form").addEventListener("submit", (ev) => { ev.preventDefault(); generate(); });
  $("prompt").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey || ev.altKey)) { ev.preventDefault(); generate(); }
  });
  $("stop").addEventListener("click", () => state.job !== null && fetch(`api/jobs/${state.job}/stop`, { method: "POST" }));
  $("skip").addEventListener("click", () => state.job !== null && fetch(`api/jobs/${state.job}/skip`, { method: "POST" }));
  $("advanced-toggle").addEventListener("change", (ev) => { $("advanced").hidden = !ev.target.checked; });
  $("random_seed").addEventListener("change", (ev) => { $("seed-row").hidden = ev.target.checked; });
  $("style-search").addEventListener("input", renderStyles);
  $("viewer-close").addEventListener("click", () => $("viewer").close());
  for (const tab of document.querySelectorAll(".tabs button")) {
    tab.addEventListener("click", () => {
      for (const t of document.querySelectorAll(".tabs button")) t.classList.toggle("active", t === tab);
      for (const p of document.querySelectorAll(".tab")) p.hidden = p.dataset.panel !== tab.dataset.tab;
    });
  }
  connect();
  try {
    state.options = await api("api/options");
    buildControls(state.options);
  } catch (e) { showError(`Cannot load the options: ${e.message}`); }
  refreshHealth();
  loadHistory();
}

/** One line per missing file: its download progress, its error, or where to put it. */
function describeMissing(m) {
  if (m.error) return `${m.name}: download failed (${m.error}); put it at ${m.dest}`;
  if (m.total > 0) {
    const pct = Math.floor((100 * m.downloaded) / m.total);
    return `${m.name}: downloading, ${pct}% of ${(m.total / 1e9).toFixed(2)} GB`;
  }
  return m.downloadable ? `${m.name}: download starting` : `${m.name}: put it at ${m.dest}`;
}

/** Shows the missing-models banner and keeps it current until everything is in place. */
async function refreshHealth() {
  try {
    const health = await api("api/health");
    const banner = $("banner");
    banner.hidden = health.ok;
    if (!health.ok) {
      banner.textContent = "Models missing: " + health.missing_models.map(describeMissing).join(" · ");
      setTimeout(refreshHealth, 3000);
    }
  } catch (e) { /* the options error says enough */ }
}

init();
