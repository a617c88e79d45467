// fooocus-rs browser UI: builds itself from api/options, submits to api/generate, follows the
// ws event stream (JSON events + binary JPEG previews). Every URL is relative to the page, so
// the app works under a path prefix (e.g. a notebook proxy at /proxy/7865/).
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  options: null, presets: [], job: null, styles: new Set(), previewUrl: null, previewJob: null, retry: 500,
  modelsReady: null, mine: new Set(), started: 0, finished: null, historyBefore: null, historyLoading: false,
  shown: new Set(),
};
const NUMBER_FIELDS = ["guidance_scale", "sharpness", "adm_positive", "adm_negative", "adm_end",
  "adaptive_cfg", "clip_skip", "refiner_switch", "image_number"];
const CUSTOM = "custom";
const UOV_METHODS = ["Disabled", "Vary (Subtle)", "Vary (Strong)", "Upscale (1.5x)", "Upscale (2x)", "Upscale (Fast 2x)"];

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

/** Chooses `value` in `select`, adding it (marked as missing) when the list lacks it. */
function choose(select, value) {
  if (![...select.options].some((o) => o.value === value)) select.append(el("option", { value, text: `${value} (missing)` }));
  select.value = value;
}

/** JSON whose seeds (u64, beyond a JS number's 53 bits) are kept exact, as strings. */
function parseJson(text) {
  return JSON.parse(text
    .replace(/("seed"\s*:\s*)(\d+)/g, '$1"$2"')
    .replace(/("seeds"\s*:\s*)(\[[\d,\s]*\])/g, (_, key, list) => key + list.replace(/\d+/g, '"$&"')));
}

