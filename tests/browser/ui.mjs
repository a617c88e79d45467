// Drives the fooocus-rs page in Debian's headless Chromium and checks what a user sees.
//   node ui.mjs run desktop|phone URL OUTDIR   a short run (512×512, 2 steps, one image) at
//       1400×1000 or 390×844: the prompt box does not move between idle, running and done; the
//       progress never covers the preview; the history shows small thumbnails; the viewer lists
//       the parameters with its buttons on screen; reusing and dropping an image restores its
//       settings; on the phone the settings sit right under Generate. Saves
//       OUTDIR/<size>-{idle,running,done,viewer}.png.
//       On the desktop an image dropped on the Input Image box is varied (Subtle) with previews,
//       sent back to the input and upscaled (Fast 2x): OUTDIR/desktop-{input,vary,upscale}.png;
//       on the phone the Input Image panel fits (OUTDIR/phone-input.png).
//   node ui.mjs empty URL OUTDIR               a server without models: one banner line per file
//       with its address, Generate off with the reason. Saves OUTDIR/{desktop,phone}-no-models.png.
// Both modes fail on any Content-Security-Policy violation; `run` also opens the day's log page.
// Prints one line per check passed; exits non-zero on the first failure.
import { chromium } from "playwright-core";

const [mode, size, url, outdir] = process.argv.length === 6
  ? process.argv.slice(2) : [process.argv[2], "desktop", process.argv[3], process.argv[4]];
if (!mode || !url || !outdir) {
  console.error("usage: node ui.mjs run desktop|phone URL OUTDIR | node ui.mjs empty URL OUTDIR");
  process.exit(2);
}
const SIZES = { desktop: { width: 1400, height: 1000 }, phone: { width: 390, height: 844 } };
const PROMPT = "a lighthouse on a cliff at dawn";
const fail = (why, detail) => { throw new Error(`${why}${detail === undefined ? "" : `: ${JSON.stringify(detail)}`}`); };
const shot = (page, name, fullPage = false) => page.screenshot({ path: `${outdir}/${name}.png`, fullPage });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});

// Chromium reports each Content-Security-Policy violation on the console.
const violations = [];
function watchPolicy(page) {
  page.on("console", (m) => { if (/Content Security Policy/i.test(m.text())) violations.push(m.text()); });
}

function checkPolicy() {
  if (violations.length > 0) fail("the page breaks its Content-Security-Policy", violations);
  console.log("no Content-Security-Policy violations");
}

// The day's log page, styled and scripted inline (allowed by hash).
async function checkLogPage(page) {
  const href = await page.evaluate(() => document.getElementById("log-link").href);
  const log = await browser.newPage({ viewport: SIZES.desktop });
  watchPolicy(log);
  const response = await log.goto(href);
  if (response.status() !== 200) fail("the log page is missing", response.status());
  const padding = await log.evaluate(() => getComputedStyle(document.body).paddingTop);
  if (padding !== "24px") fail("the log page lost its style", padding);
  await log.close();
  console.log("the log page shows with its style");
}

function rect(page, selector) {
  return page.evaluate((s) => {
    const r = document.querySelector(s).getBoundingClientRect();
    return { top: r.top + scrollY, left: r.left, right: r.right, bottom: r.bottom + scrollY, width: r.width, height: r.height };
  }, selector);
}

async function ready(page) {
  await page.goto(url);
  await page.waitForFunction(() => document.querySelectorAll("#base_model option").length > 0, null, { timeout: 30000 });
  const icon = await page.evaluate(async () => (await fetch(document.querySelector("link[rel=icon]").href)).status);
  if (icon !== 200) fail("no favicon", icon);
}

