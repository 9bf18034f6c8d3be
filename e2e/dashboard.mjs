// Browser end-to-end test of the Portcullis dashboard: Debian's headless Chromium driven by playwright-core.
// Run by tests/dashboard.rs, which starts `portcullis serve`, creates zone `localhost` with hostnames `localhost` and
// `app.localhost`, and passes (the script also runs `openssl` to make a CA, a CRL and a server certificate):
//   PORTCULLIS_ADMIN_URL   http://127.0.0.1:PORT of the admin listener
//   PORTCULLIS_EDGE_PORT   the edge's TLS port
//   PORTCULLIS_TOKEN       an API token with write scope
//   PORTCULLIS_DATA_DIR    the server's data directory (for edge-dev-ca.pem)
//   PORTCULLIS_SCREENSHOTS where to save one PNG per page
//   PORTCULLIS_CHROMIUM    the browser executable (default /usr/bin/chromium)
// Exits 0 when every step passed.

import assert from "node:assert/strict";
import fs from "node:fs";
import { spawnSync } from "node:child_process";
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
// Errors the steps provoke on purpose (the app logs what it shows the user).
const expected = [/at most 2 KiB/, /invalid origin/, /CRL/i];
page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
page.on("console", (message) => {
  // A GET of a ruleset that does not exist yet answers 404 on purpose, refused inputs answer 400; the app's own
  // logging of an error it showed is fine when a step provoked it; everything else is a problem.
  const text = message.text();
  if (message.type() === "error" && !text.startsWith("Failed to load resource") && !expected.some((re) => re.test(text))) {
    problems.push(`console error: ${text}`);
  }
});

const shot = async (name) => {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
  step(`screenshot ${name}.png`);
};
const ready = async () => {
  await page.locator('body[data-ready="true"]').waitFor();
};