async function api(path, init) {
  const response = await fetch(path, init);
  const body = await response.text().then(parseJson).catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

/** `text` with its `code spans` as <code> elements (never as HTML). */
function withCode(text) {
  return String(text).split("`").map((part, i) => (i % 2 ? el("code", { text: part }) : document.createTextNode(part)));
}

function showError(message) {
  $("error").replaceChildren(...withCode(message || ""));
  $("error").hidden = !message;
}

function localDate(d = new Date()) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

// ---- options → controls ----
function buildControls(o) {
  fillSelect($("aspect_ratio"), [...o.aspect_ratios.map((a) => [a.value, a.label]), [CUSTOM, "Custom size…"]]);
  fillSelect($("output_format"), o.output_formats);
  fillSelect($("sampler"), o.samplers);
  fillSelect($("scheduler"), o.schedulers);
  fillSelect($("base_model"), o.models);
  fillSelect($("refiner_model"), ["None", ...o.models]);
  const rows = [];
  for (let i = 0; i < 5; i++) {
    const select = el("select", { "aria-label": `LoRA ${i + 1}` });
    fillSelect(select, ["None", ...o.loras]);
    const weight = el("input", { type: "number", min: "-2", max: "2", step: "0.01", value: 1, "aria-label": `LoRA ${i + 1} weight` });
    rows.push(el("div", { class: "lora" }, select, weight));
  }
  $("loras").replaceChildren(el("div", { class: "legend", text: "LoRAs" }), ...rows);
  applyPreset(o.defaults);
}

function setPerformance(name) {
  const perf = state.options ? state.options.performance : [];
  $("performance").replaceChildren(...perf.map((p) => el("label", { class: "inline" },
    Object.assign(el("input", { type: "radio", name: "performance", value: p }), { checked: p === name }), " " + p)));
}

function setLoras(loras) {
  [...document.querySelectorAll(".lora")].forEach((row, i) => {
    const chosen = loras[i];
    if (chosen) choose(row.children[0], chosen.name); else row.children[0].value = "None";
    row.children[1].value = chosen ? chosen.weight : 1;
  });
}

function setSize(width, height) {
  const match = (state.options ? state.options.aspect_ratios : []).find((a) => a.width === width && a.height === height);
  $("aspect_ratio").value = match ? match.value : CUSTOM;
  $("width").value = width; $("height").value = height;
  $("custom-size").hidden = $("aspect_ratio").value !== CUSTOM;
}

/** Puts a preset's values (the `defaults` of api/options, or one of api/presets) in the controls. */
function applyPreset(d) {
  setPerformance(d.performance);
  if (d.aspect_ratio) {
    choose($("aspect_ratio"), d.aspect_ratio);
    $("custom-size").hidden = true;
  }
  $("output_format").value = d.output_format;
  $("sampler").value = d.sampler;
  $("scheduler").value = d.scheduler;
  choose($("base_model"), d.base_model);
  choose($("refiner_model"), d.refiner_model || "None");
  $("negative_prompt").value = d.negative_prompt;
  for (const f of NUMBER_FIELDS) if (d[f] !== undefined) $(f).value = d[f];
  state.styles = new Set(d.styles);
  renderStyles();
  setLoras(d.loras);
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

async function loadPresets() {
  try {
    const p = await api("api/presets");
    state.presets = p.presets;
    fillSelect($("preset"), p.presets.map((x) => x.name), p.current);
  } catch (e) { $("preset").disabled = true; }
}

// ---- request ----
function collectRequest() {
  const r = { prompt: $("prompt").value };
  const perf = document.querySelector("input[name=performance]:checked");
  if (perf) r.performance = perf.value;
  if ($("aspect_ratio").value === CUSTOM) {
    r.width = Number($("width").value); r.height = Number($("height").value);
  } else r.aspect_ratio = $("aspect_ratio").value;
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
  if (!$("random_seed").checked && /^\d+$/.test($("seed").value.trim())) r.seed = $("seed").value.trim();
  r.loras = [...document.querySelectorAll(".lora")].map((row) => ({ name: row.children[0].value, weight: Number(row.children[1].value) }))
    .filter((l) => l.name !== "None");
  const method = uovMethod();
  if ($("input-toggle").checked && method !== "Disabled") {
    r.uov_method = method;
    if (state.input) r.input_image = state.input.source;
  }
  return r;
}

// ---- the input image (Upscale or Variation) ----
function buildUov() {
  $("uov").replaceChildren(...UOV_METHODS.map((m) => el("label", { class: "inline" },
    Object.assign(el("input", { type: "radio", name: "uov", value: m }), { checked: m === "Disabled" }), " " + m)));
}

function uovMethod() {
  const chosen = document.querySelector("input[name=uov]:checked");
  return chosen ? chosen.value : "Disabled";
}

function setUovMethod(method) {
  for (const r of document.querySelectorAll("input[name=uov]")) r.checked = r.value === method;
}

function showInputPanel(open) {
  $("input-toggle").checked = open;
  $("input-panel").hidden = !open;
}

/** Makes `source` (a data URL, the address of one of our images, or `sha256:…`) the input,
 *  shown by `preview` (an address the page may load; none for a hash). */
function setInput(source, preview, name) {
  if (state.input && state.input.objectUrl) URL.revokeObjectURL(state.input.objectUrl);
  state.input = { source, name, objectUrl: preview && preview.startsWith("blob:") ? preview : null };
  $("input-preview").hidden = !preview;
  if (preview) $("input-preview").src = preview; else $("input-preview").removeAttribute("src");
  $("input-note").textContent = preview ? "" : `The input: ${name}.`;
  $("input-note").hidden = !!preview;
  $("input-hint").hidden = true;
  $("input-clear").hidden = false;
  if (uovMethod() === "Disabled") setUovMethod("Vary (Subtle)");
  showInputPanel(true);
}

function clearInput() {
  if (state.input && state.input.objectUrl) URL.revokeObjectURL(state.input.objectUrl);
  state.input = null;
  $("input-preview").hidden = true;
  $("input-preview").removeAttribute("src");
  $("input-note").hidden = true;
  $("input-hint").hidden = false;
  $("input-clear").hidden = true;
}

/** A file the user dropped, pasted or chose, read as a data URL for the request. */
async function inputFromFile(file) {
  if (!/^image\/(png|jpeg|webp)$/.test(file.type)) return showError(`${file.name} is not a PNG, JPEG or WebP image.`);
  const data = await new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  }).catch((e) => showError(`Cannot read ${file.name}: ${e.message}`));
  if (typeof data !== "string") return;
  showError("");
  setInput(data, URL.createObjectURL(file), file.name);
}