async function startRun(page) {
  await page.check("#advanced-toggle");
  if ((await page.locator("#preset option").count()) < 1) fail("the preset picker is empty");
  await page.selectOption("#aspect_ratio", "custom");
  await page.fill("#width", "512");
  await page.fill("#height", "512");
  await page.evaluate(() => { document.getElementById("steps").value = "2"; document.getElementById("image_number").value = "1"; });
  await page.fill("#prompt", PROMPT);
  await page.waitForFunction(() => !document.getElementById("generate").disabled, null, { timeout: 30000 });
  // A refused request: its message shows with code spans, not Markdown backticks.
  await page.fill("#width", "500");
  await page.click("#generate");
  await page.waitForSelector("#error:not([hidden])", { timeout: 10000 });
  const error = await page.evaluate(() => ({ text: document.getElementById("error").textContent, code: document.querySelectorAll("#error code").length }));
  if (error.text.includes("`") || error.code < 1) fail("the error shows raw backticks", error);
  console.log(`errors show without backticks: ${error.text}`);
  await page.evaluate(() => showError(""));
  await page.fill("#width", "512");
  // As a person sees the page before pressing Generate: from its top, nothing focused.
  await page.evaluate(() => { document.activeElement.blur(); window.scrollTo(0, 0); });
}

async function checkLayout(page, size) {
  const idle = await rect(page, "#prompt");
  await shot(page, `${size}-idle`, size === "phone");
  await page.focus("#prompt");
  await page.keyboard.press("Control+Enter");
  await page.waitForFunction(() => {
    const p = document.getElementById("preview");
    return !p.hidden && p.src.startsWith("blob:") && p.complete && p.naturalWidth > 0;
  }, null, { timeout: 900000, polling: 50 });
  const running = await rect(page, "#prompt");
  const preview = await page.evaluate(() => {
    // The part of the image box the picture covers (object-fit: contain).
    const img = document.getElementById("preview");
    const r = img.getBoundingClientRect();
    const scale = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);
    const w = img.naturalWidth * scale, h = img.naturalHeight * scale;
    return { top: r.top + (r.height - h) / 2, bottom: r.top + (r.height + h) / 2, left: r.left + (r.width - w) / 2, right: r.left + (r.width + w) / 2 };
  });
  const progress = await page.evaluate(() => document.getElementById("progress").getBoundingClientRect().toJSON());
  const overlap = progress.top < preview.bottom && progress.bottom > preview.top && progress.left < preview.right && progress.right > preview.left;
  if (overlap) fail("the progress text covers the preview", { progress, preview });
  console.log("preview shown, progress beside it");
  await page.evaluate(() => window.scrollTo(0, 0));
  await shot(page, `${size}-running`);
  await page.waitForSelector("#gallery .thumb", { timeout: 900000 });
  await page.waitForFunction(() => document.getElementById("stop").hidden, null, { timeout: 900000 });
  console.log("image in the gallery");
  const done = await rect(page, "#prompt");
  for (const [when, r] of [["running", running], ["done", done]]) {
    if (Math.abs(r.top - idle.top) > 1 || Math.abs(r.height - idle.height) > 1) fail(`the prompt box moved (idle → ${when})`, { idle, [when]: r });
  }
  console.log("the prompt box stays put");
  await shot(page, `${size}-done`, size === "phone");
}

/** Two jobs queued at once: the page lists both (one running, one queued), then neither. */
async function checkQueueList(page) {
  await page.click("#generate");
  await page.waitForFunction(() => !document.getElementById("stop").hidden, null, { timeout: 30000 });
  await page.click("#generate");
  await page.waitForFunction(() => document.querySelectorAll("#jobs li").length >= 2 && !document.getElementById("jobs").hidden, null, { timeout: 60000, polling: 50 });
  const listed = await page.evaluate(() => [...document.querySelectorAll("#jobs li")].map((li) => ({ state: li.className, text: li.textContent })));
  if (!listed.some((j) => j.state.startsWith("running")) || !listed.some((j) => j.state.startsWith("queued"))) fail("the job list lacks the running or the queued job", listed);
  await shot(page, "desktop-two-jobs");
  await page.waitForFunction(() => document.getElementById("jobs").hidden && document.getElementById("stop").hidden, null, { timeout: 900000 });
  console.log(`the page lists several jobs: ${listed.map((j) => j.text).join(" | ")}`);
}