// A CA of our own (openssl), with a CRL listing one revoked certificate, for the bring-your-own-CA steps.
function ownCa() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portcullis-byoca-"));
  const openssl = (...args) => {
    const out = spawnSync("openssl", args, { cwd: dir, encoding: "utf8" });
    if (out.status !== 0) throw new Error(`openssl ${args.join(" ")}: ${out.stderr}`);
    return out.stdout;
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  openssl("req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "30", "-subj", "/CN=E2E Corp Devices CA/O=E2E Corp",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
  openssl("req", ...ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=e2e-device");
  openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "7", "-out", "leaf.pem");
  fs.writeFileSync(path.join(dir, "ca.cnf"), "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\ncrlnumber = crlnumber\ndefault_md = sha256\ndefault_crl_days = 30\n");
  fs.writeFileSync(path.join(dir, "index.txt"), "");
  fs.writeFileSync(path.join(dir, "crlnumber"), "01\n");
  const conf = ["-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.pem"];
  openssl("ca", ...conf, "-revoke", "leaf.pem");
  openssl("ca", ...conf, "-gencrl", "-out", "ca.crl.pem");
  // The DER form, to upload as a binary file.
  openssl("crl", "-in", "ca.crl.pem", "-outform", "DER", "-out", "ca.crl");
  return { dir, pem: fs.readFileSync(path.join(dir, "ca.pem"), "utf8"), crl: path.join(dir, "ca.crl") };
}

// Fails when the page is wider than the viewport (outside scrolling tables and the nav strip).
async function assertFits(what) {
  const overflow = await page.evaluate(() => {
    const width = document.documentElement.clientWidth;
    const wide = [...document.querySelectorAll("body *")]
      .filter((el) => el.getBoundingClientRect().right > width + 1 && !el.parentElement.closest(".table-wrap, nav"))
      .map((el) => `${el.tagName.toLowerCase()}#${el.id}.${el.className} ${Math.round(el.getBoundingClientRect().right)}`);
    return { scrollWidth: document.documentElement.scrollWidth, width, wide };
  });
  assert.ok(overflow.scrollWidth <= overflow.width, `${what} is wider than a phone: ${JSON.stringify(overflow)}`);
}

const nav = async (name, url) => {
  await page.getByRole("navigation", { name: "Dashboard" }).getByRole("link", { name, exact: true }).click();
  await page.waitForURL(url);
  await ready();
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
  assert.equal(await page.getByRole("heading", { level: 1 }).textContent(), "Overview", "the overview is the landing page");

  step("Client Certificates: enable mTLS on localhost (Hosts → Edit)");
  await nav("Client Certificates", `${base}/dashboard/certificates`);
  await page.getByRole("button", { name: "Edit", exact: true }).click();
  await page.getByLabel("Add a hostname").fill("localhost");
  await page.getByRole("button", { name: "Add", exact: true }).click();
  await page.locator("#hosts-edit-list li", { hasText: "localhost" }).waitFor();
  await page.getByRole("button", { name: "Save", exact: true }).click();
  await page.locator("#hosts-list li", { hasText: /^localhost$/ }).waitFor();
  await page.locator("#hosts-form").waitFor({ state: "hidden" });

  step("create a certificate with a generated key, then associate a hostname");
  await page.getByRole("button", { name: "Add Certificate" }).click();
  const issuer = page.getByLabel("Certificate authority");
  await issuer.locator("option", { hasText: "issues new certificates" }).waitFor({ state: "attached" });
  assert.match(await issuer.locator("option:checked").textContent(), /issues new certificates/);
  await page.getByLabel("Private key type").selectOption("p256");
  await page.getByLabel("Common name").fill("device-1");
  await page.getByLabel("Organization (O)").fill("Example Corp");
  await page.getByLabel("Organizational unit (OU)").fill("Devices");
  await page.getByLabel("Certificate validity").selectOption("365");
  await shot("02a-add-certificate");
  await page.getByRole("button", { name: "Create", exact: true }).click();
  await page.locator("#cert-result").waitFor();
  const certificate = await page.locator("#out-cert").inputValue();
  const privateKey = await page.locator("#out-key").inputValue();
  assert.match(certificate, /^-----BEGIN CERTIFICATE-----/);
  assert.match(privateKey, /-----BEGIN PRIVATE KEY-----/);
  const onAlready = page.locator("#assoc-list li", { hasText: /^localhost/ }).getByRole("checkbox");
  assert.equal(await onAlready.isChecked(), true, "localhost already has mTLS");
  assert.equal(await onAlready.isDisabled(), true);
  await page.locator("#assoc-list").getByLabel("app.localhost").check();
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
  await page.getByRole("button", { name: "Enable mTLS on the selected hostnames" }).click();
  await page.locator("#assoc-status", { hasText: "mTLS enabled on app.localhost" }).waitFor();
  await page.locator("#hosts-list li", { hasText: "app.localhost" }).waitFor();
  await page.locator("#assoc-list li", { hasText: "app.localhost" }).locator(".badge", { hasText: "mTLS on" }).waitFor();
  await page.getByRole("button", { name: "Done" }).click();
  const row = page.locator("#cert-table tbody tr", { hasText: "device-1" });
  await row.locator(".badge", { hasText: "active" }).waitFor();
  await row.getByText("Example Corp / Devices").waitFor();
  await page.getByLabel("Search").fill("no-such-device");
  await page.locator("#cert-table td.empty", { hasText: "No certificate matches" }).waitFor();
  await page.getByLabel("Search").fill("Devices");
  await row.waitFor();
  await page.getByLabel("Search").fill("");

  step("a one-week certificate with a PKCS#12 bundle");
  await page.getByRole("button", { name: "Add Certificate" }).click();
  await page.getByLabel("Common name").fill("device-p12");
  await page.getByLabel("PKCS#12 password (optional)").fill("e2e-secret");
  await page.getByLabel("Certificate validity").selectOption("7");
  await page.getByRole("button", { name: "Create", exact: true }).click();
  await page.locator("#cert-result").waitFor();
  const [p12Download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: "Download PKCS#12 bundle" }).click(),
  ]);
  assert.equal(p12Download.suggestedFilename(), "device-p12.p12");
  const p12Path = path.join(os.tmpdir(), `portcullis-e2e-${process.pid}.p12`);
  await p12Download.saveAs(p12Path);
  const p12 = fs.readFileSync(p12Path);
  assert.equal(p12[0], 0x30, "a PKCS#12 file is a DER SEQUENCE");
  assert.ok(p12.length > 500, `the bundle holds a certificate and a key (${p12.length} bytes)`);
  let parsed = spawnSync("openssl", ["pkcs12", "-in", p12Path, "-passin", "pass:e2e-secret", "-nokeys"], { encoding: "utf8" });
  if (parsed.status !== 0) parsed = spawnSync("openssl", ["pkcs12", "-legacy", "-in", p12Path, "-passin", "pass:e2e-secret", "-nokeys"], { encoding: "utf8" });
  assert.equal(parsed.status, 0, `openssl reads the bundle with its password: ${parsed.stderr}`);
  assert.match(parsed.stdout, /subject=.*CN\s*=\s*device-p12/);
  const wrong = spawnSync("openssl", ["pkcs12", "-in", p12Path, "-passin", "pass:wrong", "-nokeys"], { encoding: "utf8" });
  assert.notEqual(wrong.status, 0, "a wrong password does not open it");
  fs.rmSync(p12Path, { force: true });
  await page.getByRole("button", { name: "Done" }).click();
  await page.locator("#cert-table tbody tr", { hasText: "device-p12" }).waitFor();
  await shot("03-client-certificates");

  step("bring your own CA: upload, associate a hostname, upload its CRL, delete");
  const own = ownCa();
  await page.getByRole("tab", { name: "Bring your own CA" }).click();
  await page.getByLabel("Name", { exact: true }).fill("corp-devices");
  await page.getByLabel("CA certificate (PEM)").fill(own.pem);
  await page.getByRole("button", { name: "Upload", exact: true }).click();
  const byoca = page.locator("#byoca-table tbody tr", { hasText: "corp-devices" });
  await byoca.waitFor();
  assert.match(await byoca.locator("td").nth(1).textContent(), /E2E Corp Devices CA/);
  await byoca.getByRole("button", { name: "Edit hostnames" }).click();
  const hostsDialog = page.locator("#byoca-hosts-dialog");
  await hostsDialog.getByLabel("localhost", { exact: true }).check();
  await hostsDialog.getByRole("button", { name: "Save hostnames" }).click();
  await hostsDialog.waitFor({ state: "hidden" });
  await byoca.locator("td.hosts-cell", { hasText: /^localhost$/ }).waitFor();
  await byoca.getByRole("button", { name: "Upload CRL" }).click();
  const crlDialog = page.locator("#crl-dialog");
  await crlDialog.getByLabel("…or paste it (PEM)").fill("-----BEGIN X509 CRL-----\nnot a crl\n-----END X509 CRL-----");
  await crlDialog.getByRole("button", { name: "Upload CRL" }).click();
  await crlDialog.locator(".dialog-error").waitFor();
  await shot("04a-byoca-crl-refused");
  await crlDialog.getByLabel("…or paste it (PEM)").fill("");
  await crlDialog.getByLabel("CRL file (PEM or DER)").setInputFiles(own.crl);
  await crlDialog.getByRole("button", { name: "Upload CRL" }).click();
  await crlDialog.waitFor({ state: "hidden" });
  await page.locator("#toast", { hasText: "CRL accepted: 1 revoked certificate" }).waitFor();
  await byoca.getByText(/^updated \d{4}-\d{2}-\d{2}$/).waitFor();
  await shot("04-bring-your-own-ca");
  // A CA still in use cannot be deleted: remove its hostnames first.
  await byoca.getByRole("button", { name: "Edit hostnames" }).click();
  await hostsDialog.getByLabel("localhost", { exact: true }).uncheck();
  await hostsDialog.getByRole("button", { name: "Save hostnames" }).click();
  await hostsDialog.waitFor({ state: "hidden" });
  await byoca.locator("td.hosts-cell", { hasText: "none" }).waitFor();
  await byoca.getByRole("button", { name: "Delete" }).click();
  await byoca.getByRole("button", { name: "Confirm delete" }).click();
  await byoca.waitFor({ state: "detached" });
  fs.rmSync(own.dir, { recursive: true, force: true });
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
  const blockedWith = async (body) => {
    let response = null;
    for (let attempt = 0; attempt < 50; attempt += 1) {
      response = await edgeGet("/api");
      if (response.status === 403 && response.body === body) return response;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.fail(`the edge answered ${response.status}: ${response.body}; expected 403 ${body}`);
  };
  await blockedWith("A client certificate is required.");

  step("edit the rule: name, expression (with the caret diagnostic) and custom response");
  const ruleRow = page.locator("#rules-table tbody tr", { hasText: "mTLS-enforced authentication" });
  await ruleRow.getByRole("link", { name: "Edit" }).click();
  await page.waitForURL(/\/dashboard\/mtls-rule\?edit=/);
  await ready();
  assert.equal(await page.getByRole("heading", { level: 1 }).textContent(), "Edit rule");
  assert.equal(await page.getByLabel("Rule name").inputValue(), "mTLS-enforced authentication");
  assert.equal(await page.getByLabel("Send a custom response").isChecked(), true);
  assert.equal(await page.getByLabel("Body (at most 2 KiB)").inputValue(), "A client certificate is required.");
  const original = await expression.inputValue();
  await expression.fill(`${original} and http.request.method eq`);
  await page.locator("#rule-diagnostic.bad", { hasText: "^" }).waitFor();
  await shot("07a-rule-edit-invalid");
  await expression.fill(`${original} and http.request.method eq "GET"`);
  await page.locator("#rule-diagnostic.ok").waitFor();
  await page.getByLabel("Rule name").fill("mTLS on /api (edited)");
  await page.getByLabel("Status code (400–499)").fill("401");
  await page.getByLabel("Body (at most 2 KiB)").fill("x".repeat(2049));
  await page.locator("#rule-body-size.too-long").waitFor();
  await page.getByRole("button", { name: "Save rule" }).click();
  await page.locator("#page-error", { hasText: "at most 2 KiB" }).waitFor();
  await page.getByLabel("Body (at most 2 KiB)").fill("Edited: present your device certificate.");
  await shot("07b-rule-edit");
  await page.getByRole("button", { name: "Save rule" }).click();
  await page.waitForURL(/\/dashboard\/rules\?saved=1/);
  await ready();
  const edited = page.locator("#rules-table tbody tr", { hasText: "mTLS on /api (edited)" });
  await edited.waitFor();
  assert.match(await edited.locator("td.expr").textContent(), /http\.request\.method eq "GET"$/);
  let editedResponse = null;
  for (let attempt = 0; attempt < 50; attempt += 1) {
    editedResponse = await edgeGet("/api");
    if (editedResponse.status === 401) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(editedResponse.status, 401, `the edited rule answers: ${editedResponse.status} ${editedResponse.body}`);
  assert.equal(editedResponse.body, "Edited: present your device certificate.");

  step("see it in Security events");
  await nav("Security events", `${base}/dashboard/events`);
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

  step("hostnames: server certificate column and editing a hostname");
  // A server certificate of our own for app.localhost, uploaded through the API (there is no upload page).
  const serverDir = fs.mkdtempSync(path.join(os.tmpdir(), "portcullis-server-cert-"));
  const made = spawnSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", "key.pem", "-out", "cert.pem", "-days", "20", "-subj", "/CN=app.localhost",
    "-addext", "subjectAltName=DNS:app.localhost", "-addext", "basicConstraints=critical,CA:FALSE"], { cwd: serverDir, encoding: "utf8" });
  assert.equal(made.status, 0, made.stderr);
  const authorization = { Authorization: `Bearer ${token}`, "Content-Type": "application/json" };
  const zoneId = (await (await fetch(`${base}/client/v4/zones?name=localhost`, { headers: authorization })).json()).result[0].id;
  const upload = await fetch(`${base}/client/v4/zones/${zoneId}/custom_certificates`, {
    method: "POST",
    headers: authorization,
    body: JSON.stringify({
      certificate: fs.readFileSync(path.join(serverDir, "cert.pem"), "utf8"),
      private_key: fs.readFileSync(path.join(serverDir, "key.pem"), "utf8"),
    }),
  });
  assert.equal(upload.status, 201, await upload.text());
  fs.rmSync(serverDir, { recursive: true, force: true });
  await nav("Hostnames", `${base}/dashboard/hostnames`);
  const host = page.locator("#hn-table tbody tr", { hasText: /^localhost/ });
  await host.locator(".badge", { hasText: "active" }).waitFor();
  await host.getByText("development edge CA").waitFor();
  const app = page.locator("#hn-table tbody tr", { hasText: "app.localhost" });
  const appCert = await app.locator("td").nth(2).textContent();
  assert.match(appCert, /^app\.localhost/, "the uploaded certificate serves app.localhost");
  assert.match(appCert, /expires \d{4}-\d{2}-\d{2}/);
  assert.match(appCert, /CN=app\.localhost/, "its issuer (self-signed)");
  await app.getByRole("button", { name: "Edit" }).click();
  const hnDialog = page.locator("#hn-dialog");
  await hnDialog.getByLabel("Origin", { exact: true }).fill("ftp://nope");
  await hnDialog.getByRole("button", { name: "Save" }).click();
  await hnDialog.locator(".dialog-error", { hasText: "invalid origin" }).waitFor();
  await hnDialog.getByLabel("Origin", { exact: true }).fill("http://127.0.0.1:9");
  await hnDialog.getByLabel("Client certificates").selectOption("require");
  await hnDialog.getByLabel("Forward the certificate to the origin").selectOption("rfc9440");
  await hnDialog.getByRole("button", { name: "Save" }).click();
  await hnDialog.waitFor({ state: "hidden" });
  await app.locator("td", { hasText: "http://127.0.0.1:9" }).waitFor();
  const appCells = await app.locator("td").allTextContents();
  assert.equal(appCells[4], "require");
  assert.equal(appCells[5], "RFC 9440");
  await shot("09-hostnames");

  step("revoke the certificate, then restore it");
  await nav("Client Certificates", `${base}/dashboard/certificates`);
  await row.getByRole("button", { name: "Details" }).click();
  await page.locator("#cert-detail[open]").waitFor();
  await shot("10-certificate-detail");
  await page.locator("#cert-detail").getByRole("button", { name: "Revoke" }).click();
  await row.locator(".badge", { hasText: "revoked" }).waitFor();
  await shot("11-certificate-revoked");
  const after = await edgeGet("/");
  assert.equal(after.status, 200, "paths the rule does not name stay open");
  await row.getByRole("button", { name: "Details" }).click();
  await page.locator("#cert-detail[open]").waitFor();
  assert.equal(await page.locator("#cert-detail").getByRole("button", { name: "Revoke" }).isHidden(), true);
  await page.locator("#cert-detail").getByRole("button", { name: "Restore" }).click();
  await row.locator(".badge", { hasText: "active" }).waitFor();
  await page.locator("#toast", { hasText: "Certificate restored" }).waitFor();

  step("disable and re-enable the rule");
  await nav("Security rules", `${base}/dashboard/rules`);
  await edited.getByRole("checkbox").uncheck();
  await edited.getByText("Off", { exact: true }).waitFor();
  await edited.getByRole("checkbox").check();
  await edited.getByText("On", { exact: true }).waitFor();

  step("overview: the chart counts the edge's requests, and the one-week certificate is expiring");
  await nav("Overview", `${base}/dashboard`);
  const requests = Number((await page.locator("#ov-requests").textContent()).replaceAll(",", ""));
  const blocks = Number((await page.locator("#ov-blocked").textContent()).replaceAll(",", ""));
  assert.ok(requests >= 3, `requests counted: ${requests}`);
  assert.ok(blocks >= 2 && blocks < requests, `blocks counted: ${blocks} of ${requests}`);
  assert.ok((await page.locator("#ov-chart svg rect.bar-requests").count()) >= 1, "a request bar is drawn");
  assert.ok((await page.locator("#ov-chart svg rect.bar-blocked").count()) >= 1, "a block bar is drawn");
  assert.match(await page.locator("#ov-chart-caption").textContent(), /request.*blocked/);
  const expiring = page.locator("#ov-expiring tbody tr", { hasText: "device-p12" });
  await expiring.waitFor();
  assert.match(await expiring.locator("td").nth(3).textContent(), /^[67] days$/);
  assert.equal(await page.locator("#ov-expiring tbody tr", { hasText: "device-1" }).count(), 0, "a one-year certificate is not expiring");
  assert.equal(await page.locator("#ov-expiring-count").textContent(), "1");
  assert.equal(await page.locator("#ov-mtls-hosts").textContent(), "2");
  await page.getByText("Show the numbers per minute").click();
  assert.ok((await page.locator("#ov-traffic-table tbody tr").count()) >= 1);
  await shot("13-overview");

  step("phone-sized layout");
  await page.setViewportSize({ width: 390, height: 844 });
  await page.reload();
  await ready();
  await assertFits("the overview");
  await shot("14-overview-phone");
  await nav("Client Certificates", `${base}/dashboard/certificates`);
  await assertFits("Client Certificates");
  await shot("12-client-certificates-phone");
  for (const [name, url, file] of [
    ["Hostnames", `${base}/dashboard/hostnames`, "15-hostnames-phone"],
    ["Security rules", `${base}/dashboard/rules`, "16-security-rules-phone"],
  ]) {
    await nav(name, url);
    await assertFits(name);
    await shot(file);
  }

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