async function generate() {
  if ($("generate").disabled) return;
  showError("");
  try {
    const answer = await api("api/generate", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(collectRequest()).replace(/"seed":"(\d+)"/, '"seed":$1') });
    if (state.job === null) { $("gallery").replaceChildren(); state.started = Date.now(); }
    state.job = answer.job_id;
    state.mine.add(answer.job_id);
    renderJobs();
    setRunning(true);
    setStatus(answer.position > 0 ? `Waiting: ${answer.position} job(s) ahead` : "Starting…", 0);
  } catch (e) { showError(e.message); }
}

function setStatus(text, percent) {
  $("step-text").textContent = text;
  $("progress").classList.toggle("idle", percent === null);
  if (percent !== null) $("bar-fill").style.width = `${percent}%`;
}

function setRunning(running) {
  $("stop").hidden = $("skip").hidden = !running;
  $("generate").textContent = running ? "Queue another" : "Generate";
}

// ---- images ----
function thumbButton(image) {
  const meta = image.parameters || image.metadata || null;
  const img = el("img", { src: image.thumb || image.url, alt: meta && meta.prompt ? meta.prompt : "generated image", loading: "lazy" });
  const button = el("button", { type: "button", class: "thumb", title: meta && meta.prompt ? meta.prompt : "open" }, img);
  button.addEventListener("click", () => openViewer(image.url, meta));
  return button;
}

/** The history's group for `date`, made (in date order) when missing. */
function dayGroup(date, atTop) {
  let group = document.querySelector(`.day[data-date="${date}"]`);
  if (group) return group.querySelector(".grid");
  const label = date === localDate() ? "Today" : date === localDate(new Date(Date.now() - 864e5)) ? "Yesterday" : date;
  const title = el("h3", {}, label, el("span", { class: "count" }), el("a", { href: `outputs/${date}/log.html`, target: "_blank", rel: "noopener", text: "log" }));
  group = el("section", { class: "day", "data-date": date }, title, el("div", { class: "grid" }));
  atTop ? $("history").prepend(group) : $("history").append(group);
  $("history-empty").hidden = true;
  return group.querySelector(".grid");
}

function countDay(grid) {
  const n = grid.children.length;
  grid.parentElement.querySelector(".count").textContent = `${n} image${n === 1 ? "" : "s"}`;
}

function addToHistory(image, date, first) {
  // An image event and a history page may both bring the same image.
  if (state.shown.has(image.path)) return;
  state.shown.add(image.path);
  const grid = dayGroup(date, first);
  first ? grid.prepend(thumbButton(image)) : grid.append(thumbButton(image));
  countDay(grid);
}

async function loadHistory() {
  if (state.historyLoading) return;
  state.historyLoading = true;
  $("history-more").disabled = true;
  try {
    const query = state.historyBefore ? `before=${state.historyBefore}&days=3` : "days=2";
    const h = await api(`api/history?${query}`);
    for (const day of h.days) for (const image of day.images) addToHistory(image, day.date, false);
    if (h.days.length) state.historyBefore = h.days[h.days.length - 1].date;
    $("history-more").hidden = !h.more;
  } catch (e) { showError(`Cannot load the history: ${e.message}`); }
  state.historyLoading = false;
  $("history-more").disabled = false;
}

// ---- viewer ----
function fmt(n, digits = 2) { return Number.isFinite(n) ? String(Number(n.toFixed(digits))) : ""; }

