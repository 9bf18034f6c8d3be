// Browser end-to-end test of the Portcullis dashboard: Debian's headless Chromium driven by playwright-core.
// Run by tests/dashboard.rs, which starts `portcullis serve`, creates zone and hostname `localhost`, and passes:
//   PORTCULLIS_ADMIN_URL   http://127.0.0.1:PORT of the admin listener
//   PORTCULLIS_EDGE_PORT   the edge's TLS port
//   PORTCULLIS_TOKEN       an API token with write scope
//   PORTCULLIS_DATA_DIR    the server's data directory (for edge-dev-ca.pem)
//   PORTCULLIS_SCREENSHOTS where to save one PNG per page
//   PORTCULLIS_CHROMIUM    the browser executable (default /usr/bin/chromium)
// Exits 0 when every step passed.

import assert from "node:assert/strict";
import fs from "node:fs";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const base = env("PORTCULLIS_ADMIN_URL");
const edgePort = Number(env("PORTCULLIS_EDGE_PORT"));
const token = env("PORTCULLIS_TOKEN");
const dataDir = env("PORTCULLIS_DATA_DIR");
const shots = env("PORTCULLIS_SCREENSHOTS", path.resolve("../target/dashboard-screenshots"));
const executablePath = env("PORTCULLIS_CHROMIUM", "/usr/bin/chromium");
fs.mkdirSync(shots, { recursive: true });

const step = (text) => console.log(`[${new Date().toISOString()}] ${text}`);

// A request through the edge without a client certificate, trusting the development edge CA.
function edgeGet(pathname) {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: "127.0.0.1",
        port: edgePort,
        servername: "localhost",
        path: pathname,
        method: "GET",
        headers: { host: "localhost" },
        ca: fs.readFileSync(path.join(dataDir, "edge-dev-ca.pem")),
        timeout: 10_000,
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk) => (body += chunk));
        res.on("end", () => resolve({ status: res.statusCode, body }));
      },
    );
    req.on("timeout", () => req.destroy(new Error("edge request timed out")));
    req.on("error", reject);
    req.end();
  });
}

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "portcullis-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
  ],
  acceptDownloads: true,
  viewport: { width: 1280, height: 900 },
});
context.setDefaultTimeout(15_000);
const page = context.pages()[0] ?? (await context.newPage());
const problems = [];
page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
page.on("console", (message) => {
  // A GET of a ruleset that does not exist yet answers 404 on purpose; everything else is a problem.
  if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) {
    problems.push(`console error: ${message.text()}`);
  }
});

const shot = async (name) => {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
  step(`screenshot ${name}.png`);
};
const ready = async () => {
  await page.locator('body[data-ready="true"]').waitFor();
};

