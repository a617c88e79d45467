// Drives the fooocus-rs page in Debian's headless Chromium: waits for the page to build itself,
// forces a short run (2 steps), types a prompt, presses Ctrl+Enter, waits for the live preview
// to change and a finished image to appear in the gallery, and saves a screenshot.
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
} finally {
  await browser.close();
}