/** The parameters of an image as [label, text] rows, for people. */
function paramRows(m) {
  const rows = [["Prompt", m.prompt || "(empty)"]];
  if (m.negative_prompt) rows.push(["Negative", m.negative_prompt]);
  rows.push(["Styles", m.styles && m.styles.length ? m.styles.join(", ") : "none"]);
  rows.push(["Seed", String(m.seed)], ["Size", `${m.width} × ${m.height}`]);
  rows.push(["Performance", `${m.performance}, ${m.steps} steps`]);
  rows.push(["Sampler", `${m.sampler} (${m.scheduler})`]);
  rows.push(["Guidance", `CFG ${fmt(m.guidance_scale)}, sharpness ${fmt(m.sharpness)}`]);
  rows.push(["Base model", m.base_model || "?"]);
  rows.push(["Refiner", m.refiner_model ? `${m.refiner_model}, from ${fmt(m.refiner_switch * 100, 1)}% of the steps` : "none"]);
  rows.push(["LoRAs", m.loras && m.loras.length ? m.loras.map((l) => `${l.name} × ${fmt(l.weight)}`).join("\n") : "none"]);
  rows.push(["ADM", `${fmt(m.adm_scaler_positive)} / ${fmt(m.adm_scaler_negative)} until ${fmt(m.adm_scaler_end)}; CFG mimicking ${fmt(m.adaptive_cfg)}; CLIP skip ${m.clip_skip}`]);
  rows.push(["Format", m.output_format || "png"]);
  if (m.input_image) rows.push(["Input image", `${m.input_image.method}, denoise ${fmt(m.input_image.denoise, 3)}`]);
  if (m.version) rows.push(["Made with", m.version]);
  return rows;
}

function openViewer(url, meta) {
  $("viewer-img").src = url;
  $("viewer-img").alt = meta && meta.prompt ? meta.prompt : "generated image";
  $("viewer-open").href = url;
  const rows = meta ? paramRows(meta) : [["Parameters", "This image carries none."]];
  $("viewer-params").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  $("copy-seed").disabled = $("reuse").disabled = !meta;
  $("copy-seed").onclick = () => meta && navigator.clipboard && navigator.clipboard.writeText(String(meta.seed));
  $("reuse").onclick = () => { if (meta) reuse(meta); $("viewer").close(); };
  $("send-input").onclick = () => { setInput(url, url, url.split("/").pop()); $("viewer").close(); };
  $("viewer").showModal();
}

/** Puts every setting of an image's metadata in the controls (the seed fixed). */
function reuse(m) {
  $("prompt").value = m.prompt || "";
  applyPreset({
    performance: m.performance, output_format: m.output_format || "png",
    sampler: m.sampler, scheduler: m.scheduler, base_model: m.base_model, refiner_model: m.refiner_model || "None",
    negative_prompt: m.negative_prompt || "", styles: m.styles || [], loras: m.loras || [],
    guidance_scale: m.guidance_scale, sharpness: m.sharpness, adm_positive: m.adm_scaler_positive,
    adm_negative: m.adm_scaler_negative, adm_end: m.adm_scaler_end, adaptive_cfg: m.adaptive_cfg,
    clip_skip: m.clip_skip, refiner_switch: m.refiner_switch,
  });
  setSize(m.width, m.height);
  $("random_seed").checked = false; $("seed-row").hidden = false; $("seed").value = m.seed;
  if (m.input_image) {
    setInput(`sha256:${m.input_image.sha256}`, null, `the input of that image (sha256 ${m.input_image.sha256.slice(0, 10)}…)`);
    setUovMethod(m.input_image.method);
  } else setUovMethod("Disabled");
}

// ---- dropping an image of ours ----
/** Our JSON from a PNG's `fooocus-rs` iTXt chunk, or null. */
async function pngSettings(buffer) {
  const bytes = new Uint8Array(buffer);
  const view = new DataView(buffer);
  const signature = [137, 80, 78, 71, 13, 10, 26, 10];
  if (bytes.length < 8 || signature.some((b, i) => bytes[i] !== b)) return null;
  const text = new TextDecoder();
  for (let at = 8; at + 8 <= bytes.length;) {
    const length = view.getUint32(at);
    const type = text.decode(bytes.subarray(at + 4, at + 8));
    const data = bytes.subarray(at + 8, Math.min(at + 8 + length, bytes.length));
    if (type === "IDAT" || type === "IEND") return null;
    if (type === "iTXt") {
      const zero = data.indexOf(0);
      if (text.decode(data.subarray(0, zero)) === "fooocus-rs") {
        const compressed = data[zero + 1] === 1;
        const language = data.indexOf(0, zero + 3);
        let body = data.subarray(data.indexOf(0, language + 1) + 1);
        if (compressed) body = new Uint8Array(await new Response(new Blob([body]).stream().pipeThrough(new DecompressionStream("deflate"))).arrayBuffer());
        return parseJson(text.decode(body));
      }
    }
    at += 12 + length;
  }
  return null;
}