async function checkThumbnails(page) {
  const thumbs = await page.evaluate(async () => {
    const imgs = [...document.querySelectorAll("#history .thumb img")];
    return Promise.all(imgs.map(async (img) => {
      if (!img.complete) await new Promise((r) => { img.onload = img.onerror = r; });
      const response = await fetch(img.src);
      return { src: img.getAttribute("src"), width: img.naturalWidth, height: img.naturalHeight,
        type: response.headers.get("content-type"), bytes: (await response.arrayBuffer()).byteLength };
    }));
  });
  if (!thumbs.length) fail("the history is empty");
  for (const t of thumbs) {
    if (!t.src.startsWith("thumbs/") || t.type !== "image/jpeg" || Math.max(t.width, t.height) > 256 || t.bytes > 64000) fail("a history image is not a small thumbnail", t);
  }
  console.log(`history thumbnails are small (${thumbs.map((t) => t.bytes).join(", ")} bytes)`);
}

async function checkViewer(page, size) {
  await page.click("#gallery .thumb");
  await page.waitForFunction(() => { const i = document.getElementById("viewer-img"); return i.complete && i.naturalWidth > 0; });
  const viewer = await page.evaluate(() => {
    const inView = (id) => { const r = document.getElementById(id).getBoundingClientRect(); return r.width > 0 && r.top >= 0 && r.left >= 0 && r.bottom <= innerHeight && r.right <= innerWidth; };
    const rows = Object.fromEntries([...document.querySelectorAll("#viewer-params dt")].map((dt) => [dt.textContent, dt.nextElementSibling.textContent]));
    return { buttons: ["reuse", "copy-seed", "viewer-open", "viewer-close"].map(inView), rows };
  });
  if (viewer.buttons.includes(false)) fail("a viewer button is off screen", viewer.buttons);
  for (const key of ["Prompt", "Seed", "Size", "Styles", "Base model", "LoRAs", "Sampler"]) if (!(key in viewer.rows)) fail(`the viewer lacks ${key}`, viewer.rows);
  if (viewer.rows.Prompt !== PROMPT || viewer.rows.Size !== "512 × 512") fail("the viewer shows wrong parameters", viewer.rows);
  console.log("the viewer lists the parameters, its buttons on screen");
  await shot(page, `${size}-viewer`);
  await page.evaluate(() => { document.getElementById("seed").value = ""; });
  await page.click("#reuse");
  const seed = await page.inputValue("#seed");
  if (seed !== viewer.rows.Seed || (await page.inputValue("#prompt")) !== PROMPT) fail("reuse did not restore the settings", { seed });
}

