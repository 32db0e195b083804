// Drives the RunForge extension inside code-server with Debian's chromium (playwright-core):
// Train (Standard) from the Command Palette, watch the run's progress notification, press
// its Cancel button, see the daemon's countdown and the final state. Prints one JSON line:
// {"texts": [...notification texts in the order first seen], "screenshots": [...]}.
// Usage: node drive.js URL OUT_DIR

const { chromium } = require("playwright-core");

const [url, outDir] = process.argv.slice(2);
const seen = [];

async function notificationTexts(page) {
  return page.$$eval(".notifications-toasts .notification-toast", (toasts) =>
    toasts.map((t) => t.innerText.replace(/\s+/g, " ").trim()),
  );
}

async function waitForText(page, pattern, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    for (const text of await notificationTexts(page)) {
      if (!seen.includes(text)) {
        seen.push(text);
      }
      if (pattern.test(text)) {
        return text;
      }
    }
    await page.waitForTimeout(100);
  }
  throw new Error(`no notification matching ${pattern} within ${timeoutMs} ms; seen: ${JSON.stringify(seen)}`);
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  const screenshots = [];
  const shot = async (page, name) => {
    const file = `${outDir}/${name}.png`;
    await page.screenshot({ path: file });
    screenshots.push(file);
  };
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    await page.goto(url);
    await page.waitForSelector(".monaco-workbench", { timeout: 180000 });
    // The extension is ready once its status bar item says so.
    await page.waitForSelector('.statusbar-item:has-text("RunForge")', { timeout: 180000 });
    await page.keyboard.press("F1");
    await page.waitForSelector(".quick-input-widget input", { timeout: 60000 });
    await page.keyboard.type("RunForge: Train (Standard)");
    await page.waitForSelector('.quick-input-list .monaco-list-row:has-text("Train (Standard)")', {
      timeout: 60000,
    });
    await page.keyboard.press("Enter");
    await waitForText(page, /RunForge \d{8}-\d{6}-[0-9a-f]{8}.*training (\d+\/\d+|iteration \d+ \(max_iter \d+\))/, 180000);
    await shot(page, "1-training");
    const toast = page.locator(".notifications-toasts .notification-toast", { hasText: /training (\d+\/|iteration \d+)/ });
    await toast.hover();
    await toast.getByRole("button", { name: "Cancel" }).click();
    await waitForText(page, /Cancelling… \d+ s/, 60000);
    await shot(page, "2-cancelling");
    await waitForText(page, /RunForge \d{8}-\d{6}-[0-9a-f]{8}: cancelled/, 120000);
    await shot(page, "3-cancelled");
    console.log(JSON.stringify({ texts: seen, screenshots }));
  } finally {
    await browser.close();
  }
})().catch((err) => {
  console.error(String(err && err.stack ? err.stack : err));
  console.log(JSON.stringify({ texts: seen, error: String(err) }));
  process.exit(1);
});