async function onDrop(file) {
  try {
    const meta = await pngSettings(await file.arrayBuffer());
    if (!meta) return showError(`${file.name} carries no fooocus-rs settings (PNGs saved here with metadata do).`);
    reuse(meta);
    showError("");
    setStatus(`Settings of ${file.name} loaded.`, null);
  } catch (e) { showError(`Cannot read the settings of ${file.name}: ${e.message}`); }
}

function wireDrop() {
  let depth = 0;
  const hasFiles = (ev) => ev.dataTransfer && [...ev.dataTransfer.types].includes("Files");
  document.addEventListener("dragenter", (ev) => {
    if (!hasFiles(ev)) return;
    depth++;
    $("drop-text").textContent = $("input-panel").hidden ? "Drop the image to reuse its settings"
      : "Drop it on the input box to vary or upscale it, elsewhere to reuse its settings";
    $("drop").hidden = false;
  });
  document.addEventListener("dragleave", () => { depth = Math.max(0, depth - 1); if (!depth) $("drop").hidden = true; });
  document.addEventListener("dragover", (ev) => { if (hasFiles(ev)) ev.preventDefault(); });
  document.addEventListener("drop", (ev) => {
    if (!hasFiles(ev)) return;
    ev.preventDefault(); depth = 0; $("drop").hidden = true;
    $("input-drop").classList.remove("over");
    const file = ev.dataTransfer.files[0];
    if (!file) return;
    // Onto the input box: the image becomes the input; elsewhere: its settings are reused.
    if (ev.target.closest && ev.target.closest("#input-drop")) inputFromFile(file); else onDrop(file);
  });
  $("input-drop").addEventListener("dragover", () => $("input-drop").classList.add("over"));
  $("input-drop").addEventListener("dragleave", () => $("input-drop").classList.remove("over"));
  document.addEventListener("paste", (ev) => {
    const file = ev.clipboardData && [...ev.clipboardData.files].find((f) => f.type.startsWith("image/"));
    if (!file) return;
    ev.preventDefault();
    inputFromFile(file);
  });
}

// ---- events ----
function connect() {
  const url = new URL("ws", document.baseURI);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(url);
  socket.binaryType = "blob";
  socket.onopen = () => { $("conn").textContent = "connected"; $("conn").className = "conn ok"; state.retry = 500; };
  socket.onclose = () => {
    $("conn").textContent = "reconnecting…"; $("conn").className = "conn bad";
    setTimeout(connect, state.retry); state.retry = Math.min(state.retry * 2, 8000);
  };
  socket.onmessage = (message) => {
    if (typeof message.data !== "string") return showPreview(message.data);
    let event; try { event = parseJson(message.data); } catch { return; }
    onEvent(event);
  };
}

function showImage(src) {
  $("preview").src = src;
  $("preview").hidden = false;
  $("placeholder").hidden = true;
}

function showPreview(blob) {
  // The `preview` event before each frame names its job: only this page's job is shown.
  if (state.job === null || state.previewJob !== state.job) return;
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = URL.createObjectURL(blob);
  state.finished = null;
  showImage(state.previewUrl);
}

/** Keeps the newest finished image in the stage (until the next run's previews replace it). */
function showFinished(image) {
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = null;
  state.finished = image;
  showImage(image.url);
}

function onImage(e) {
  const image = { url: e.url, thumb: e.thumb, path: e.path, parameters: e.parameters };
  addToHistory(image, e.path.split("/")[0], true);
  if (e.job_id !== state.job) return;
  $("gallery").prepend(thumbButton(image));
  showFinished(image);
}

function onEnd(e) {
  if (e.job_id !== state.job) return;
  const seconds = Math.round((Date.now() - state.started) / 1000);
  const n = e.images ? e.images.length : 0;
  const words = { done: "Done", stopped: "Stopped", failed: "Failed" }[e.type];
  setStatus(`${words}: ${n} image${n === 1 ? "" : "s"} in ${seconds} s.`, null);
  if (e.type === "failed") showError(e.message);
  setRunning(false);
  state.job = null;
  if (!state.finished) { $("preview").hidden = true; $("placeholder").hidden = false; }
}