async function checkDrop(page) {
  await page.fill("#prompt", "something else");
  await page.evaluate(async () => {
    const url = document.querySelector("#gallery .thumb img").getAttribute("src").replace(/^thumbs\//, "outputs/");
    const blob = await (await fetch(url)).blob();
    const data = new DataTransfer();
    data.items.add(new File([blob], "ours.png", { type: "image/png" }));
    document.body.dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
  });
  await page.waitForFunction((p) => document.getElementById("prompt").value === p, PROMPT, { timeout: 10000 });
  console.log("a dropped image gives back its settings");
}

/** Drops the run's image onto the Input Image box, varies it (Subtle) with previews, sends the
 *  result back to the input and upscales it (Fast 2x). */
async function checkInputImage(page, size) {
  await page.check("#input-toggle");
  await page.evaluate(async () => {
    const url = document.querySelector("#gallery .thumb img").getAttribute("src").replace(/^thumbs\//, "outputs/");
    const blob = await (await fetch(url)).blob();
    const data = new DataTransfer();
    data.items.add(new File([blob], "earlier.png", { type: "image/png" }));
    document.getElementById("input-drop").dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
  });
  await page.waitForFunction(() => { const i = document.getElementById("input-preview"); return !i.hidden && i.complete && i.naturalWidth > 0; }, null, { timeout: 10000 });
  if ((await page.inputValue("#prompt")) === "") fail("dropping on the input box replaced the settings");
  const method = await page.evaluate(() => document.querySelector("input[name=uov]:checked").value);
  if (method !== "Vary (Subtle)") fail("a dropped input does not choose Vary (Subtle)", method);
  console.log("a dropped image becomes the input");
  await shot(page, `${size}-input`);
  const frames = [];
  await page.exposeFunction("previewFrame", (src) => frames.push(src));
  await page.evaluate(() => new MutationObserver(() => {
    const src = document.getElementById("preview").src;
    if (src.startsWith("blob:")) window.previewFrame(src);
  }).observe(document.getElementById("preview"), { attributes: true, attributeFilter: ["src"] }));
  await page.click("#generate");
  await page.waitForFunction(() => !document.getElementById("stop").hidden, null, { timeout: 30000 });
  await page.waitForFunction(() => document.getElementById("stop").hidden, null, { timeout: 900000 });
  const vary = await page.evaluate(() => ({ error: document.getElementById("error").textContent, thumbs: document.querySelectorAll("#gallery .thumb").length, status: document.getElementById("step-text").textContent }));
  if (vary.error || vary.thumbs !== 1 || !vary.status.startsWith("Done")) fail("Vary (Subtle) did not finish", vary);
  if (frames.length < 1) fail("no preview frames during Vary");
  console.log(`Vary (Subtle) ran with ${frames.length} preview frame(s): ${vary.status}`);
  await shot(page, `${size}-vary`);
  await page.click("#gallery .thumb");
  await page.waitForFunction(() => { const i = document.getElementById("viewer-img"); return i.complete && i.naturalWidth > 0; });
  const input = await page.evaluate(() => {
    const row = [...document.querySelectorAll("#viewer-params dt")].find((dt) => dt.textContent === "Input image");
    return row ? row.nextElementSibling.textContent : null;
  });
  if (!input || !input.startsWith("Vary (Subtle)")) fail("the viewer does not show the input image's method", input);
  const varied = await page.evaluate(() => { const i = document.getElementById("viewer-img"); return { w: i.naturalWidth, h: i.naturalHeight }; });
  await page.click("#send-input");
  await page.waitForFunction(() => { const i = document.getElementById("input-preview"); return !i.hidden && i.complete && i.naturalWidth > 0 && !i.src.startsWith("blob:"); }, null, { timeout: 10000 });
  await page.check('input[name=uov][value="Upscale (Fast 2x)"]');
  await page.click("#generate");
  await page.waitForFunction(() => !document.getElementById("stop").hidden, null, { timeout: 30000 });
  await page.waitForFunction(() => document.getElementById("stop").hidden, null, { timeout: 900000 });
  await page.waitForFunction(() => { const p = document.getElementById("preview"); return !p.hidden && p.complete && p.naturalWidth > 0; }, null, { timeout: 30000 });
  const upscaled = await page.evaluate(() => { const p = document.getElementById("preview"); return { w: p.naturalWidth, h: p.naturalHeight, error: document.getElementById("error").textContent }; });
  if (upscaled.error || upscaled.w !== 2 * varied.w || upscaled.h !== 2 * varied.h) fail("Upscale (Fast 2x) of the sent image is wrong", { varied, upscaled });
  console.log(`Upscale (Fast 2x) of the sent image: ${varied.w}×${varied.h} → ${upscaled.w}×${upscaled.h}`);
  await shot(page, `${size}-upscale`);
}

async function checkPhoneInput(page) {
  await page.check("#input-toggle");
  const fits = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth - innerWidth, panel: document.getElementById("input-panel").getBoundingClientRect().right - innerWidth }));
  if (fits.scroll > 0 || fits.panel > 0) fail("the Input Image panel does not fit the phone", fits);
  await shot(page, "phone-input", true);
  await page.uncheck("#input-toggle");
  console.log("the Input Image panel fits the phone");
}

