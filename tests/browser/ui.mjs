// Drives the fooocus-rs page in Debian's headless Chromium: waits for the page to build itself,
// forces a short run (2 steps), types a prompt, presses Ctrl+Enter, waits for the live preview
// to change and a finished image to appear in the gallery, and saves a screenshot; then checks
// the page on a phone-sized screen (one column, nothing wider than the screen, Generate and the
// advanced panel reachable, the image viewer inside the screen) and saves SCREENSHOT-phone.png.
// Usage: node ui.mjs URL SCREENSHOT.png
import { chromium } from "playwright-core";

const [url, screenshot] = process.argv.slice(2);
if (!url || !screenshot) {
  console.error("usage: node ui.mjs URL SCREENSHOT.png");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("console", (m) => console.log(`page: ${m.text()}`));
  await page.goto(url);
  // The page builds its controls from api/options.
  await page.waitForFunction(() => document.querySelectorAll("#base_model option").length > 0, null, { timeout: 30000 });
  await page.evaluate(() => {
    document.getElementById("steps").value = "2";
    document.getElementById("image_number").value = "1";
  });
  await page.fill("#prompt", "a lighthouse on a cliff at dawn");
  await page.focus("#prompt");
  await page.keyboard.press("Control+Enter");
  // The live preview gets a frame (its src changes from nothing to a blob).
  await page.waitForFunction(() => {
    const p = document.getElementById("preview");
    return p && !p.hidden && p.src.startsWith("blob:");
  }, null, { timeout: 900000, polling: 50 });
  console.log("preview shown");
  await page.waitForSelector("#gallery .thumb", { timeout: 900000 });
  console.log("image in the gallery");
  await page.screenshot({ path: screenshot, fullPage: true });

  await page.setViewportSize({ width: 390, height: 844 });
  await page.check("#advanced-toggle");
  const phone = await page.evaluate(() => {
    const box = (id) => document.getElementById(id).getBoundingClientRect();
    const work = document.querySelector(".work").getBoundingClientRect();
    return {
      scrollWidth: document.documentElement.scrollWidth,
      width: window.innerWidth,
      generate: box("generate"),
      prompt: box("prompt"),
      advancedTop: box("advanced").top,
      advancedRight: box("advanced").right,
      workBottom: work.bottom,
      seedShown: document.getElementById("seed-row").getClientRects().length > 0,
      randomSeed: document.getElementById("random_seed").checked,
    };
  });
  const fail = (why) => { throw new Error(`phone layout: ${why}: ${JSON.stringify(phone)}`); };
  if (phone.scrollWidth > phone.width) fail("the page scrolls sideways");
  if (phone.generate.width < 44 || phone.generate.right > phone.width) fail("Generate is cut off");
  if (phone.prompt.width < phone.width * 0.6) fail("the prompt box is too narrow");
  if (phone.advancedTop < phone.workBottom) fail("the advanced panel is not below the work area");
  if (phone.advancedRight > phone.width) fail("the advanced panel is wider than the screen");
  if (!phone.randomSeed || phone.seedShown) fail("the seed field shows while the seed is random");
  await page.uncheck("#random_seed");
  if (!(await page.isVisible("#seed"))) fail("the seed field stays hidden for a fixed seed");
  await page.check("#random_seed");
  await page.click("#gallery .thumb");
  const viewer = await page.evaluate(() => document.getElementById("viewer").getBoundingClientRect());
  if (viewer.width === 0 || viewer.right > phone.width || viewer.left < 0) {
    throw new Error(`phone layout: the image viewer leaves the screen: ${JSON.stringify(viewer)}`);
  }
  await page.screenshot({ path: screenshot.replace(/\.png$/, "-phone.png"), fullPage: true });
  console.log("phone layout fits");
} finally {
  await browser.close();
}