// ---- the queue: every running and queued job, shown while there are several ----
const jobs = new Map();

function workerName(worker) {
  if (worker === null || worker === undefined) return "";
  return /^\d+$/.test(String(worker)) ? `worker ${Number(worker) + 1}` : String(worker);
}

function renderJobs() {
  const items = [...jobs.entries()].sort((a, b) => a[0] - b[0]).map(([id, job]) => {
    const text = job.state === "running" ? (job.text || "Starting…") : "Queued";
    return el("li", { class: `${job.state}${state.mine.has(id) ? " mine" : ""}`, "data-job": String(id) },
      el("span", { class: "job-id", text: `#${id}` }),
      el("span", { class: "job-text", text }),
      el("span", { class: "job-worker", text: job.state === "running" ? workerName(job.worker) : "" }));
  });
  $("jobs").replaceChildren(...items);
  $("jobs").hidden = jobs.size < 2;
}

/** Keeps the list of running and queued jobs current from one event. */
function trackJob(e) {
  const job = jobs.get(e.job_id);
  switch (e.type) {
    case "hello":
      jobs.clear();
      for (const s of e.queue) jobs.set(s.job_id, { state: s.state, text: s.progress ? s.progress.text : "", worker: s.worker });
      break;
    case "queued": jobs.set(e.job_id, { state: "queued", text: "", worker: null }); break;
    case "started": jobs.set(e.job_id, { ...(job || {}), state: "running", worker: e.worker }); break;
    case "stage": case "progress":
      if (!job) return;
      job.text = e.text;
      if (e.type === "stage" && e.text.startsWith("Running on ")) job.worker = e.text.slice(11);
      break;
    case "done": case "stopped": case "failed": jobs.delete(e.job_id); state.mine.delete(e.job_id); break;
    default: return;
  }
  renderJobs();
}

function onEvent(e) {
  trackJob(e);
  if (e.type === "image") return onImage(e);
  if (e.type === "preview") { state.previewJob = e.job_id; return; }
  if (e.job_id === undefined || e.job_id !== state.job) return;
  switch (e.type) {
    case "started": setStatus("Starting…", 0); break;
    case "stage": setStatus(e.text, Number.parseFloat($("bar-fill").style.width) || 0); break;
    case "progress": setStatus(e.text, e.percent); break;
    case "done": case "stopped": case "failed": onEnd(e); break;
  }
}

// ---- models missing ----
function folderOf(path) {
  const cut = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  return cut > 0 ? path.slice(0, cut + 1) : path;
}

function gigabytes(bytes) { return `${(bytes / 1e9).toFixed(bytes < 1e8 ? 3 : 1)} GB`; }

/** One banner line: what is missing, where it goes, where to get it, how its download goes. */
function missingItem(m) {
  const what = el("span", { class: "what", text: m.what.charAt(0).toUpperCase() + m.what.slice(1) });
  const where = m.url
    ? [" Download ", el("a", { href: m.url, target: "_blank", rel: "noopener", text: m.url }), " into ", el("code", { text: folderOf(m.dest) })]
    : [" Put ", el("code", { text: m.name }), " into ", el("code", { text: folderOf(m.dest) })];
  const item = el("li", {}, what, el("span", {}, ...where));
  if (m.error) {
    const offline = /cannot reach/i.test(m.error);
    item.append(el("span", { class: "muted", title: m.error, text: offline ? "(automatic download failed: no network)" : "(automatic download failed)" }));
  } else if (m.total > 0) {
    const pct = Math.floor((100 * m.downloaded) / m.total);
    const bar = el("div", { class: "dl-bar", role: "progressbar", "aria-valuenow": pct }, el("div", { style: `width:${pct}%` }));
    item.append(el("span", { text: `downloading: ${pct}% of ${gigabytes(m.total)}` }), bar);
  } else if (m.downloadable) item.append(el("span", { class: "muted", text: "(download starting…)" }));
  return item;
}