let exitCode = 0;
try {
  step("sign in");
  await page.goto(`${base}/dashboard`);
  assert.match(page.url(), /\/dashboard\/login$/);
  await page.getByLabel("API token").fill("pct_not-a-token");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#login-error").waitFor();
  await shot("01-login-error");
  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(`${base}/dashboard`);
  await ready();
  const cookies = await context.cookies(base);
  const session = cookies.find((c) => c.name === "portcullis_session");
  assert.ok(session, "the session cookie is set");
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, "Strict");
  assert.equal(await page.locator("#zone-picker option:checked").textContent(), "localhost");

  step("enable mTLS on localhost (Hosts → Edit)");
  await page.getByRole("button", { name: "Edit" }).click();
  await page.getByLabel("Add a hostname").fill("localhost");
  await page.getByRole("button", { name: "Add", exact: true }).click();
  await page.locator("#hosts-edit-list li", { hasText: "localhost" }).waitFor();
  await page.getByRole("button", { name: "Save" }).click();
  await page.locator("#hosts-list li", { hasText: "localhost" }).waitFor();
  await page.locator("#hosts-form").waitFor({ state: "hidden" });

  step("create a certificate with a generated key");
  await page.getByRole("button", { name: "Add Certificate" }).click();
  await page.getByLabel("Private key type").selectOption("p256");
  await page.getByLabel("Common name").fill("device-1");
  await page.getByLabel("Organization (O)").fill("Example Corp");
  await page.getByLabel("Organizational unit (OU)").fill("Devices");
  await page.getByLabel("Certificate validity").selectOption("365");
  await page.getByRole("button", { name: "Create" }).click();
  await page.locator("#cert-result").waitFor();
  const certificate = await page.locator("#out-cert").inputValue();
  const privateKey = await page.locator("#out-key").inputValue();
  assert.match(certificate, /^-----BEGIN CERTIFICATE-----/);
  assert.match(privateKey, /-----BEGIN PRIVATE KEY-----/);
  await shot("02-certificate-created");

  const [certDownload] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: "Download certificate (PEM)" }).click(),
  ]);
  assert.equal(certDownload.suggestedFilename(), "device-1.pem");
  const downloaded = fs.readFileSync(await certDownload.path(), "utf8");
  assert.equal(downloaded, certificate, "the download is the certificate shown");
  const [keyDownload] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: "Download private key (PEM)" }).click(),
  ]);
  assert.equal(fs.readFileSync(await keyDownload.path(), "utf8"), privateKey);
  await page.getByRole("button", { name: "Done" }).click();
  const row = page.locator("#cert-table tbody tr", { hasText: "device-1" });
  await row.locator(".badge", { hasText: "active" }).waitFor();
  await row.getByText("Example Corp / Devices").waitFor();
  await page.getByLabel("Search").fill("no-such-device");
  await page.locator("#cert-table td.empty", { hasText: "No certificate matches" }).waitFor();
  await page.getByLabel("Search").fill("Devices");
  await row.waitFor();
  await page.getByLabel("Search").fill("");
  await shot("03-client-certificates");

  step("download the CA certificate, upload it as a bring-your-own CA, delete it");
  const [caDownload] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: "Download CA certificate" }).click(),
  ]);
  const caPem = fs.readFileSync(await caDownload.path(), "utf8");
  assert.match(caPem, /^-----BEGIN CERTIFICATE-----/);
  await page.getByRole("tab", { name: "Bring your own CA" }).click();
  await page.getByLabel("Name", { exact: true }).fill("corp-devices");
  await page.getByLabel("CA certificate (PEM)").fill(caPem);
  await page.getByRole("button", { name: "Upload" }).click();
  const byoca = page.locator("#byoca-table tbody tr", { hasText: "corp-devices" });
  await byoca.waitFor();
  await shot("04-bring-your-own-ca");
  await byoca.getByRole("button", { name: "Delete" }).click();
  await byoca.getByRole("button", { name: "Confirm delete" }).click();
  await byoca.waitFor({ state: "detached" });
  await page.getByRole("tab", { name: "Managed CA" }).click();

  step("create the mTLS rule for /api");
  await page.getByRole("link", { name: "Create a mTLS rule" }).first().click();
  await page.waitForURL(`${base}/dashboard/mtls-rule`);
  await ready();
  const expression = page.getByLabel("Expression");
  await expression.fill('(http.hots eq "x")');
  await page.locator("#rule-diagnostic.bad", { hasText: "^" }).waitFor();
  assert.match(await page.locator("#rule-diagnostic").textContent(), /unknown field "http.hots"/);
  await shot("05-mtls-rule-invalid");
  await page.getByLabel("URI paths (one per line)").fill("/api");
  await page.locator("#rule-diagnostic.ok").waitFor();
  assert.equal(
    await expression.inputValue(),
    '(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {"/api"}',
  );
  await page.getByLabel("Send a custom response").check();
  await page.getByLabel("Status code (400–499)").fill("403");
  await page.getByLabel("Content type").selectOption("text/plain");
  await page.getByLabel("Body (at most 2 KiB)").fill("A client certificate is required.");
  await shot("06-mtls-rule");
  await page.getByRole("button", { name: "Deploy" }).click();
  await page.waitForURL(/\/dashboard\/rules/);
  await ready();
  await page.locator("#rules-table tbody tr", { hasText: "mTLS-enforced authentication" }).waitFor();
  await shot("07-security-rules");

  step("a request without a certificate through the edge is blocked");
  let response = null;
  for (let attempt = 0; attempt < 50; attempt += 1) {
    response = await edgeGet("/api");
    if (response.status === 403) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(response.status, 403, `the edge answered ${response.status}: ${response.body}`);
  assert.equal(response.body, "A client certificate is required.", "the rule's custom response");

  step("see it in Security events");
  await page.getByRole("link", { name: "Security events" }).click();
  await page.waitForURL(`${base}/dashboard/events`);
  await ready();
  const event = page.locator("#events-table tbody tr", { hasText: "GET /api" });
  await event.first().waitFor({ timeout: 20_000 });
  const cells = await event.first().locator("td").allTextContents();
  assert.equal(cells[2], "localhost");
  assert.match(cells[1], /block/);
  assert.equal(cells[5], "absent");
  assert.equal(cells[4], "127.0.0.1");
  await page.getByLabel("mTLS status").selectOption("revoked");
  await page.locator("#events-table td.empty").waitFor();
  await page.getByLabel("mTLS status").selectOption("absent");
  await event.first().waitFor();
  await shot("08-security-events");

  step("hostnames");
  await page.getByRole("link", { name: "Hostnames" }).click();
  await page.waitForURL(`${base}/dashboard/hostnames`);
  await ready();
  const host = page.locator("#hn-table tbody tr", { hasText: "localhost" });
  await host.locator(".badge", { hasText: "active" }).waitFor();
  await shot("09-hostnames");

  step("revoke the certificate");
  await page.getByRole("link", { name: "Client Certificates" }).click();
  await page.waitForURL(`${base}/dashboard`);
  await ready();
  await row.getByRole("button", { name: "Details" }).click();
  await page.locator("#cert-detail[open]").waitFor();
  await shot("10-certificate-detail");
  await page.locator("#cert-detail").getByRole("button", { name: "Revoke" }).click();
  await row.locator(".badge", { hasText: "revoked" }).waitFor();
  await shot("11-certificate-revoked");
  const after = await edgeGet("/");
  assert.equal(after.status, 200, "paths the rule does not name stay open");

  step("disable and re-enable the rule");
  await page.getByRole("link", { name: "Security rules" }).click();
  await page.waitForURL(`${base}/dashboard/rules`);
  await ready();
  const ruleRow = page.locator("#rules-table tbody tr", { hasText: "mTLS-enforced authentication" });
  await ruleRow.getByRole("checkbox").uncheck();
  await ruleRow.getByText("Off", { exact: true }).waitFor();
  await ruleRow.getByRole("checkbox").check();
  await ruleRow.getByText("On", { exact: true }).waitFor();
  await page.getByRole("link", { name: "Client Certificates" }).click();
  await page.waitForURL(`${base}/dashboard`);
  await ready();

  step("phone-sized layout");
  await page.setViewportSize({ width: 390, height: 844 });
  const overflow = await page.evaluate(() => {
    const width = document.documentElement.clientWidth;
    const wide = [...document.querySelectorAll("body *")]
      .filter((el) => el.getBoundingClientRect().right > width + 1 && !el.parentElement.closest(".table-wrap, nav"))
      .map((el) => `${el.tagName.toLowerCase()}#${el.id}.${el.className} ${Math.round(el.getBoundingClientRect().right)}`);
    return { scrollWidth: document.documentElement.scrollWidth, width, wide };
  });
  assert.ok(overflow.scrollWidth <= overflow.width, `the page is wider than a phone: ${JSON.stringify(overflow)}`);
  await shot("12-client-certificates-phone");

  step("sign out");
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL(`${base}/dashboard/login`);

  assert.deepEqual(problems, [], "no page errors or CSP violations");
  console.log("dashboard e2e: all steps passed");
} catch (error) {
  exitCode = 1;
  console.error("dashboard e2e failed:", error);
  console.error("page problems:", problems);
  try {
    await page.screenshot({ path: path.join(shots, "failure.png"), fullPage: true });
    console.error(`failure screenshot: ${path.join(shots, "failure.png")}; page at ${page.url()}`);
  } catch {
    // The browser may be gone.
  }
} finally {
  await context.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
process.exit(exitCode);