async function checkPhone(page) {
  const phone = await page.evaluate(() => {
    const box = (s) => document.querySelector(s).getBoundingClientRect();
    return { scrollWidth: document.documentElement.scrollWidth, width: innerWidth, generate: box("#generate"),
      prompt: box("#prompt"), advanced: box("#advanced"), history: box(".history") };
  });
  if (phone.scrollWidth > phone.width) fail("the page scrolls sideways", phone);
  if (phone.generate.width < 44 || phone.generate.right > phone.width) fail("Generate is cut off", phone);
  if (phone.prompt.width < phone.width * 0.6) fail("the prompt box is too narrow", phone);
  if (phone.advanced.top < phone.generate.bottom || phone.advanced.top - phone.generate.bottom > 200) fail("the settings are not right under Generate", phone);
  if (phone.history.top < phone.advanced.bottom) fail("the history is not below the settings", phone);
  if (phone.advanced.right > phone.width) fail("the settings are wider than the screen", phone);
  console.log("phone layout fits");
}

/** The history lists two days, then the button brings the earlier one (the server holds images
 *  of 2024-01-01, -02 and -03 before the run). */
async function checkHistoryPages(page) {
  const days = () => page.evaluate(() => [...document.querySelectorAll("#history .day")].map((d) => d.dataset.date));
  await page.waitForSelector("#history .day", { timeout: 10000 });
  const first = await days();
  if (first.join() !== "2024-01-03,2024-01-02" || !(await page.isVisible("#history-more"))) fail("the first history page is wrong", first);
  await page.click("#history-more");
  await page.waitForSelector('.day[data-date="2024-01-01"]', { timeout: 10000 });
  if ((await days()).join() !== "2024-01-03,2024-01-02,2024-01-01" || (await page.isVisible("#history-more"))) fail("the history does not page back", await days());
  console.log("the history pages back through earlier days");
}

async function run(size) {
  const page = await browser.newPage({ viewport: SIZES[size] });
  page.on("console", (m) => console.log(`page: ${m.text()}`));
  page.on("pageerror", (e) => fail(`page error: ${e.message}`));
  watchPolicy(page);
  await ready(page);
  if (size === "desktop") await checkHistoryPages(page);
  await startRun(page);
  if (size === "phone") await checkPhone(page);
  await checkLayout(page, size);
  if (size === "desktop") await checkQueueList(page);
  await checkThumbnails(page);
  await checkViewer(page, size);
  await checkDrop(page);
  if (size === "desktop") await checkInputImage(page, size); else await checkPhoneInput(page);
  await checkLogPage(page);
  checkPolicy();
}

async function empty() {
  const page = await browser.newPage({ viewport: SIZES.desktop });
  watchPolicy(page);
  await ready(page);
  await page.waitForFunction(() => document.querySelectorAll("#missing li").length > 0 && !document.getElementById("generate-reason").hidden, null, { timeout: 30000 });
  const seen = await page.evaluate(() => ({
    disabled: document.getElementById("generate").disabled,
    reason: document.getElementById("generate-reason").textContent,
    lines: [...document.querySelectorAll("#missing li")].map((li) => ({ text: li.textContent, links: [...li.querySelectorAll("a")].map((a) => a.href), folders: li.querySelectorAll("code").length })),
  }));
  if (!seen.disabled || !/missing model/.test(seen.reason)) fail("Generate is not off with a reason", seen);
  if (seen.lines.some((l) => l.folders < 1)) fail("a missing file's folder is not shown", seen.lines);
  if (!seen.lines.some((l) => l.links.some((h) => /\/resolve\//.test(h)))) fail("no download address is shown", seen.lines);
  console.log(`without models: ${seen.lines.length} banner lines, Generate off: ${seen.reason}`);
  await shot(page, "desktop-no-models");
  await page.setViewportSize(SIZES.phone);
  const scroll = await page.evaluate(() => document.documentElement.scrollWidth - innerWidth);
  if (scroll > 0) fail("the phone page scrolls sideways without models", scroll);
  await shot(page, "phone-no-models", true);
  console.log("no-models page checked");
  checkPolicy();
}

try {
  if (mode === "run") await run(size);
  else if (mode === "empty") await empty();
  else fail(`unknown mode ${mode}`);
} finally {
  await browser.close();
}