function setModelsReady(ready, reason) {
  if (state.job === null && state.modelsReady !== ready) setStatus(ready ? "Ready." : "Waiting for the models.", null);
  state.modelsReady = ready;
  $("generate").disabled = !ready;
  $("generate").title = ready ? "Ctrl/Cmd+Enter" : reason;
  $("generate-reason").textContent = reason;
  $("generate-reason").hidden = ready;
}

/** Shows the missing-models banner and keeps it current until everything is in place. */
async function refreshHealth() {
  try {
    const health = await api("api/health");
    $("banner").hidden = health.ok;
    $("missing").replaceChildren(...health.missing_models.map(missingItem));
    const n = health.missing_models.length;
    setModelsReady(health.ok, health.ok ? "" : `Generate is off until the ${n} missing model file${n === 1 ? " is" : "s are"} in place (see the top of the page).`);
    if (health.ok && state.wasMissing) await refreshModelLists();
    state.wasMissing = !health.ok;
    if (!health.ok) setTimeout(refreshHealth, 3000);
  } catch (e) { setTimeout(refreshHealth, 5000); }
}

/** The model and LoRA lists again (the models have arrived), keeping every other setting. */
async function refreshModelLists() {
  try {
    state.options = await api("api/options");
  } catch (e) { return showError(`Cannot load the options: ${e.message}`); }
  const keep = (select, values) => { const was = select.value; fillSelect(select, values); if (was) choose(select, was); };
  keep($("base_model"), state.options.models);
  keep($("refiner_model"), ["None", ...state.options.models]);
  for (const row of document.querySelectorAll(".lora")) keep(row.children[0], ["None", ...state.options.loras]);
}

async function reloadOptions() {
  try {
    state.options = await api("api/options");
    buildControls(state.options);
    return true;
  } catch (e) {
    showError(`Cannot load the options: ${e.message}`);
    setModelsReady(false, "Generate is off: the page could not load its options from the server.");
    return false;
  }
}

// ---- wiring ----
function wire() {
  $("prompt-form").addEventListener("submit", (ev) => { ev.preventDefault(); generate(); });
  $("prompt").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey || ev.altKey)) { ev.preventDefault(); generate(); }
  });
  $("stop").addEventListener("click", () => state.job !== null && fetch(`api/jobs/${state.job}/stop`, { method: "POST" }));
  $("skip").addEventListener("click", () => state.job !== null && fetch(`api/jobs/${state.job}/skip`, { method: "POST" }));
  $("advanced-toggle").addEventListener("change", (ev) => { $("advanced").hidden = !ev.target.checked; });
  $("input-toggle").addEventListener("change", (ev) => { $("input-panel").hidden = !ev.target.checked; });
  $("input-file").addEventListener("change", (ev) => { if (ev.target.files[0]) inputFromFile(ev.target.files[0]); ev.target.value = ""; });
  $("input-clear").addEventListener("click", clearInput);
  buildUov();
  $("random_seed").addEventListener("change", (ev) => { $("seed-row").hidden = ev.target.checked; });
  $("aspect_ratio").addEventListener("change", () => { $("custom-size").hidden = $("aspect_ratio").value !== CUSTOM; });
  $("preset").addEventListener("change", () => {
    const chosen = state.presets.find((p) => p.name === $("preset").value);
    if (chosen) applyPreset(chosen.values);
  });
  $("style-search").addEventListener("input", renderStyles);
  $("viewer-close").addEventListener("click", () => $("viewer").close());
  $("preview").addEventListener("click", () => state.finished && openViewer(state.finished.url, state.finished.parameters));
  $("history-more").addEventListener("click", loadHistory);
  for (const tab of document.querySelectorAll(".tabs button")) {
    tab.addEventListener("click", () => {
      for (const t of document.querySelectorAll(".tabs button")) t.classList.toggle("active", t === tab);
      for (const p of document.querySelectorAll(".tab")) p.hidden = p.dataset.panel !== tab.dataset.tab;
    });
  }
  wireDrop();
}

async function init() {
  wire();
  $("generate").disabled = true; // until api/health says the models are there
  $("log-link").href = `outputs/${localDate()}/log.html`;
  setStatus("Ready.", null);
  connect();
  await reloadOptions();
  await loadPresets();
  refreshHealth();
  loadHistory();
}

init();
