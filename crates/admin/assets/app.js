// Portcullis dashboard: a small vanilla-JS module (no framework, no build step) over the JSON API at /client/v4.
// It authenticates with the session cookie and sends the page's CSRF token on every state-changing call.

const API = "/client/v4";
const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
const canWrite = document.querySelector('meta[name="can-write"]')?.content === "true";
const PHASE = "http_request_firewall_custom";

// ---------- helpers ----------

// Set when the browser leaves the page: requests it then cuts off (auto-refresh, validation) are not errors to show.
let leaving = false;
window.addEventListener("beforeunload", () => {
  leaving = true;
});
window.addEventListener("pageshow", () => {
  leaving = false;
});

async function api(method, path, body) {
  const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (method !== "GET") options.headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(API + path, options);
  } catch (error) {
    // Leaving the page: the answer no longer matters, and nothing waits for it.
    if (leaving) return new Promise(() => {});
    throw new Error(`could not reach the Portcullis API (${error.message}): is the server running?`);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (response.status === 401) {
    window.location.assign("/dashboard/login");
  }
  if (!response.ok || !data || data.success !== true) {
    const message = data?.errors?.map((e) => e.message).join("; ") || `HTTP ${response.status}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  // A write that succeeded may still leave the zone's mTLS enforcing nothing: the API says so in `messages`.
  if (method !== "GET" && /^\/zones\/[^/]+\/(hostnames|rulesets|certificate_authorities)\b/.test(path)) {
    warningsSeq += 1;
    showWarnings(data.messages || []);
  }
  return data;
}

// Counts the writes that answered with warnings, so that an older answer of the check a page makes as it opens
// never replaces newer ones.
let warningsSeq = 0;

function showWarnings(messages) {
  const el = $("page-warning");
  if (!el) return;
  el.replaceChildren(...messages.map((m) => h("p", {}, m.message)));
  el.hidden = messages.length === 0;
}

// Builds an element; children may be strings (set as text, never parsed as HTML), nodes, or arrays of them.
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const $ = (id) => document.getElementById(id);

function toast(message) {
  const el = $("toast");
  if (!el) return;
  el.textContent = message;
  el.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => el.classList.remove("show"), 3500);
}

function showError(error) {
  const el = $("page-error");
  const message = error instanceof Error ? error.message : String(error);
  if (el) {
    el.textContent = message;
    el.hidden = false;
    el.scrollIntoView({ block: "nearest" });
  }
  console.error(error);
}

function clearError() {
  const el = $("page-error");
  if (el) el.hidden = true;
}

// Runs an async action from a button: disables it meanwhile and reports failures on the page.
async function run(button, action) {
  clearError();
  // In a modal dialog the page's alert is hidden behind it: report there.
  const box = button?.closest?.("dialog")?.querySelector(".dialog-error");
  if (box) box.hidden = true;
  if (button) button.disabled = true;
  try {
    await action();
  } catch (error) {
    if (box && button.closest("dialog").open) {
      box.textContent = error instanceof Error ? error.message : String(error);
      box.hidden = false;
      console.error(error);
    } else {
      showError(error);
    }
  } finally {
    if (button) button.disabled = false;
  }
}

function download(filename, content, type) {
  const blob = content instanceof Blob ? content : new Blob([content], { type });
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: filename, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function base64Bytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

const day = (rfc3339) => (rfc3339 ? rfc3339.slice(0, 10) : "");
const when = (rfc3339) => (rfc3339 ? rfc3339.replace("T", " ").replace("Z", " UTC") : "");
// One entry per line (a path may contain a comma).
const lines = (text) => text.split(/\r?\n/).map((s) => s.trim()).filter(Boolean);

function statusBadge(status) {
  const kind = { active: "ok", revoked: "danger", expired: "danger", ok: "ok", block: "danger", log: "warn" }[status] ?? "warn";
  return h("span", { class: `badge badge-${kind}` }, status.replaceAll("_", " "));
}

// Makes `button` ask for a second click before doing something destructive (no window.confirm): the first click
// changes its label to `confirmLabel` for 4 seconds. Returns a function that disarms it (for a dialog reopened).
function armConfirm(button, label, confirmLabel, action) {
  let armed = false;
  let timer = null;
  const disarm = () => {
    clearTimeout(timer);
    armed = false;
    button.textContent = label;
  };
  button.addEventListener("click", () => {
    if (!armed) {
      armed = true;
      button.textContent = confirmLabel;
      timer = setTimeout(disarm, 4000);
      return;
    }
    disarm();
    run(button, action);
  });
  return disarm;
}

// A button that asks for a second click before doing something destructive.
function confirmButton(label, confirmLabel, action, extra = {}) {
  const button = h("button", { type: "button", class: "btn-danger btn-small", ...extra }, label);
  armConfirm(button, label, confirmLabel, action);
  return button;
}

// Opens a modal dialog without the error of its previous use.
function openDialog(dialog) {
  dialog.querySelectorAll(".dialog-error").forEach((box) => {
    box.hidden = true;
    box.textContent = "";
  });
  dialog.showModal();
}

// Which CAs cover each hostname of the zone: the managed CA's hostname associations, and each uploaded CA's
// (GET …/hostname_associations without mtls_certificate_id lists only the managed CA's hosts).
// Returns a Map from hostname to the names of the CAs, sorted.
async function mtlsCoverage() {
  const acc = await account();
  const [managed, uploaded] = await Promise.all([
    api("GET", `/zones/${zone.id}/certificate_authorities/hostname_associations`).then((d) => d.result?.hostnames ?? []),
    api("GET", `/accounts/${acc}/mtls_certificates`).then((d) => (d.result ?? []).filter((c) => c.ca !== false)),
  ]);
  const byCa = await Promise.all(
    uploaded.map((ca) =>
      api("GET", `/accounts/${acc}/mtls_certificates/${ca.id}/associations`).then((d) =>
        (d.result ?? []).filter((a) => a.zone_id === zone.id).map((a) => [a.hostname, ca.name || ca.id]),
      ),
    ),
  );
  const coverage = new Map();
  for (const [name, ca] of [...managed.map((name) => [name, "managed CA"]), ...byCa.flat()]) {
    coverage.set(name, [...(coverage.get(name) ?? []), ca]);
  }
  return new Map([...coverage.entries()].sort(([a], [b]) => a.localeCompare(b)));
}

function emptyRow(table, columns, text) {
  table.tBodies[0].replaceChildren(h("tr", {}, h("td", { colspan: columns, class: "empty" }, text)));
}

// ---------- zone and account ----------

let zone = null;
let accountId = null;

async function loadZones() {
  const picker = $("zone-picker");
  const zones = (await api("GET", "/zones?per_page=1000")).result ?? [];
  const wanted = new URLSearchParams(window.location.search).get("zone") ?? localStorage.getItem("portcullis.zone");
  zone = zones.find((z) => z.name === wanted || z.id === wanted) ?? zones[0] ?? null;
  if (picker) {
    picker.replaceChildren(...zones.map((z) => h("option", { value: z.id, selected: zone && z.id === zone.id }, z.name)));
    if (!zones.length) picker.replaceChildren(h("option", { value: "" }, "no zones"));
    picker.addEventListener("change", () => {
      const next = zones.find((z) => z.id === picker.value);
      if (next) localStorage.setItem("portcullis.zone", next.name);
      const url = new URL(window.location.href);
      url.searchParams.delete("zone");
      window.location.assign(url.pathname);
    });
  }
  return zone;
}

async function account() {
  if (!accountId) accountId = (await api("GET", "/accounts")).result?.[0]?.id ?? null;
  return accountId;
}

// A fresh server has no zone: every page but the lists needs one, so the page offers to create it.
function noZone() {
  const main = $("main");
  main.querySelectorAll(":scope > :not(h1):not(#page-error)").forEach((el) => {
    el.hidden = true;
  });
  const intro = h("p", {}, "There is no zone yet. A zone holds your hostnames, rules and client certificates, as on Cloudflare.");
  if (!canWrite) {
    main.append(h("div", { class: "card" }, intro, h("p", {}, "Ask someone with a write token to create one, or run ", h("code", {}, "portcullis zone add example.com"), ".")));
    return;
  }
  const name = h("input", { id: "zone-new-name", type: "text", required: true, placeholder: "example.com", autocomplete: "off" });
  const button = h("button", { type: "submit", class: "btn-primary" }, "Create zone");
  const form = h(
    "form",
    { class: "card", id: "zone-new-form" },
    intro,
    h("label", { for: "zone-new-name" }, "Zone name (your domain)"),
    name,
    h("div", { class: "row" }, button),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    run(button, async () => {
      const created = await api("POST", "/zones", { name: name.value.trim() });
      localStorage.setItem("portcullis.zone", created.result.name);
      window.location.reload();
    });
  });
  main.append(form);
  name.focus();
}

// ---------- Overview ----------

const SVG = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  for (const child of children.flat()) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return el;
}

const hhmm = (rfc3339) => rfc3339.slice(11, 16);
const plural = (n, word) => `${n.toLocaleString("en-US")} ${word}${n === 1 ? "" : "s"}`;

// Draws requests (bars) and blocks (bars in front) per minute as an inline SVG; the caption and the table below
// it carry the same numbers for screen readers.
export function trafficChart(minutes, width = 720) {
  const narrow = width < 520;
  const height = narrow ? 170 : 200;
  const left = 44;
  const right = 8;
  const top = 10;
  const bottom = 26;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const peak = Math.max(1, ...minutes.map((m) => m.requests));
  // A round top for the axis: 1, 2 or 5 times a power of ten.
  // A round top for the axis whose half is round too: 2, 4, 6 or 10 times a power of ten.
  const magnitude = 10 ** Math.floor(Math.log10(peak));
  const max = [2, 4, 6, 10].map((f) => f * magnitude).find((v) => v >= peak);
  const step = plotW / minutes.length;
  const y = (v) => top + plotH - (v / max) * plotH;
  const svg = s("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "chart-svg",
    role: "img",
    "aria-labelledby": "ov-chart-caption",
    focusable: "false",
  });
  for (const v of [0, max / 2, max]) {
    svg.append(
      s("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: "grid-line" }),
      s("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" }, v.toLocaleString("en-US")),
    );
  }
  minutes.forEach((m, i) => {
    const x = left + i * step + step * 0.15;
    const w = Math.max(1, step * 0.7);
    const label = `${hhmm(m.minute_start)} UTC: ${plural(m.requests, "request")}, ${m.blocked} blocked`;
    if (m.requests > 0) svg.append(s("rect", { x, y: y(m.requests), width: w, height: y(0) - y(m.requests), class: "bar-requests" }, s("title", {}, label)));
    if (m.blocked > 0) svg.append(s("rect", { x, y: y(m.blocked), width: w, height: y(0) - y(m.blocked), class: "bar-blocked" }, s("title", {}, label)));
  });
  const last = minutes.length - 1;
  const ticks = (narrow ? [0, 30, last] : [0, 15, 30, 45, last]).filter((i) => i >= 0 && i <= last);
  for (const i of ticks) {
    const anchor = i === 0 ? "start" : i === last ? "end" : "middle";
    const x = i === 0 ? left : i === last ? width - right : left + i * step + step / 2;
    svg.append(s("text", { x, y: height - 8, "text-anchor": anchor, class: "axis" }, hhmm(minutes[i].minute_start)));
  }
  return svg;
}

async function overviewPage() {
  const acc = await account();
  // Counted and filtered by the server: a zone may hold hundreds of thousands of certificates.
  const soon = new Date(Date.now() + 30 * 24 * 3600 * 1000).toISOString().replace(/\.\d+Z$/, "Z");
  const certs = `/zones/${zone.id}/client_certificates?status=active`;
  const [traffic, activeList, expiringList, associated] = await Promise.all([
    api("GET", `/accounts/${acc}/portcullis/traffic`).then(
      (d) => d.result,
      (error) => error,
    ),
    api("GET", `${certs}&per_page=1`),
    api("GET", `${certs}&expires_before=${encodeURIComponent(soon)}&order=expires_on&per_page=${EXPIRING_SHOWN}`),
    mtlsCoverage(),
  ]);

  const caption = $("ov-chart-caption");
  if (traffic instanceof Error) {
    $("ov-requests").textContent = "—";
    $("ov-blocked").textContent = "—";
    caption.textContent = `Traffic counts are not available: ${traffic.message}`;
    caption.classList.add("alert", "alert-warn");
    $("ov-table-details").hidden = true;
  } else {
    $("ov-requests").textContent = traffic.requests.toLocaleString("en-US");
    $("ov-blocked").textContent = traffic.blocked.toLocaleString("en-US");
    // Drawn at the box's own width, so that the labels keep their size on a phone.
    const box = $("ov-chart");
    const draw = () => box.replaceChildren(trafficChart(traffic.minutes, Math.max(300, Math.round(box.clientWidth || 720))));
    draw();
    let resizing = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizing);
      resizing = setTimeout(draw, 150);
    });
    const busiest = traffic.minutes.reduce((a, b) => (b.requests > a.requests ? b : a), traffic.minutes[0]);
    caption.textContent =
      `Requests (blue) and blocked requests (red) per minute, ${hhmm(traffic.since)}–${hhmm(traffic.until)} UTC: ` +
      `${plural(traffic.requests, "request")}, ${traffic.blocked.toLocaleString("en-US")} blocked` +
      (busiest && busiest.requests ? `; the busiest minute was ${hhmm(busiest.minute_start)} with ${plural(busiest.requests, "request")}.` : ".");
    $("ov-traffic-table").tBodies[0].replaceChildren(
      ...traffic.minutes
        .filter((m) => m.requests || m.blocked)
        .map((m) => h("tr", {}, h("td", {}, hhmm(m.minute_start)), h("td", {}, String(m.requests)), h("td", {}, String(m.blocked)))),
    );
    if (!traffic.requests) emptyRow($("ov-traffic-table"), 3, "No requests in the last hour.");
  }

  const now = Date.now();
  const expiring = expiringList.result ?? [];
  const expiringCount = expiringList.result_info?.total_count ?? expiring.length;
  $("ov-active").textContent = (activeList.result_info?.total_count ?? 0).toLocaleString("en-US");
  $("ov-expiring-count").textContent = expiringCount.toLocaleString("en-US");
  $("ov-expiring-more").hidden = expiringCount <= expiring.length;
  $("ov-expiring-more").textContent = `The ${expiring.length} that expire first of ${expiringCount.toLocaleString("en-US")}.`;
  $("ov-mtls-hosts").textContent = String(associated.size);
  const table = $("ov-expiring");
  table.tBodies[0].replaceChildren(
    ...expiring.map((c) => {
      const days = Math.floor((Date.parse(c.expires_on) - now) / (24 * 3600 * 1000));
      return h(
        "tr",
        { "data-id": c.id },
        h("td", {}, c.common_name || "(no common name)"),
        h("td", { class: "mono" }, c.serial_number),
        h("td", { class: "nowrap" }, day(c.expires_on)),
        h("td", {}, days < 0 ? h("span", { class: "badge badge-danger" }, "expired") : h("span", { class: `badge badge-${days <= 7 ? "danger" : "warn"}` }, `${days} day${days === 1 ? "" : "s"}`)),
      );
    }),
  );
  if (!expiring.length) emptyRow(table, 4, "No active certificate expires within 30 days.");
}

// The overview lists at most this many expiring certificates, the soonest first.
const EXPIRING_SHOWN = 100;

// ---------- Client Certificates ----------

async function certificatesPage() {
  setupTabs();
  setupHosts();
  setupWizard();
  setupList();
  setupByoca();
  $("download-ca").addEventListener("click", (e) =>
    run(e.currentTarget, async () => {
      const cas = (await api("GET", `/accounts/${await account()}/managed_ca`)).result ?? [];
      const active = cas.find((ca) => ca.status === "active") ?? cas[0];
      if (!active) throw new Error("there is no managed CA yet");
      download("portcullis-managed-ca.pem", active.certificate, "application/x-pem-file");
    }),
  );
  armConfirm($("mca-rotate"), "Rotate", "Confirm rotate: a new CA issues from now on", async () => {
    const created = await api("POST", `/accounts/${await account()}/managed_ca/rotate`, {});
    toast(`${created.result.name} issues from now on; the previous CA stays trusted until retired`);
    await loadManagedCas();
  });
  loadManagedCas().catch(showError);
  setupCaRequests();
  setupPolicy();
}

/** Managed CA requests: made here, their CSR downloaded, the signed certificate installed, or deleted. */
function setupCaRequests() {
  let installing = null;
  const dialog = $("mcr-dialog");
  $("mcr-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run($("mcr-create"), async () => {
      const body = { key_type: $("mcr-key").value };
      const cn = $("mcr-cn").value.trim();
      if (cn) body.common_name = cn;
      const made = (await api("POST", `/accounts/${await account()}/managed_ca/requests`, body)).result;
      $("mcr-cn").value = "";
      download(`${made.name}.csr`, made.csr, "application/pkcs10");
      toast(`Request for ${made.name} created: have your CA sign the CSR, then install the certificate`);
      await loadCaRequests();
    });
  });
  $("mcr-cancel").addEventListener("click", () => dialog.close());
  $("mcr-install-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run($("mcr-install"), async () => {
      const body = { certificate: $("mcr-cert").value, chain: $("mcr-chain").value };
      const path = `/accounts/${await account()}/managed_ca/requests/${installing.id}/install`;
      const ca = (await api("POST", path, body)).result;
      dialog.close();
      toast(`${ca.name}, signed by ${ca.issuer}, issues from now on; the previous CA stays trusted until retired`);
      await Promise.all([loadManagedCas(), loadCaRequests()]);
    });
  });
  loadCaRequests().catch(showError);

  async function loadCaRequests() {
    const acc = await account();
    const requests = (await api("GET", `/accounts/${acc}/managed_ca/requests`)).result ?? [];
    const table = $("mcr-table");
    table.tBodies[0].replaceChildren(
      ...requests.map((request) =>
        h(
          "tr",
          { "data-id": request.id },
          h("td", {}, request.name, " ", h("span", { class: "muted small" }, "waiting for its certificate")),
          h("td", {}, request.key_type),
          h("td", { class: "nowrap" }, day(request.created_on)),
          h(
            "td",
            { class: "nowrap" },
            h(
              "button",
              {
                type: "button",
                class: "btn btn-small",
                onclick: () => download(`${request.name}.csr`, request.csr, "application/pkcs10"),
              },
              "Download CSR",
            ),
            " ",
            canWrite &&
              h(
                "button",
                {
                  type: "button",
                  class: "btn btn-small",
                  onclick: () => {
                    installing = request;
                    $("mcr-install-name").textContent = request.name;
                    $("mcr-cert").value = "";
                    $("mcr-chain").value = "";
                    openDialog(dialog);
                  },
                },
                "Install certificate",
              ),
            " ",
            canWrite &&
              confirmButton("Delete", "Confirm delete: its key is discarded", async () => {
                await api("DELETE", `/accounts/${acc}/managed_ca/requests/${request.id}`);
                toast(`Request for ${request.name} deleted`);
                await loadCaRequests();
              }),
          ),
        ),
      ),
    );
    if (!requests.length) emptyRow(table, 4, "No request waits for a certificate.");
  }
}

/** The zone's client certificate policy: shown, and saved from its form. */
function setupPolicy() {
  const path = `/zones/${zone.id}/portcullis/client_certificate_policy`;
  const show = (policy) => {
    const days = policy.max_validity_days ? `at most ${policy.max_validity_days} days` : "any validity";
    const names = policy.allowed_names?.length ? `names matching ${policy.allowed_names.join(", ")}` : "any names";
    $("policy-now").textContent = `Certificates issued here: ${days}, ${names}.`;
    $("policy-days").value = policy.max_validity_days ?? "";
    $("policy-names").value = (policy.allowed_names ?? []).join("\n");
    // Saving before the policy is read would send an empty form, which removes it.
    $("policy-save").disabled = false;
    // The wizard offers no validity the policy refuses, and its longest when that is not among the choices.
    const select = $("cert-validity");
    const max = policy.max_validity_days;
    const wasPolicy = select.selectedOptions[0]?.dataset.policy !== undefined;
    select.querySelector("option[data-policy]")?.remove();
    for (const option of select.options) option.disabled = Boolean(max) && Number(option.value) > max;
    if (max && ![...select.options].some((o) => Number(o.value) === max)) {
      select.append(h("option", { value: String(max), "data-policy": "" }, `${max} days (the zone's longest)`));
    }
    if (max && Number(select.value) > max) select.value = String(max);
    else if (!max && wasPolicy) select.value = "3650";
  };
  $("policy-save").disabled = true;
  $("policy-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run($("policy-save"), async () => {
      const body = {};
      const days = $("policy-days").value.trim();
      if (days) body.max_validity_days = Number(days);
      const names = lines($("policy-names").value);
      if (names.length) body.allowed_names = names;
      show((await api("PUT", path, body)).result);
      toast("Issuance policy saved");
    });
  });
  api("GET", path)
    .then((answer) => show(answer.result ?? {}))
    .catch(showError);
}

async function loadManagedCas() {
  const acc = await account();
  const cas = (await api("GET", `/accounts/${acc}/managed_ca`)).result ?? [];
  const table = $("mca-table");
  const what = { active: "issues and is trusted", trusted: "trusted, no longer issues", retired: "retired" };
  table.tBodies[0].replaceChildren(
    ...cas.map((ca) =>
      h(
        "tr",
        { "data-id": ca.id },
        h("td", {}, ca.name),
        h("td", {}, statusBadge(ca.status), " ", h("span", { class: "muted small" }, what[ca.status] ?? "")),
        h("td", {}, ca.key_type),
        h("td", {}, ca.chain ? ca.issuer : h("span", { class: "muted" }, "itself")),
        h("td", { class: "nowrap" }, day(ca.expires_on)),
        h("td", { class: "nowrap" }, day(ca.created_on)),
        h(
          "td",
          {},
          canWrite &&
            ca.status === "trusted" &&
            confirmButton("Retire", "Confirm retire: its certificates stop working", async () => {
              await api("DELETE", `/accounts/${acc}/managed_ca/${ca.id}`);
              toast(`${ca.name} retired`);
              await loadManagedCas();
            }),
        ),
      ),
    ),
  );
  if (!cas.length) emptyRow(table, 7, "No managed CA yet: start portcullis serve once to create it.");
}

function setupTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const select = (tab) => {
    for (const other of tabs) {
      const selected = other === tab;
      other.setAttribute("aria-selected", String(selected));
      other.tabIndex = selected ? 0 : -1;
      $(other.getAttribute("aria-controls")).hidden = !selected;
    }
    if (tab.id === "tab-byoca") loadByoca();
  };
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (e) => {
      if (e.key !== "ArrowRight" && e.key !== "ArrowLeft") return;
      const next = tabs[(i + (e.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
      next.focus();
      select(next);
    });
  });
}

let hosts = [];
let editing = [];

async function loadHosts() {
  const data = await api("GET", `/zones/${zone.id}/certificate_authorities/hostname_associations`);
  hosts = data.result?.hostnames ?? [];
  const list = $("hosts-list");
  list.replaceChildren(...hosts.map((name) => h("li", {}, name)));
  if (!hosts.length) list.replaceChildren(h("li", { class: "none" }, "No hostnames have mTLS enabled yet."));
}

function renderEditing() {
  $("hosts-edit-list").replaceChildren(
    ...editing.map((name) =>
      h(
        "li",
        {},
        name,
        h(
          "button",
          {
            type: "button",
            "aria-label": `Remove ${name}`,
            title: `Remove ${name}`,
            onclick: () => {
              editing = editing.filter((n) => n !== name);
              renderEditing();
            },
          },
          "✕",
        ),
      ),
    ),
  );
}

function setupHosts() {
  const form = $("hosts-form");
  const input = $("host-input");
  const addHost = () => {
    let name = input.value.trim().toLowerCase();
    if (!name) return;
    if (!name.includes(".") && name !== zone.name && !name.endsWith(zone.name)) name = `${name}.${zone.name}`;
    if (!editing.includes(name)) editing.push(name);
    input.value = "";
    renderEditing();
    input.focus();
  };
  $("hosts-edit").addEventListener("click", async () => {
    editing = [...hosts];
    renderEditing();
    form.hidden = false;
    input.focus();
    try {
      const names = ((await api("GET", `/zones/${zone.id}/hostnames`)).result ?? []).map((x) => x.hostname);
      $("host-options").replaceChildren(...names.map((n) => h("option", { value: n })));
    } catch (error) {
      showError(error);
    }
  });
  $("host-add").addEventListener("click", addHost);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      addHost();
    }
  });
  $("hosts-cancel").addEventListener("click", () => {
    form.hidden = true;
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (input.value.trim()) addHost();
    run(e.submitter, async () => {
      await api("PUT", `/zones/${zone.id}/certificate_authorities/hostname_associations`, { hostnames: editing });
      form.hidden = true;
      await loadHosts();
      toast("Hosts saved");
    });
  });
  loadHosts().catch(showError);
}

let created = null;
let issuersLoaded = Promise.resolve();

function setupWizard() {
  const wizard = $("wizard");
  const form = $("cert-form");
  const result = $("cert-result");
  const mode = () => form.querySelector('input[name="mode"]:checked').value;
  form.querySelectorAll('input[name="mode"]').forEach((radio) =>
    radio.addEventListener("change", () => {
      $("generate-fields").hidden = mode() !== "generate";
      $("csr-fields").hidden = mode() !== "csr";
    }),
  );
  $("add-cert").addEventListener("click", () => {
    form.reset();
    $("generate-fields").hidden = false;
    $("csr-fields").hidden = true;
    form.hidden = false;
    result.hidden = true;
    wizard.hidden = false;
    $("cert-ca").focus();
    issuersLoaded = loadIssuers();
    issuersLoaded.catch(showError);
  });
  $("cert-cancel").addEventListener("click", () => {
    wizard.hidden = true;
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    run($("cert-create"), async () => {
      await issuersLoaded;
      const issuer = $("cert-ca").value;
      if (!issuer) throw new Error("choose the certificate authority that issues the certificate");
      const body = { validity_days: Number($("cert-validity").value), certificate_authority_id: issuer };
      if (mode() === "csr") {
        body.csr = $("cert-csr").value.trim();
      } else {
        body.generate_key = { type: $("cert-key-type").value };
        const optional = { common_name: "cert-cn", organization: "cert-o", organizational_unit: "cert-ou" };
        for (const [field, id] of Object.entries(optional)) {
          const value = $(id).value.trim();
          if (value) body[field] = value;
        }
        // A password is taken as typed: spaces at either end are part of it.
        const password = $("cert-p12").value;
        if (password) body.pkcs12_password = password;
      }
      created = (await api("POST", `/zones/${zone.id}/client_certificates`, body)).result;
      $("out-cert").value = created.certificate;
      $("out-key").value = created.private_key ?? "";
      $("out-key-block").hidden = !created.private_key;
      $("download-p12").hidden = !created.pkcs12;
      $("p12-none").hidden = Boolean(created.pkcs12) || !created.private_key;
      $("cert-p12").value = "";
      form.hidden = true;
      result.hidden = false;
      $("assoc-ca").textContent = created.certificate_authority?.name || "the managed CA";
      await loadAssociationChoices();
      $("out-cert").focus();
      $("out-cert").setSelectionRange(0, 0);
      $("out-cert").scrollTop = 0;
      await loadCerts();
    });
  });
  const baseName = () => (created?.common_name || created?.id || "certificate").replace(/[^A-Za-z0-9._-]+/g, "_");
  $("download-cert").addEventListener("click", () => download(`${baseName()}.pem`, created.certificate, "application/x-pem-file"));
  $("download-key").addEventListener("click", () => download(`${baseName()}.key.pem`, created.private_key, "application/x-pem-file"));
  $("download-p12").addEventListener("click", () =>
    download(`${baseName()}.p12`, new Blob([base64Bytes(created.pkcs12)], { type: "application/x-pkcs12" })),
  );
  document.querySelectorAll("[data-copy]").forEach((button) =>
    button.addEventListener("click", async () => {
      const area = $(button.dataset.copy);
      try {
        await navigator.clipboard.writeText(area.value);
      } catch {
        area.select();
        document.execCommand("copy");
      }
      toast("Copied");
    }),
  );
  $("assoc-save").addEventListener("click", (e) =>
    run(e.currentTarget, async () => {
      const chosen = [...document.querySelectorAll('#assoc-list input[type="checkbox"]:checked:not(:disabled)')].map((box) => box.value);
      if (!chosen.length) throw new Error("check at least one hostname to enable mTLS on");
      const current = (await api("GET", `/zones/${zone.id}/certificate_authorities/hostname_associations`)).result?.hostnames ?? [];
      await api("PUT", `/zones/${zone.id}/certificate_authorities/hostname_associations`, {
        hostnames: [...new Set([...current, ...chosen])],
      });
      $("assoc-status").textContent = `mTLS enabled on ${chosen.join(", ")}`;
      await Promise.all([loadHosts(), loadAssociationChoices()]);
    }),
  );
  $("cert-done").addEventListener("click", () => {
    // The key is shown once: forget it.
    $("out-key").value = "";
    $("out-cert").value = "";
    created = null;
    wizard.hidden = true;
    $("add-cert").focus();
  });
}

// The CA choice: only the active managed CA issues. Managed CAs replaced by a rotation, and uploaded CAs (whose key
// Portcullis never holds), are listed but cannot be chosen.
async function loadIssuers() {
  const select = $("cert-ca");
  const acc = await account();
  const [managed, uploaded] = await Promise.all([
    api("GET", `/accounts/${acc}/managed_ca`).then((d) => d.result ?? []),
    api("GET", `/accounts/${acc}/mtls_certificates`).then((d) => (d.result ?? []).filter((c) => c.ca !== false)),
  ]);
  const active = managed.find((ca) => ca.status === "active");
  select.replaceChildren(
    h(
      "optgroup",
      { label: "Managed by Portcullis" },
      managed
        .filter((ca) => ca.status !== "retired")
        .map((ca) =>
          h(
            "option",
            { value: ca.id, disabled: ca.status !== "active", selected: ca === active },
            ca.status === "active" ? `${ca.name} (issues new certificates)` : `${ca.name} (replaced by a rotation: no longer issues)`,
          ),
        ),
    ),
    uploaded.length > 0 &&
      h(
        "optgroup",
        { label: "Your CAs: issue with your own CA" },
        uploaded.map((ca) => h("option", { value: ca.id, disabled: true }, `${ca.name || ca.id} (Portcullis holds no key for it)`)),
      ),
  );
  if (!active) throw new Error("there is no active managed CA: start portcullis serve once to create it");
}

// The optional last step: hostnames of the zone, with the ones that already have mTLS checked and fixed.
async function loadAssociationChoices() {
  const [names, current] = await Promise.all([
    api("GET", `/zones/${zone.id}/hostnames`).then((d) => (d.result ?? []).map((x) => x.hostname)),
    api("GET", `/zones/${zone.id}/certificate_authorities/hostname_associations`).then((d) => d.result?.hostnames ?? []),
  ]);
  const list = $("assoc-list");
  list.replaceChildren(
    ...names.map((name) => {
      const on = current.includes(name);
      return h(
        "li",
        {},
        h("label", { class: "inline" }, h("input", { type: "checkbox", value: name, checked: on, disabled: on || !canWrite }), name, on && h("span", { class: "badge badge-ok" }, "mTLS on")),
      );
    }),
  );
  if (!names.length) list.replaceChildren(h("li", { class: "muted" }, "The zone has no hostnames yet: add them on the Hostnames page."));
  $("assoc-save").disabled = !canWrite || names.every((n) => current.includes(n));
}

// The page of certificates on screen; search, status and paging are the server's.
let certs = [];
let certPage = 1;
let certPages = 1;
let certTotal = 0;
let certLoads = 0;
const CERTS_PER_PAGE = 10;

async function loadCerts() {
  const load = ++certLoads;
  const params = new URLSearchParams({ per_page: String(CERTS_PER_PAGE), page: String(certPage) });
  const status = $("cert-status").value;
  if (status !== "all") params.set("status", status);
  const query = $("cert-search").value.trim();
  if (query) params.set("search", query);
  const data = await api("GET", `/zones/${zone.id}/client_certificates?${params}`);
  // A slower answer to an earlier query must not replace a later one.
  if (load !== certLoads) return;
  certTotal = data.result_info?.total_count ?? 0;
  certPages = Math.max(1, data.result_info?.total_pages ?? 1);
  if (certPage > certPages) {
    // The last page emptied (a revocation under a status filter): show the new last page.
    certPage = certPages;
    await loadCerts();
    return;
  }
  certs = data.result ?? [];
  renderCerts();
}

function renderCerts() {
  const shown = certs;
  const filtered = $("cert-search").value.trim() !== "" || $("cert-status").value !== "all";
  const table = $("cert-table");
  table.tBodies[0].replaceChildren(
    ...shown.map((c) =>
      h(
        "tr",
        { "data-id": c.id },
        h("td", {}, c.common_name || "(no common name)"),
        h("td", {}, [c.organization, c.organizational_unit].filter(Boolean).join(" / ") || "—"),
        h("td", { class: "mono" }, c.serial_number),
        h("td", { class: "nowrap" }, day(c.expires_on)),
        h("td", {}, statusBadge(c.status)),
        h("td", {}, h("button", { type: "button", class: "btn btn-small", onclick: () => openDetail(c.id) }, "Details", h("span", { class: "sr-only" }, ` of ${c.common_name}`))),
      ),
    ),
  );
  if (!shown.length) emptyRow(table, 6, filtered ? "No certificate matches." : "No client certificates yet: Add Certificate.");
  $("cert-page").textContent = `Page ${certPage} of ${certPages} · ${certTotal.toLocaleString("en-US")} certificate${certTotal === 1 ? "" : "s"}`;
  $("cert-prev").disabled = certPage <= 1;
  $("cert-next").disabled = certPage >= certPages;
}

function setupList() {
  const reload = () => loadCerts().catch(showError);
  let typing = null;
  $("cert-search").addEventListener("input", () => {
    certPage = 1;
    clearTimeout(typing);
    typing = setTimeout(reload, 250);
  });
  $("cert-status").addEventListener("change", () => {
    certPage = 1;
    reload();
  });
  $("cert-prev").addEventListener("click", () => {
    certPage = Math.max(1, certPage - 1);
    reload();
  });
  $("cert-next").addEventListener("click", () => {
    certPage += 1;
    reload();
  });
  const dialog = $("cert-detail");
  $("detail-close").addEventListener("click", () => dialog.close());
  disarmRevoke = armConfirm($("detail-revoke"), "Revoke", "Confirm revoke", async () => {
    const answer = await api("DELETE", `/zones/${zone.id}/client_certificates/${dialog.dataset.id}`);
    dialog.close();
    await loadCerts();
    // What stays active in its line of EST renewals, if anything.
    const said = (answer.messages ?? []).map((m) => m.message);
    toast(["Certificate revoked", ...said].join(". "));
  });
  $("detail-restore").addEventListener("click", (e) =>
    run(e.currentTarget, async () => {
      await api("PATCH", `/zones/${zone.id}/client_certificates/${dialog.dataset.id}`, { reactivate: true });
      dialog.close();
      await loadCerts();
      toast("Certificate restored");
    }),
  );
  loadCerts().catch(showError);
}

let disarmRevoke = () => {};

function openDetail(id) {
  const c = certs.find((x) => x.id === id);
  if (!c) return;
  const dialog = $("cert-detail");
  dialog.dataset.id = id;
  const fields = [
    ["Common name", c.common_name],
    ["Organization", c.organization],
    ["Organizational unit", c.organizational_unit],
    ["Country", c.country],
    ["Status", statusBadge(c.status)],
    ["Serial number", c.serial_number],
    ["SHA-256 fingerprint", c.fingerprint_sha256],
    ["Issued on", when(c.issued_on)],
    ["Expires on", when(c.expires_on)],
    ["Certificate authority", c.certificate_authority?.name],
    ["Id", c.id],
  ];
  const row = ([k, v]) => [h("dt", {}, k), h("dd", { class: typeof v === "string" && v.length > 30 ? "mono" : "" }, v || "—")];
  $("detail-list").replaceChildren(...fields.flatMap(row));
  // Its place in a line of EST renewals (`cert renew`), which only the certificate itself tells.
  api("GET", `/zones/${zone.id}/client_certificates/${id}`)
    .then(({ result }) => {
      if (dialog.dataset.id !== id) return;
      const line = [
        ["Renewed from", result?.renewed_from],
        ["Renewed as", result?.renewed_as],
      ].filter(([, v]) => v);
      $("detail-list").append(...line.flatMap(row));
    })
    .catch(showError);
  const revoked = c.status === "revoked";
  $("detail-revoke").hidden = !canWrite || revoked;
  $("detail-restore").hidden = !canWrite || !revoked;
  disarmRevoke();
  // Close has autofocus: the first key press must not revoke.
  openDialog(dialog);
}

async function loadByoca() {
  const table = $("byoca-table");
  try {
    const acc = await account();
    const all = (await api("GET", `/accounts/${acc}/mtls_certificates`)).result ?? [];
    // Client certificates for origins live in the same store; they are listed apart, and are no CAs.
    const list = all.filter((c) => c.ca !== false);
    renderOriginCerts(all.filter((c) => c.ca === false), acc);
    const used = await Promise.all(
      list.map((ca) => api("GET", `/accounts/${acc}/mtls_certificates/${ca.id}/associations`).then((d) => d.result ?? [])),
    );
    table.tBodies[0].replaceChildren(
      ...list.map((ca, i) => {
        const label = ca.name || ca.id;
        return h(
          "tr",
          { "data-id": ca.id },
          h("td", {}, label),
          h("td", {}, ca.issuer),
          h("td", { class: "nowrap" }, day(ca.expires_on)),
          crlCell(ca),
          h(
            "td",
            { class: "hosts-cell" },
            used[i].length ? used[i].map((a) => a.hostname).join(", ") : h("span", { class: "muted" }, "none"),
          ),
          h(
            "td",
            {},
            canWrite &&
              h(
                "div",
                { class: "row" },
                h("button", { type: "button", class: "btn btn-small", onclick: () => openCrl(ca) }, "Revocation", h("span", { class: "sr-only" }, ` of ${label}`)),
                h("button", { type: "button", class: "btn btn-small", onclick: () => openByocaHosts(ca).catch(showError) }, "Edit hostnames", h("span", { class: "sr-only" }, ` of ${label}`)),
                confirmButton("Delete", "Confirm delete", async () => {
                  await api("DELETE", `/accounts/${acc}/mtls_certificates/${ca.id}`);
                  toast("CA deleted");
                  await loadByoca();
                }),
              ),
          ),
        );
      }),
    );
    if (!list.length) emptyRow(table, 6, "No CAs uploaded.");
  } catch (error) {
    showError(error);
  }
}

// Seconds as hours for people: "2 h", "0.5 h".
function hours(seconds) {
  return `${+(seconds / 3600).toFixed(2)} h`;
}

// The revocation column: when the CRLs last changed and, for fetched ones, whether the last fetch worked; whether
// OCSP is asked; and whether out-of-date CRLs fail closed.
function crlCell(ca) {
  const updated = ca.crl_updated_on ? h("span", {}, `updated ${day(ca.crl_updated_on)}`) : h("span", { class: "muted" }, "none");
  const ocsp =
    ca.ocsp_check && ca.ocsp_check !== "off"
      ? [" ", h("span", { class: "badge badge-ok", title: ca.ocsp_responder ?? "each certificate's responder" }, `OCSP ${ca.ocsp_check}`)]
      : [];
  if (ca.crl_grace_seconds != null) {
    ocsp.push(
      " ",
      h(
        "span",
        { class: "badge badge-warn", title: "none of its certificates is trusted this long after a CRL's next update" },
        `fails closed +${hours(ca.crl_grace_seconds)}`,
      ),
    );
  }
  if (!ca.crl_urls?.length) return h("td", { class: "crl-cell" }, updated, ...ocsp);
  const state = ca.crl_fetch_error
    ? h("span", { class: "badge badge-danger", title: ca.crl_fetch_error }, "fetch failing")
    : h("span", { class: "badge badge-ok", title: ca.crl_urls.join(" ") }, ca.crl_fetched_on ? "fetched" : "fetching");
  return h("td", { class: "crl-cell" }, updated, " ", state, ...ocsp, ca.crl_fetch_error ? h("div", { class: "muted small" }, ca.crl_fetch_error) : null);
}

function renderOriginCerts(certs, acc) {
  const table = $("origin-certs-table");
  table.tBodies[0].replaceChildren(
    ...certs.map((cert) =>
      h(
        "tr",
        { "data-id": cert.id },
        h("td", {}, cert.name || cert.id),
        h("td", {}, cert.issuer),
        h("td", { class: "nowrap" }, day(cert.expires_on)),
        h(
          "td",
          {},
          canWrite &&
            confirmButton("Delete", "Confirm delete", async () => {
              await api("DELETE", `/accounts/${acc}/mtls_certificates/${cert.id}`);
              toast("Certificate deleted");
              await loadByoca();
            }),
        ),
      ),
    ),
  );
  if (!certs.length) emptyRow(table, 4, "None uploaded.");
}

function openCrl(ca) {
  const dialog = $("crl-dialog");
  dialog.dataset.id = ca.id;
  $("crl-ca-name").textContent = ca.name || ca.id;
  $("crl-form").reset();
  $("crl-urls").value = (ca.crl_urls ?? []).join("\n");
  $("ocsp-check").value = ca.ocsp_check ?? "off";
  $("ocsp-responder").value = ca.ocsp_responder ?? "";
  $("crl-grace").value = ca.crl_grace_seconds == null ? "" : String(+(ca.crl_grace_seconds / 3600).toFixed(4));
  $("crl-result").textContent = ca.crl_updated_on ? `The current CRLs date from ${when(ca.crl_updated_on)}.` : "No CRL yet.";
  $("edge-revocations").replaceChildren();
  openDialog(dialog);
  run($("revoke-save"), () => loadEdgeRevocations(ca.id));
}

// The certificates of uploaded CA `id` revoked at the edge, listed in the Revocation dialog with a way back.
async function loadEdgeRevocations(id) {
  const path = `/accounts/${await account()}/mtls_certificates/${id}/revocations`;
  const list = (await api("GET", path)).result ?? [];
  $("edge-revocations").replaceChildren(
    ...list.map((r) =>
      h(
        "li",
        { "data-serial": r.serial_number },
        h("code", { title: r.fingerprint_sha256 ? `SHA-256 ${r.fingerprint_sha256}` : undefined }, r.serial_number),
        " ",
        h(
          "span",
          { class: "muted small" },
          `${r.issuer ? `from ${r.issuer}, ` : ""}${day(r.created_on)}${r.note ? `: ${r.note}` : ""}`,
        ),
        " ",
        canWrite &&
          confirmButton("Take back", "Confirm take back", async () => {
            await api("DELETE", `${path}/${r.id}`);
            toast("Revocation taken back");
            await loadEdgeRevocations(id);
          }),
      ),
    ),
  );
  if (!list.length) $("edge-revocations").replaceChildren(h("li", { class: "muted" }, "None."));
}

// A CRL file as the API takes it: PEM text as is, DER as base64.
async function crlText(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  const text = new TextDecoder().decode(bytes);
  if (text.trimStart().startsWith("-----BEGIN")) return text;
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

async function openByocaHosts(ca) {
  const dialog = $("byoca-hosts-dialog");
  dialog.dataset.id = ca.id;
  $("byoca-hosts-name").textContent = ca.name || ca.id;
  $("byoca-hosts-zone").textContent = zone.name;
  const [names, current] = await Promise.all([
    api("GET", `/zones/${zone.id}/hostnames`).then((d) => (d.result ?? []).map((x) => x.hostname)),
    api("GET", `/zones/${zone.id}/certificate_authorities/hostname_associations?mtls_certificate_id=${encodeURIComponent(ca.id)}`).then(
      (d) => d.result?.hostnames ?? [],
    ),
  ]);
  const all = [...new Set([...names, ...current])].sort();
  $("byoca-hosts-list").replaceChildren(
    ...all.map((name) => h("li", {}, h("label", { class: "inline" }, h("input", { type: "checkbox", value: name, checked: current.includes(name) }), name))),
  );
  if (!all.length) $("byoca-hosts-list").replaceChildren(h("li", { class: "muted" }, "The zone has no hostnames yet."));
  openDialog(dialog);
}

function setupByoca() {
  $("byoca-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run(e.submitter, async () => {
      const body = { ca: true, certificates: $("byoca-pem").value.trim() };
      const name = $("byoca-name").value.trim();
      if (name) body.name = name;
      await api("POST", `/accounts/${await account()}/mtls_certificates`, body);
      e.target.reset();
      toast("CA uploaded");
      await loadByoca();
    });
  });
  $("origin-cert-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run(e.submitter, async () => {
      const body = { ca: false, certificates: $("origin-cert-pem").value.trim(), private_key: $("origin-cert-key").value.trim() };
      const name = $("origin-cert-name").value.trim();
      if (name) body.name = name;
      await api("POST", `/accounts/${await account()}/mtls_certificates`, body);
      e.target.reset();
      toast("Certificate uploaded");
      await loadByoca();
    });
  });
  const crlDialog = $("crl-dialog");
  $("crl-close").addEventListener("click", () => crlDialog.close());
  $("crl-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run($("crl-upload"), async () => {
      const file = $("crl-file").files[0];
      const crl = file ? await crlText(file) : $("crl-pem").value.trim();
      if (!crl) throw new Error("choose a CRL file or paste a PEM CRL");
      const result = (await api("PUT", `/accounts/${await account()}/mtls_certificates/${crlDialog.dataset.id}/crl`, { crl })).result;
      crlDialog.close();
      toast(`CRL accepted: ${plural(result.entries, "revoked certificate")}`);
      await loadByoca();
    });
  });
  $("crl-urls-save").addEventListener("click", (e) => {
    run(e.currentTarget, async () => {
      const urls = lines($("crl-urls").value);
      await api("PUT", `/accounts/${await account()}/mtls_certificates/${crlDialog.dataset.id}/crl_urls`, { urls });
      crlDialog.close();
      toast(urls.length ? `CRLs will be fetched from ${plural(urls.length, "URL")}` : "CRLs are no longer fetched");
      await loadByoca();
    });
  });
  $("revoke-save").addEventListener("click", (e) => {
    run(e.currentTarget, async () => {
      const given = $("revoke-cert").value.trim();
      if (!given) throw new Error("paste the certificate (PEM) or its serial number");
      // `openssl x509 -serial` prints "serial=…".
      const body = given.startsWith("-----BEGIN") ? { certificate: given } : { serial_number: given.replace(/^serial\s*=\s*/i, "").replace(/\s/g, "") };
      body.note = $("revoke-note").value.trim();
      const id = crlDialog.dataset.id;
      const revoked = (await api("POST", `/accounts/${await account()}/mtls_certificates/${id}/revocations`, body)).result;
      $("revoke-cert").value = "";
      $("revoke-note").value = "";
      toast(`Certificate ${revoked.serial_number} revoked at the edge`);
      await loadEdgeRevocations(id);
    });
  });
  $("ocsp-save").addEventListener("click", (e) => {
    run(e.currentTarget, async () => {
      const check = $("ocsp-check").value;
      const responder = $("ocsp-responder").value.trim() || null;
      await api("PUT", `/accounts/${await account()}/mtls_certificates/${crlDialog.dataset.id}/ocsp`, { check, responder });
      crlDialog.close();
      toast(check === "off" ? "OCSP checks are off" : `OCSP checks on (${check} fail)`);
      await loadByoca();
    });
  });
  $("crl-grace-save").addEventListener("click", (e) => {
    run(e.currentTarget, async () => {
      const text = $("crl-grace").value.trim();
      const grace_seconds = text === "" ? null : Math.round(Number(text) * 3600);
      if (grace_seconds !== null && !Number.isFinite(grace_seconds)) throw new Error(`${text} is not a number of hours`);
      await api("PUT", `/accounts/${await account()}/mtls_certificates/${crlDialog.dataset.id}/crl_grace`, { grace_seconds });
      crlDialog.close();
      toast(
        grace_seconds === null
          ? "Out-of-date CRLs stay in use"
          : `Certificates are refused ${hours(grace_seconds)} after a CRL's next update`,
      );
      await loadByoca();
    });
  });
  const hostsDialog = $("byoca-hosts-dialog");
  $("byoca-hosts-close").addEventListener("click", () => hostsDialog.close());
  $("byoca-hosts-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run($("byoca-hosts-save"), async () => {
      const hostnames = [...hostsDialog.querySelectorAll('input[type="checkbox"]:checked')].map((box) => box.value);
      await api("PUT", `/zones/${zone.id}/certificate_authorities/hostname_associations`, {
        hostnames,
        mtls_certificate_id: hostsDialog.dataset.id,
      });
      hostsDialog.close();
      toast("Hostnames saved");
      await loadByoca();
    });
  });
}

// ---------- Create a mTLS rule ----------

function quote(text) {
  return `"${text.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

export function mtlsExpression(paths, hostnames) {
  let expression = `(not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {${paths.map(quote).join(" ")}}`;
  // http.host is lower-case without a trailing dot; a wildcard hostname is no value of it, but a pattern for
  // the wildcard operator.
  const names = hostnames.map((n) => n.trim().replace(/\.+$/, "").toLowerCase());
  const exact = names.filter((n) => !n.startsWith("*."));
  const tests = names.filter((n) => n.startsWith("*.")).map((n) => `http.host wildcard ${quote(n)}`);
  if (exact.length) tests.unshift(`http.host in {${exact.map(quote).join(" ")}}`);
  if (tests.length === 1) expression += ` and ${tests[0]}`;
  if (tests.length > 1) expression += ` and (${tests.join(" or ")})`;
  return expression;
}

async function mtlsRulePage() {
  const expression = $("rule-expression");
  const diagnostic = $("rule-diagnostic");
  const editId = new URLSearchParams(window.location.search).get("edit");
  let timer = null;
  let sequence = 0;
  const validate = async () => {
    const mine = (sequence += 1);
    try {
      const result = (await api("POST", "/rules/validate", { expression: expression.value })).result;
      if (mine !== sequence) return;
      diagnostic.className = `diagnostic ${result.valid ? "ok" : "bad"}`;
      diagnostic.textContent = result.valid ? "✓ Valid expression" : result.diagnostic;
      expression.setAttribute("aria-invalid", String(!result.valid));
    } catch (error) {
      if (mine !== sequence) return;
      diagnostic.className = "diagnostic bad";
      diagnostic.textContent = `The expression could not be checked: ${error.message}`;
      expression.removeAttribute("aria-invalid");
    }
  };
  const schedule = () => {
    clearTimeout(timer);
    timer = setTimeout(validate, 250);
  };
  // The zone's hostnames, and those with mTLS (by any CA): filled in below for a new rule.
  let zoneHosts = [];
  let mtlsHosts = [];
  const warnHosts = () => {
    const warning = $("rule-hosts-warning");
    const listed = lines($("rule-hosts").value);
    const without = zoneHosts.filter((name) => !mtlsHosts.includes(name));
    if (!listed.length && without.length) {
      const text =
        `With no hostnames the rule covers every hostname of the zone, including ${without.join(", ")} ` +
        `without mTLS: their clients are never asked for a certificate, so the rule blocks these paths there for everyone. ` +
        `List the mTLS hostnames${mtlsHosts.length ? ` (${mtlsHosts.join(", ")})` : ""} to limit it to them.`;
      // Set only when it changes, so that a screen reader announces it once, not per keystroke.
      if (warning.textContent !== text) warning.textContent = text;
      warning.hidden = false;
    } else {
      warning.hidden = true;
      warning.textContent = "";
    }
  };
  const rebuild = () => {
    expression.value = mtlsExpression(lines($("rule-paths").value), lines($("rule-hosts").value));
    warnHosts();
    schedule();
  };
  // Hidden controls are disabled too, so that the browser's form validation never stops Deploy on a field the user
  // cannot see.
  const showCustom = () => {
    const blocks = $("rule-action").value === "block";
    const custom = blocks && $("rule-custom").checked;
    $("rule-custom-set").hidden = !blocks;
    $("rule-custom").disabled = !blocks;
    $("rule-custom-fields").hidden = !custom;
    for (const el of $("rule-custom-fields").querySelectorAll("input, select, textarea")) el.disabled = !custom;
    const skips = $("rule-action").value === "skip";
    $("rule-skip-set").hidden = !skips;
    for (const el of $("rule-skip-set").querySelectorAll("input")) el.disabled = !skips;
  };
  const bodySize = () => {
    const size = new TextEncoder().encode($("rule-body").value).length;
    $("rule-body-size").textContent = `${size} of 2048 bytes`;
    $("rule-body-size").classList.toggle("too-long", size > 2048);
    $("rule-body").setAttribute("aria-invalid", String(size > 2048));
    if (size <= 2048 && /2 KiB/.test($("page-error").textContent)) clearError();
  };
  $("rule-paths").addEventListener("input", rebuild);
  $("rule-hosts").addEventListener("input", rebuild);
  expression.addEventListener("input", schedule);
  $("rule-custom").addEventListener("change", showCustom);
  $("rule-action").addEventListener("change", showCustom);
  $("rule-body").addEventListener("input", bodySize);

  let ruleset = null;
  const loadRuleset = async () => {
    try {
      return (await api("GET", `/zones/${zone.id}/rulesets/phases/${PHASE}/entrypoint`)).result;
    } catch (error) {
      if (error.status !== 404) throw error;
      return null;
    }
  };
  let editing = null;
  if (editId) {
    ruleset = await loadRuleset();
    editing = ruleset?.rules.find((r) => r.id === editId) ?? null;
    if (!editing) throw new Error(`rule ${editId} was not found in this zone's custom rules`);
    document.title = "Edit rule · Portcullis";
    for (const link of document.querySelectorAll("nav.side a")) {
      if (link.getAttribute("href") === "/dashboard/rules") link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    document.querySelector("main h1").textContent = "Edit rule";
    $("rule-intro").textContent = "Change the rule and save it. The expression is checked as you type; the rule keeps its place in the order.";
    $("rule-builder").hidden = true;
    $("rule-name").value = editing.description;
    expression.value = editing.expression;
    $("rule-action").value = editing.action;
    const response = editing.action_parameters?.response;
    $("rule-custom").checked = Boolean(response);
    if (response) {
      $("rule-status").value = String(response.status_code ?? 403);
      $("rule-type").value = response.content_type ?? "text/plain";
      $("rule-body").value = response.content ?? "";
    }
    if (editing.action === "skip") {
      // A skip without parameters (from the API) skips the remaining rules.
      const params = editing.action_parameters ?? {};
      $("rule-skip-rest").checked = params.ruleset === "current" || !params.phases;
      $("rule-skip-ratelimit").checked = (params.phases ?? []).includes("http_ratelimit");
    }
    $("rule-deploy").textContent = "Save rule";
    schedule();
  } else {
    // As Cloudflare's dialog does: the rule starts limited to the hostnames that ask for a certificate.
    const [names, coverage] = await Promise.all([
      api("GET", `/zones/${zone.id}/hostnames`).then((d) => (d.result ?? []).map((x) => x.hostname)),
      mtlsCoverage(),
    ]);
    zoneHosts = names;
    mtlsHosts = [...coverage.keys()];
    $("rule-hosts").value = mtlsHosts.join("\n");
    $("rule-hosts").placeholder = "api.example.com";
    rebuild();
  }
  showCustom();
  bodySize();

  $("rule-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run($("rule-deploy"), async () => {
      const action = $("rule-action").value;
      const rule = { description: $("rule-name").value.trim(), expression: expression.value, action };
      let parameters;
      if (action === "block") {
        if ($("rule-custom").checked) {
          const status = Number($("rule-status").value);
          if (!Number.isInteger(status) || status < 400 || status > 499) throw new Error("the custom response status must be between 400 and 499");
          const content = $("rule-body").value;
          if (new TextEncoder().encode(content).length > 2048) throw new Error("the custom response body must be at most 2 KiB (2048 bytes)");
          parameters = { response: { status_code: status, content_type: $("rule-type").value, content } };
        } else {
          parameters = {};
        }
      } else if (action === "skip") {
        parameters = {};
        if ($("rule-skip-rest").checked) parameters.ruleset = "current";
        if ($("rule-skip-ratelimit").checked) parameters.phases = ["http_ratelimit"];
        if (!Object.keys(parameters).length) throw new Error("choose what the skip rule skips: the remaining custom rules, the rate limiting rules, or both");
      }
      if (editing) {
        // Refuse to overwrite someone else's change made since this page loaded.
        const now = (await loadRuleset())?.rules.find((r) => r.id === editing.id);
        if (!now) throw new Error("this rule was deleted meanwhile");
        if (now.version !== editing.version) throw new Error("this rule was changed meanwhile (by another session or the API): reload the page to edit the current version");
        await api("PATCH", `/zones/${zone.id}/rulesets/${ruleset.id}/rules/${editing.id}`, { ...rule, ...(parameters ? { action_parameters: parameters } : {}) });
        window.location.assign("/dashboard/rules?saved=1");
        return;
      }
      rule.enabled = true;
      if (parameters && Object.keys(parameters).length) rule.action_parameters = parameters;
      ruleset = await loadRuleset();
      if (ruleset) await api("POST", `/zones/${zone.id}/rulesets/${ruleset.id}/rules`, rule);
      else await api("PUT", `/zones/${zone.id}/rulesets/phases/${PHASE}/entrypoint`, { rules: [rule] });
      window.location.assign("/dashboard/rules?deployed=1");
    });
  });
}

// ---------- Security rules ----------

/** What a skip rule skips, in the dialog's words. */
function skipSummary(params) {
  const parts = [];
  if (!params || params.ruleset === "current" || !params.phases) parts.push("remaining rules");
  if ((params?.phases ?? []).includes("http_ratelimit")) parts.push("rate limits");
  return parts.join(" + ");
}

async function rulesPage() {
  const query = new URLSearchParams(window.location.search);
  if (query.get("deployed")) toast("Rule deployed");
  if (query.get("saved")) toast("Rule saved");
  setupRateLimits();
  setupUrlNormalization();
  await Promise.all([loadRules(), loadRateLimits(), loadUrlNormalization()]);
}

const RATELIMIT_PHASE = "http_ratelimit";
const RATELIMIT_PER = {
  cert: ["cf.tls_client_auth.cert_fingerprint_sha256", "cf.tls_client_auth.cert_verified"],
  ip: ["ip.src", "true"],
};

// What a rate limit counts per, in words, from its characteristics (besides cf.colo.id).
function perWhat(characteristics) {
  const key = characteristics.find((c) => c !== "cf.colo.id") ?? "";
  if (key === "cf.tls_client_auth.cert_fingerprint_sha256") return "client certificate";
  if (key === "ip.src") return "IP address";
  const header = /^http\.request\.headers\["(.*)"\]$/.exec(key);
  return header ? `header ${header[1]}` : key;
}

const duration = (seconds) =>
  seconds % 3600 === 0 ? plural(seconds / 3600, "hour") : seconds % 60 === 0 ? plural(seconds / 60, "minute") : plural(seconds, "second");

function setupRateLimits() {
  const per = $("rl-per");
  const header = $("rl-header");
  per.addEventListener("change", () => {
    header.disabled = per.value !== "header";
    header.required = per.value === "header";
    // The default expression follows what is counted, unless it was edited.
    const expression = $("rl-expression");
    const defaults = ["cf.tls_client_auth.cert_verified", "true"];
    if (defaults.includes(expression.value.trim())) expression.value = per.value === "cert" ? defaults[0] : defaults[1];
  });
  $("rl-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run(e.submitter, async () => {
      const name = header.value.trim().toLowerCase();
      const characteristic = per.value === "header" ? `http.request.headers[${quote(name)}]` : RATELIMIT_PER[per.value][0];
      const rule = {
        description: $("rl-name").value.trim(),
        expression: $("rl-expression").value.trim() || "true",
        action: $("rl-action").value,
        ratelimit: {
          characteristics: ["cf.colo.id", characteristic],
          period: Number($("rl-period").value),
          requests_per_period: Number($("rl-requests").value),
          mitigation_timeout: Number($("rl-timeout").value),
        },
      };
      await addRateLimit(rule);
      $("rl-name").value = "";
      toast("Rate limit added");
      await loadRateLimits();
    });
  });
}

// The zone's rate-limiting ruleset, or null: found in the list of rulesets, so that a zone without one costs no 404.
async function rateLimitRuleset() {
  const summary = ((await api("GET", `/zones/${zone.id}/rulesets`)).result ?? []).find((r) => r.phase === RATELIMIT_PHASE);
  return summary ? (await api("GET", `/zones/${zone.id}/rulesets/${summary.id}`)).result : null;
}

// Adds `rule` to the zone's rate-limiting ruleset, creating the ruleset if there is none. The create is refused (409)
// when someone else created it meanwhile; then the rule is added to theirs instead of replacing their rules.
async function addRateLimit(rule) {
  const existing = await rateLimitRuleset();
  if (!existing) {
    try {
      await api("POST", `/zones/${zone.id}/rulesets`, { kind: "zone", phase: RATELIMIT_PHASE, name: "default", rules: [rule] });
      return;
    } catch (error) {
      if (error.status !== 409) throw error;
    }
  }
  const ruleset = existing ?? (await rateLimitRuleset());
  await api("POST", `/zones/${zone.id}/rulesets/${ruleset.id}/rules`, rule);
}

async function loadRateLimits() {
  const table = $("rl-table");
  const ruleset = await rateLimitRuleset();
  const rules = ruleset?.rules ?? [];
  table.tBodies[0].replaceChildren(
    ...rules.map((rule) => {
      const rl = rule.ratelimit ?? {};
      const over =
        rule.action === "log"
          ? "log only"
          : rl.mitigation_timeout
            ? `429 for ${duration(rl.mitigation_timeout)}`
            : "429 (throttled)";
      return h(
        "tr",
        { "data-id": rule.id },
        h("td", {}, rule.description || rule.id),
        h("td", { class: "mono expr" }, rule.expression),
        h("td", {}, `${Number(rl.requests_per_period).toLocaleString("en-US")} per ${duration(rl.period)}`),
        h("td", {}, perWhat(rl.characteristics ?? [])),
        h("td", {}, over),
        h(
          "td",
          {},
          canWrite &&
            confirmButton("Delete", "Confirm delete", async () => {
              await api("DELETE", `/zones/${zone.id}/rulesets/${ruleset.id}/rules/${rule.id}`);
              toast("Rate limit deleted");
              await loadRateLimits();
            }),
        ),
      );
    }),
  );
  if (!rules.length) emptyRow(table, 6, "No rate limits.");
}

function setupUrlNormalization() {
  if (!canWrite) {
    $("un-scope").disabled = true;
    $("un-type").disabled = true;
  }
  $("un-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run($("un-save"), async () => {
      await api("PUT", `/zones/${zone.id}/url_normalization`, { scope: $("un-scope").value, type: $("un-type").value });
      toast("URL normalization saved");
      await loadUrlNormalization();
    });
  });
}

async function loadUrlNormalization() {
  const current = (await api("GET", `/zones/${zone.id}/url_normalization`)).result;
  $("un-scope").value = current.scope;
  $("un-type").value = current.type;
}

// Renders the rules; `focus` names the control ({ id, control }) to give keyboard focus back to after a re-render.
async function loadRules(focus = null) {
  const table = $("rules-table");
  let ruleset = null;
  try {
    ruleset = (await api("GET", `/zones/${zone.id}/rulesets/phases/${PHASE}/entrypoint`)).result;
  } catch (error) {
    if (error.status !== 404) throw error;
  }
  const rules = ruleset?.rules ?? [];
  const path = (rule) => `/zones/${zone.id}/rulesets/${ruleset.id}/rules/${rule.id}`;
  const patch = (rule, body, control) => async () => {
    await api("PATCH", path(rule), body);
    await loadRules({ id: rule.id, control });
  };
  // A failed save must not leave the switch showing a state that was not saved.
  const toggle = (rule, box) => async () => {
    try {
      await api("PATCH", path(rule), { enabled: box.checked });
    } catch (error) {
      box.checked = rule.enabled;
      box.nextSibling.textContent = rule.enabled ? "On" : "Off";
      loadRules({ id: rule.id, control: "enabled" }).catch(() => {});
      throw error;
    }
    await loadRules({ id: rule.id, control: "enabled" });
  };
  table.tBodies[0].replaceChildren(
    ...rules.map((rule, i) =>
      h(
        "tr",
        { "data-id": rule.id },
        h("td", {}, String(i + 1)),
        h("td", {}, rule.description || rule.id),
        h("td", { class: "mono expr" }, rule.expression),
        h("td", {}, statusBadge(rule.action), rule.action === "skip" ? h("span", { class: "muted small" }, " ", skipSummary(rule.action_parameters)) : ""),
        h(
          "td",
          {},
          h(
            "label",
            { class: "inline" },
            h("input", {
              type: "checkbox",
              checked: rule.enabled,
              disabled: !canWrite,
              "data-control": "enabled",
              onchange: (e) => run(e.target, toggle(rule, e.target)),
            }),
            rule.enabled ? "On" : "Off",
          ),
        ),
        h(
          "td",
          {},
          h(
            "div",
            { class: "row" },
            canWrite && [
            h("button", { type: "button", class: "btn btn-small", disabled: i === 0, "data-control": "up", "aria-label": `Move ${rule.description || rule.id} up`, onclick: (e) => run(e.currentTarget, patch(rule, { position: { before: rules[i - 1]?.id } }, "up")) }, "↑"),
            h("button", { type: "button", class: "btn btn-small", disabled: i === rules.length - 1, "data-control": "down", "aria-label": `Move ${rule.description || rule.id} down`, onclick: (e) => run(e.currentTarget, patch(rule, { position: { after: rules[i + 1]?.id } }, "down")) }, "↓"),
            h("a", { class: "btn btn-small", href: `/dashboard/mtls-rule?edit=${encodeURIComponent(rule.id)}` }, "Edit", h("span", { class: "sr-only" }, ` ${rule.description || rule.id}`)),
            confirmButton("Delete", "Confirm delete", async () => {
              await api("DELETE", path(rule));
              toast("Rule deleted");
              await loadRules();
            }),
            ],
          ),
        ),
      ),
    ),
  );
  if (!rules.length) emptyRow(table, 6, "No rules yet: Create a mTLS rule.");
  if (focus) {
    // The same control of the same rule; a move button that is now disabled (top or bottom) hands over to the other.
    const row = [...table.tBodies[0].rows].find((r) => r.dataset.id === focus.id);
    const controls = [focus.control, "up", "down", "enabled"].map((c) => row?.querySelector(`[data-control="${c}"]`));
    controls.find((el) => el && !el.disabled)?.focus();
  }
}

// ---------- Security events ----------

async function eventsPage() {
  const ruleNames = new Map();
  try {
    const ruleset = (await api("GET", `/zones/${zone.id}/rulesets/phases/${PHASE}/entrypoint`)).result;
    for (const rule of ruleset?.rules ?? []) ruleNames.set(rule.id, rule.description || rule.id);
  } catch {
    // No rules yet: events show rule ids.
  }
  // The host filter offers the zone's hostnames (the API matches the host exactly).
  const hostFilter = $("ev-host");
  const names = ((await api("GET", `/zones/${zone.id}/hostnames`)).result ?? []).map((x) => x.hostname).sort();
  hostFilter.append(...names.map((name) => h("option", { value: name }, name)));

  // Each refresh has a number: an older response that arrives late never replaces a newer one.
  let sequence = 0;
  // The filters and event ids of the last rendered list, to announce only events that are new under the same filters.
  let shownFilters = null;
  let shownIds = new Set();
  const refresh = async () => {
    const mine = (sequence += 1);
    const query = new URLSearchParams({ per_page: "100" });
    if (hostFilter.value) query.set("host", hostFilter.value);
    if ($("ev-action").value) query.set("action", $("ev-action").value);
    if ($("ev-status").value) query.set("mtls_status", $("ev-status").value);
    try {
      const events = (await api("GET", `/zones/${zone.id}/security/events?${query}`)).result ?? [];
      if (mine !== sequence) return;
      const table = $("events-table");
      table.tBodies[0].replaceChildren(
        ...events.map((ev) =>
          h(
            "tr",
            { "data-id": ev.id },
            h("td", {}, when(ev.occurred_at)),
            h("td", {}, statusBadge(ev.action), " ", String(ev.status_code)),
            h("td", {}, ev.host),
            h("td", { class: "mono nowrap" }, `${ev.method} ${ev.path}`),
            h("td", { class: "mono nowrap" }, ev.client_ip),
            // Why the certificate was not trusted (OpenSSL's words), under the status it led to.
            h("td", {}, statusBadge(ev.mtls_status), ev.cert_verify_error ? h("div", { class: "muted small verify-error" }, ev.cert_verify_error) : null),
            h(
              "td",
              { class: "mono", title: [ev.cert_subject_dn, ev.cert_fingerprint_sha256].filter(Boolean).join("\n") || undefined },
              ev.cert_fingerprint_sha256 ? `${ev.cert_fingerprint_sha256.slice(0, 16)}…` : "—",
              ev.cert_subject_dn ? h("div", { class: "muted small subject" }, ev.cert_subject_dn) : null,
            ),
            h("td", { title: ev.rule_id ?? undefined }, ev.rule_id ? (ruleNames.get(ev.rule_id) ?? ev.rule_id) : "—"),
          ),
        ),
      );
      if (!events.length) emptyRow(table, 8, "No security events match.");
      $("ev-updated").textContent = `Updated ${new Date().toLocaleTimeString()} · ${events.length} event${events.length === 1 ? "" : "s"}`;
      // Screen readers hear about new events only, not about every refresh.
      const filters = query.toString();
      const fresh = filters === shownFilters ? events.filter((ev) => !shownIds.has(ev.id)).length : 0;
      if (fresh) $("ev-announce").textContent = `${plural(fresh, "new security event")}`;
      shownFilters = filters;
      shownIds = new Set(events.map((ev) => ev.id));
      clearError();
    } catch (error) {
      if (mine === sequence) showError(error);
    }
  };
  // Filter changes wait a moment, so that quick changes (keyboard in a select) send one request.
  let debounce = null;
  const refreshSoon = () => {
    clearTimeout(debounce);
    debounce = setTimeout(refresh, 250);
  };
  for (const id of ["ev-host", "ev-action", "ev-status"]) $(id).addEventListener("change", refreshSoon);
  setInterval(() => {
    if ($("ev-auto").checked && document.visibilityState === "visible") refresh();
  }, 3000);
  await refresh();
}

// ---------- Hostnames ----------

async function hostnamesPage() {
  $("hn-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run(e.submitter, async () => {
      await api("POST", `/zones/${zone.id}/hostnames`, {
        hostname: $("hn-name").value.trim(),
        origin: $("hn-origin").value.trim(),
        additional_origins: lines($("hn-more").value),
        origin_steering: $("hn-steering").value,
        origin_health_check: healthCheck("hn-check-path", "hn-check-interval"),
        tls_client_auth: $("hn-mode").value,
        client_certificate_forwarding: checkedStyles("hn-forward"),
        min_tls_version: $("hn-min-tls").value,
        origin_http2: $("hn-h2").checked,
        origin_host_header: $("hn-host-header").value.trim() || null,
      });
      e.target.reset();
      toast("Hostname added");
      await loadHostnames();
    });
  });
  setupHostEdit();
  setupServerCerts();
  setupAcme();
  for (const box of $("mh-set").querySelectorAll("input[type=checkbox]")) {
    // Read-only sessions see the settings without changing them.
    box.disabled = !canWrite;
    box.addEventListener("change", (e) => {
      const { checked: enabled, value: id } = e.target;
      const name = e.target.closest("label").textContent.replace(/\s+/g, " ").trim();
      run(e.target, async () => {
        try {
          await api("PATCH", `/zones/${zone.id}/managed_headers`, {
            [`managed_${e.target.dataset.kind}_headers`]: [{ id, enabled }],
          });
        } catch (error) {
          // The box shows what is stored.
          e.target.checked = !enabled;
          throw error;
        }
        toast(`${name}: ${enabled ? "on" : "off"}`);
      });
    });
  }
  await Promise.all([loadHostnames(), loadOriginCerts()]);
}

// ---------- Server certificates (on the Hostnames page) ----------

/** The text of the file chosen in `input`, or an error naming what is missing. */
async function pemOf(input, what) {
  const file = input.files?.[0];
  if (!file) throw new Error(`choose the ${what} file`);
  if (file.size > 256 * 1024) throw new Error(`the ${what} file is over 256 KiB: it is not a PEM certificate or key`);
  return file.text();
}

function renderServerCerts(custom, packs) {
  const table = $("sc-table");
  // A pack's certificate is renewed by the server, and the API refuses to replace or delete it by hand.
  const byAcme = new Set(packs.map((p) => p.primary_certificate).filter(Boolean));
  table.tBodies[0].replaceChildren(
    ...custom.map((cert) =>
      h(
        "tr",
        { "data-id": cert.id },
        h("td", { class: "mono" }, cert.hosts.join(", ")),
        h("td", {}, cert.issuer),
        h("td", { class: "nowrap" }, day(cert.expires_on)),
        h("td", { class: "nowrap" }, day(cert.modified_on)),
        h(
          "td",
          {},
          byAcme.has(cert.id) && h("span", { class: "badge badge-ok" }, "ACME"),
          canWrite &&
            !byAcme.has(cert.id) &&
            h(
              "div",
              { class: "row" },
              h("button", { type: "button", class: "btn btn-small", onclick: () => openReplace(cert) }, "Replace", h("span", { class: "sr-only" }, ` the certificate for ${cert.hosts.join(", ")}`)),
              confirmButton("Delete", "Confirm delete", async () => {
                await api("DELETE", `/zones/${zone.id}/custom_certificates/${cert.id}`);
                toast("Server certificate deleted");
                await loadHostnames();
              }),
            ),
        ),
      ),
    ),
  );
  if (!custom.length) emptyRow(table, 5, "None uploaded: every hostname gets a certificate from the development edge CA.");
}

const ACME_STATUS = {
  initializing: ["badge-muted", "waiting"],
  pending_validation: ["badge-warn", "being validated"],
  active: ["badge-ok", "active"],
  expired: ["badge-danger", "expired"],
};

function renderAcme(packs) {
  const table = $("acme-table");
  table.tBodies[0].replaceChildren(
    ...packs.map((pack) => {
      const names = pack.hosts.join(", ");
      const failing = pack.validation_errors.length > 0;
      let [badge, label] = ACME_STATUS[pack.status] ?? ["badge-muted", pack.status];
      if (failing && pack.status === "pending_validation") [badge, label] = ["badge-danger", "failing, will retry"];
      if (failing && pack.status === "active") [badge, label] = ["badge-warn", "active, renewal failing"];
      return h(
        "tr",
        { "data-id": pack.id },
        h("td", { class: "mono" }, names),
        h("td", {}, { txt: "DNS", http: "HTTP" }[pack.validation_method] ?? "TLS-ALPN"),
        h("td", {}, h("span", { class: `badge ${badge}` }, label)),
        h("td", { class: "nowrap" }, pack.expires_on ? day(pack.expires_on) : "—"),
        h(
          "td",
          { class: "small" },
          failing ? pack.validation_errors.map((e) => e.message).join("; ") : "",
          failing && pack.next_attempt_on ? h("span", { class: "muted" }, ` (next try ${when(pack.next_attempt_on)})`) : "",
        ),
        h(
          "td",
          {},
          canWrite &&
            h(
              "div",
              { class: "row" },
              failing &&
                h("button", {
                  type: "button",
                  class: "btn btn-small",
                  onclick: (e) =>
                    run(e.currentTarget, async () => {
                      await api("PATCH", `/zones/${zone.id}/ssl/certificate_packs/${pack.id}`, {});
                      toast(`Trying ${names} again now`);
                      await loadHostnames();
                    }),
                }, "Retry now", h("span", { class: "sr-only" }, ` for ${names}`)),
              confirmButton("Remove", "Confirm remove", async () => {
                await api("DELETE", `/zones/${zone.id}/ssl/certificate_packs/${pack.id}`);
                toast(`Certificate for ${names} removed`);
                await loadHostnames();
              }),
            ),
        ),
      );
    }),
  );
  if (!packs.length) emptyRow(table, 6, "None ordered.");
}

function renderAcmeDns(settings) {
  const current = $("acme-dns-current");
  if (!settings) {
    current.replaceChildren("None: names are validated with TLS-ALPN-01, and wildcards cannot be ordered.");
    $("acme-dns-remove").replaceChildren();
    return;
  }
  current.replaceChildren(
    h("span", { class: "badge badge-ok" }, "on"),
    ` Orders are validated over DNS through ${settings.server} (zone ${settings.dns_zone}), key ${settings.key_name} (${settings.algorithm}), ${settings.propagation_seconds} s for secondaries.`,
  );
  $("acme-dns-remove").replaceChildren(
    canWrite
      ? confirmButton("Remove DNS settings", "Confirm remove", async () => {
          await api("DELETE", `/zones/${zone.id}/ssl/acme_dns`);
          toast("DNS settings removed");
          await loadHostnames();
        })
      : "",
  );
}

function setupAcme() {
  $("acme-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run($("acme-order"), async () => {
      const hosts = $("acme-hosts").value.split(/[\s,]+/).filter(Boolean);
      const body = { type: "advanced", hosts };
      if ($("acme-method").value) body.validation_method = $("acme-method").value;
      const created = await api("POST", `/zones/${zone.id}/ssl/certificate_packs/order`, body);
      e.target.reset();
      toast(`Certificate for ${created.result.hosts.join(", ")} ordered`);
      await loadHostnames();
    });
  });
  $("acme-dns-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run($("acme-dns-save"), async () => {
      const body = {
        server: $("acme-dns-server").value.trim(),
        key_name: $("acme-dns-key").value.trim(),
        algorithm: $("acme-dns-alg").value,
        secret: $("acme-dns-secret").value.trim(),
        propagation_seconds: Number($("acme-dns-wait").value || 0),
      };
      const dnsZone = $("acme-dns-zone").value.trim();
      if (dnsZone) body.dns_zone = dnsZone;
      await api("PUT", `/zones/${zone.id}/ssl/acme_dns`, body);
      e.target.reset();
      toast("DNS settings saved");
      await loadHostnames();
    });
  });
}

function openReplace(cert) {
  const dialog = $("sc-dialog");
  dialog.dataset.id = cert.id;
  $("sc-replace-name").textContent = cert.hosts.join(", ");
  $("sc-replace-form").reset();
  openDialog(dialog);
  $("sc-replace-cert").focus();
}

function setupServerCerts() {
  $("sc-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run($("sc-upload"), async () => {
      const certificate = await pemOf($("sc-cert"), "certificate");
      const privateKey = await pemOf($("sc-key"), "private key");
      const created = await api("POST", `/zones/${zone.id}/custom_certificates`, { certificate, private_key: privateKey });
      e.target.reset();
      toast(`Server certificate for ${created.result.hosts.join(", ")} uploaded`);
      await loadHostnames();
    });
  });
  const dialog = $("sc-dialog");
  $("sc-replace-cancel").addEventListener("click", () => dialog.close());
  $("sc-replace-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run($("sc-replace-save"), async () => {
      const certificate = await pemOf($("sc-replace-cert"), "certificate");
      const privateKey = await pemOf($("sc-replace-key"), "private key");
      await api("PATCH", `/zones/${zone.id}/custom_certificates/${dialog.dataset.id}`, { certificate, private_key: privateKey });
      dialog.close();
      toast("Server certificate replaced");
      await loadHostnames();
    });
  });
}

// Which certificate the edge serves for `hostname`, as src/edge.rs picks it: the newest uploaded certificate of the
// zone that covers the name (exactly, or by a one-label wildcard), else one from the development edge CA.
export function covers(pattern, hostname) {
  const p = pattern.toLowerCase();
  if (p.startsWith("*.")) {
    const dot = hostname.indexOf(".");
    return dot > 0 && hostname.slice(dot + 1) === p.slice(2);
  }
  return p === hostname;
}

function serverCertCell(host, custom) {
  const cert = custom.find((c) => c.hosts.some((pattern) => covers(pattern, host.hostname)));
  if (!cert) return h("td", {}, h("span", { class: "badge badge-muted" }, "development edge CA"));
  const expires = Date.parse(cert.expires_on);
  const soon = expires - Date.now() < 30 * 24 * 3600 * 1000;
  return h(
    "td",
    { title: `Certificate ${cert.id}, issued by ${cert.issuer}` },
    h("span", { class: "mono" }, cert.hosts.join(", ")),
    h("br"),
    h("span", { class: soon ? "badge badge-warn" : "muted small" }, `expires ${day(cert.expires_on)}`),
    " ",
    h("span", { class: "muted small" }, `· ${cert.issuer}`),
  );
}

let hostList = [];

// The mTLS column: on (with the CAs whose certificates the edge accepts for the host) or off.
function mtlsCell(cas) {
  if (!cas?.length) return h("td", {}, h("span", { class: "badge badge-muted" }, "off"));
  return h("td", {}, h("span", { class: "badge badge-ok" }, "on"), " ", h("span", { class: "muted small mtls-cas" }, cas.join(", ")));
}

async function loadHostnames() {
  const customPages = async () => {
    const all = [];
    for (let page = 1; page < 100; page += 1) {
      const data = await api("GET", `/zones/${zone.id}/custom_certificates?per_page=1000&page=${page}`);
      all.push(...(data.result ?? []));
      if (page >= (data.result_info?.total_pages ?? 1)) break;
    }
    return all;
  };
  const [list, associated, custom, packs, acmeDns, managed] = await Promise.all([
    api("GET", `/zones/${zone.id}/hostnames`).then((d) => d.result ?? []),
    mtlsCoverage(),
    customPages(),
    api("GET", `/zones/${zone.id}/ssl/certificate_packs`).then((d) => d.result ?? []),
    api("GET", `/zones/${zone.id}/ssl/acme_dns`).then((d) => d.result ?? null),
    api("GET", `/zones/${zone.id}/managed_headers`).then((d) => d.result),
  ]);
  for (const box of $("mh-set").querySelectorAll("input[type=checkbox]")) {
    box.checked = !!managed?.[`managed_${box.dataset.kind}_headers`]?.some((t) => t.id === box.value && t.enabled);
  }
  renderServerCerts(custom, packs);
  renderAcme(packs);
  renderAcmeDns(acmeDns);
  hostList = list;
  const table = $("hn-table");
  const forwarding = { none: "none", cloudflare: "Cloudflare headers", cf_cert_headers: "cf-cert-* headers", rfc9440: "RFC 9440", xfcc: "X-Forwarded-Client-Cert", xfcc_cert: "X-Forwarded-Client-Cert with the certificate" };
  table.tBodies[0].replaceChildren(
    ...list.map((host) =>
      h(
        "tr",
        { "data-id": host.id },
        h("td", {}, host.hostname),
        originCell(host),
        serverCertCell(host, custom),
        mtlsCell(associated.get(host.hostname)),
        h("td", {}, host.tls_client_auth),
        h(
          "td",
          {},
          [host.client_certificate_forwarding].flat().map((style) => forwarding[style] ?? style).join(", "),
          Object.keys(host.client_certificate_headers ?? {}).length
            ? h("div", { class: "muted small mono cert-headers" }, Object.keys(host.client_certificate_headers).join(", "))
            : null,
        ),
        h(
          "td",
          {},
          canWrite &&
            h(
              "div",
              { class: "row" },
              h("button", { type: "button", class: "btn btn-small", onclick: () => openHostEdit(host.id) }, "Edit", h("span", { class: "sr-only" }, ` ${host.hostname}`)),
              confirmButton("Delete", "Confirm delete", async () => {
                await api("DELETE", `/zones/${zone.id}/hostnames/${host.id}`);
                toast("Hostname deleted");
                await loadHostnames();
              }),
            ),
        ),
      ),
    ),
  );
  if (!list.length) emptyRow(table, 7, "No hostnames yet.");
}

/** The health check the path and interval fields describe, or null for none (an empty path). A timeout set
 *  before (through the API or the CLI; the form has no field for it) is kept while it fits the interval. */
function healthCheck(pathId, intervalId, previous = null) {
  const path = $(pathId).value.trim();
  if (!path) return null;
  const check = { path };
  const interval = $(intervalId).value.trim();
  if (interval) check.interval = Number(interval);
  if (previous?.timeout && previous.timeout <= (check.interval ?? 10)) check.timeout = previous.timeout;
  return check;
}

/** The forwarding styles checked in the fieldset `id` (none checked: nothing is forwarded). */
function checkedStyles(id) {
  return [...$(id).querySelectorAll("input:checked")].map((box) => box.value);
}

/** `Header: field` lines as the API's map; a line without a colon is sent as a name without a field, which the API
 * refuses with the list of fields. A name given twice is refused here: the map would keep only one. */
function headerLines(text) {
  const map = {};
  for (const line of lines(text)) {
    const at = line.indexOf(":");
    const name = at < 0 ? line : line.slice(0, at).trim();
    if (Object.keys(map).some((known) => known.toLowerCase() === name.toLowerCase())) {
      throw new Error(`Certificate fields as headers: ${name} is given twice`);
    }
    map[name] = at < 0 ? "" : line.slice(at + 1).trim();
  }
  return map;
}

/** A hostname's origin servers, one per line, and how requests are spread over several. */
function originCell(host) {
  const more = host.additional_origins ?? [];
  const hostHeader = host.origin_host_header && h("div", { class: "muted small host-header" }, `Host: ${host.origin_host_header}`);
  if (!more.length) return h("td", { class: "mono" }, host.origin, hostHeader);
  const steering = host.origin_steering === "failover" ? "failover, in this order" : "round robin";
  const check = host.origin_health_check;
  return h(
    "td",
    { class: "mono" },
    ...[host.origin, ...more].map((o) => h("div", {}, o)),
    h("div", { class: "muted small steering" }, steering),
    check && h("div", { class: "muted small steering" }, `checks ${check.path} every ${check.interval} s`),
    hostHeader,
  );
}

function openHostEdit(id) {
  const host = hostList.find((x) => x.id === id);
  if (!host) return;
  const dialog = $("hn-dialog");
  dialog.dataset.id = id;
  $("hn-edit-name").textContent = host.hostname;
  $("hn-edit-origin").value = host.origin;
  $("hn-edit-more").value = (host.additional_origins ?? []).join("\n");
  $("hn-edit-steering").value = host.origin_steering ?? "round_robin";
  $("hn-edit-check-path").value = host.origin_health_check?.path ?? "";
  $("hn-edit-check-interval").value = host.origin_health_check?.interval ?? "";
  $("hn-edit-mode").value = host.tls_client_auth;
  const styles = [host.client_certificate_forwarding].flat();
  for (const box of $("hn-edit-forward").querySelectorAll("input")) box.checked = styles.includes(box.value);
  $("hn-edit-origin-cert").replaceChildren(
    h("option", { value: "" }, "none"),
    ...originCerts.map((c) => h("option", { value: c.id }, `${c.name || c.id} (${c.issuer})`)),
  );
  $("hn-edit-origin-cert").value = host.origin_client_certificate ?? "";
  $("hn-edit-ca-names").checked = host.send_client_ca_names !== false;
  $("hn-edit-min-tls").value = host.min_tls_version ?? "1.2";
  $("hn-edit-h2").checked = host.origin_http2 === true;
  $("hn-edit-host-header").value = host.origin_host_header ?? "";
  $("hn-edit-cert-headers").value = Object.entries(host.client_certificate_headers ?? {})
    .map(([header, field]) => `${header}: ${field}`)
    .join("\n");
  openDialog(dialog);
  $("hn-edit-origin").focus();
}

// The client certificates the edge can present to origins (uploaded with "ca": false), for the hostname dialog.
let originCerts = [];

async function loadOriginCerts() {
  const all = (await api("GET", `/accounts/${await account()}/mtls_certificates`)).result ?? [];
  originCerts = all.filter((c) => c.ca === false);
}

function setupHostEdit() {
  const dialog = $("hn-dialog");
  $("hn-edit-cancel").addEventListener("click", () => dialog.close());
  $("hn-edit-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run($("hn-edit-save"), async () => {
      await api("PATCH", `/zones/${zone.id}/hostnames/${dialog.dataset.id}`, {
        origin: $("hn-edit-origin").value.trim(),
        additional_origins: lines($("hn-edit-more").value),
        origin_steering: $("hn-edit-steering").value,
        origin_health_check: healthCheck(
          "hn-edit-check-path",
          "hn-edit-check-interval",
          hostList.find((x) => x.id === dialog.dataset.id)?.origin_health_check,
        ),
        tls_client_auth: $("hn-edit-mode").value,
        client_certificate_forwarding: checkedStyles("hn-edit-forward"),
        origin_client_certificate: $("hn-edit-origin-cert").value,
        send_client_ca_names: $("hn-edit-ca-names").checked,
        min_tls_version: $("hn-edit-min-tls").value,
        origin_http2: $("hn-edit-h2").checked,
        // Empty sends the client's Host again.
        origin_host_header: $("hn-edit-host-header").value.trim(),
        client_certificate_headers: headerLines($("hn-edit-cert-headers").value),
      });
      dialog.close();
      toast("Hostname saved");
      await loadHostnames();
    });
  });
}

// ---------- IP lists ----------

// Items shown per list: the first page of the API's cursor paging.
const ITEMS_SHOWN = 500;
let listsPath = "";
let shownList = null;

// ---------- API tokens ----------

// The secret of the token just created, and its id: shown until Done, another creation, its revocation or leaving.
let shownSecretOf = null;

function hideSecret() {
  $("tk-secret-value").textContent = "";
  $("tk-secret").hidden = true;
  shownSecretOf = null;
}

async function tokensPage() {
  $("tk-secret-done").addEventListener("click", hideSecret);
  window.addEventListener("pagehide", hideSecret);
  $("tk-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run(e.submitter, async () => {
      const body = { name: $("tk-name").value.trim(), scope: $("tk-scope").value };
      if ($("tk-expires").value) body.expires_on = `${$("tk-expires").value}T00:00:00Z`;
      const ips = $("tk-ips").value.split(/[\s,]+/).filter(Boolean);
      if (ips.length) body.condition = { request_ip: { in: ips } };
      const zoneIds = [...$("tk-zones").selectedOptions].map((o) => o.value);
      if (zoneIds.length) body.zones = zoneIds;
      const created = await api("POST", "/user/tokens", body);
      e.target.reset();
      $("tk-secret-value").textContent = created.result.value;
      $("tk-secret").hidden = false;
      shownSecretOf = created.result.id;
      toast(`Token ${created.result.name} created`);
      await loadTokens();
    });
  });
  const zones = (await api("GET", "/zones?per_page=1000")).result ?? [];
  zoneNames = new Map(zones.map((z) => [z.id, z.name]));
  $("tk-zones").replaceChildren(...zones.map((z) => h("option", { value: z.id }, z.name)));
  await loadTokens();
}

// Zone names by id, for the tokens' limits.
let zoneNames = new Map();

function tokenLimits(token) {
  const parts = [];
  if (token.expires_on) parts.push(`until ${day(token.expires_on)}`);
  if (token.not_before) parts.push(`from ${day(token.not_before)}`);
  const ips = token.condition?.request_ip;
  if (ips?.in?.length) parts.push(`only from ${ips.in.join(", ")}`);
  if (ips?.not_in?.length) parts.push(`never from ${ips.not_in.join(", ")}`);
  if (token.zones) parts.push(`zones ${token.zones.map((id) => zoneNames.get(id) ?? id).join(", ")}`);
  return parts.length ? parts.join(" · ") : "none";
}

async function loadTokens() {
  // The token this session was opened with: revoking it signs this browser out.
  const [tokens, mine] = await Promise.all([
    api("GET", "/user/tokens").then((d) => d.result ?? []),
    api("GET", "/user/tokens/verify").then((d) => d.result?.id),
  ]);
  const table = $("tk-table");
  table.tBodies[0].replaceChildren(
    ...tokens.map((token) =>
      h(
        "tr",
        { "data-id": token.id },
        h("td", {}, token.name, token.id === mine ? [" ", h("span", { class: "badge badge-ok" }, "this session")] : ""),
        h("td", {}, token.scope),
        h("td", { class: "small" }, tokenLimits(token)),
        h("td", {}, statusBadge(token.status)),
        h("td", { class: "nowrap" }, day(token.issued_on)),
        h(
          "td",
          {},
          canWrite &&
            token.status === "active" &&
            confirmButton(token.id === mine ? "Revoke (signs you out)" : "Revoke", "Confirm revoke", async () => {
              await api("DELETE", `/user/tokens/${token.id}`);
              if (token.id === shownSecretOf) hideSecret();
              if (token.id === mine) {
                window.location.assign("/dashboard/login");
                return;
              }
              toast(`Token ${token.name} revoked`);
              await loadTokens();
            }),
        ),
      ),
    ),
  );
  if (!tokens.length) emptyRow(table, 6, "No tokens.");
}

async function listsPage() {
  listsPath = `/accounts/${await account()}/rules/lists`;
  $("ls-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run(e.submitter, async () => {
      const created = await api("POST", listsPath, {
        name: $("ls-name").value.trim(),
        kind: "ip",
        description: $("ls-desc").value.trim(),
      });
      e.target.reset();
      toast(`List $${created.result.name} created`);
      await loadLists();
      await showItems(created.result);
    });
  });
  $("ls-items-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run(e.submitter, async () => {
      const comment = $("ls-items-comment").value.trim();
      const items = lines($("ls-items-text").value).map((ip) => ({ ip, comment }));
      await api("POST", `${listsPath}/${shownList.id}/items`, items);
      e.target.reset();
      toast(`${plural(items.length, "item")} added to $${shownList.name}`);
      await Promise.all([loadLists(), loadItems()]);
    });
  });
  await loadLists();
}

async function loadLists() {
  const lists = (await api("GET", listsPath)).result ?? [];
  const table = $("ls-table");
  table.tBodies[0].replaceChildren(
    ...lists.map((list) =>
      h(
        "tr",
        { "data-id": list.id },
        h("td", { class: "mono" }, `$${list.name}`),
        h("td", {}, list.num_items.toLocaleString("en-US")),
        h("td", {}, plural(list.num_referencing_filters, "rule")),
        h("td", {}, list.description),
        h(
          "td",
          {},
          h(
            "div",
            { class: "row" },
            h("button", { type: "button", class: "btn btn-small", onclick: () => run(null, () => showItems(list)) }, "Items", h("span", { class: "sr-only" }, ` of $${list.name}`)),
            canWrite &&
              confirmButton("Delete", "Confirm delete", async () => {
                await api("DELETE", `${listsPath}/${list.id}`);
                toast(`List $${list.name} deleted`);
                if (shownList?.id === list.id) {
                  shownList = null;
                  $("ls-items").hidden = true;
                }
                await loadLists();
              }),
          ),
        ),
      ),
    ),
  );
  if (!lists.length) emptyRow(table, 5, "No lists yet.");
  if (shownList) shownList = lists.find((l) => l.id === shownList.id) ?? null;
}

async function showItems(list) {
  shownList = list;
  $("ls-items-name").textContent = `$${list.name}`;
  $("ls-items").hidden = false;
  await loadItems();
  $("ls-items").scrollIntoView({ block: "nearest" });
}

async function loadItems() {
  const list = shownList;
  const data = await api("GET", `${listsPath}/${list.id}/items?per_page=${ITEMS_SHOWN}`);
  const items = data.result ?? [];
  const table = $("ls-items-table");
  table.tBodies[0].replaceChildren(
    ...items.map((item) =>
      h(
        "tr",
        { "data-id": item.id },
        h("td", { class: "mono" }, item.ip),
        h("td", {}, item.comment),
        h("td", {}, when(item.created_on)),
        h(
          "td",
          {},
          canWrite &&
            confirmButton("Remove", "Confirm remove", async () => {
              await api("DELETE", `${listsPath}/${list.id}/items`, { items: [{ id: item.id }] });
              toast(`${item.ip} removed from $${list.name}`);
              await Promise.all([loadLists(), loadItems()]);
            }),
        ),
      ),
    ),
  );
  if (!items.length) emptyRow(table, 4, "No items yet: add addresses or CIDR ranges above.");
  const more = $("ls-items-more");
  more.hidden = !data.result_info?.cursors?.after;
  more.textContent = `The first ${ITEMS_SHOWN} items are shown; portcullis list show ${list.name} lists them all.`;
}

// ---------- start ----------

const PAGES = {
  overview: overviewPage,
  certificates: certificatesPage,
  "mtls-rule": mtlsRulePage,
  rules: rulesPage,
  events: eventsPage,
  hostnames: hostnamesPage,
  lists: listsPage,
  tokens: tokensPage,
};

// On a phone, tables marked `stack` show one card per row; each cell is labelled with its column's heading.
function labelCells(table) {
  const headings = [...table.tHead.rows[0].cells].map((th) => th.textContent.trim());
  for (const row of table.tBodies[0].rows) {
    [...row.cells].forEach((cell, i) => {
      if (!cell.classList.contains("empty")) cell.dataset.label = headings[i] ?? "";
    });
  }
}

async function start() {
  const main = $("main");
  if (!main?.dataset.page) return;
  for (const table of document.querySelectorAll("table.stack")) {
    new MutationObserver(() => labelCells(table)).observe(table.tBodies[0], { childList: true });
  }
  document.querySelector("nav.side a[aria-current]")?.scrollIntoView({ block: "nearest", inline: "center" });
  if (!canWrite) document.querySelectorAll("[data-write]").forEach((el) => (el.hidden = true));
  try {
    // Lists and tokens belong to the account, not to a zone.
    if (!(await loadZones()) && !["lists", "tokens"].includes(main.dataset.page)) {
      noZone();
      return;
    }
    // The zone's mTLS warnings as they stand, not only after a write on this page.
    if (zone && ["overview", "certificates", "hostnames", "rules", "mtls-rule"].includes(main.dataset.page)) {
      const seq = warningsSeq;
      api("GET", `/zones/${zone.id}/portcullis/mtls_check`)
        .then((data) => {
          if (seq === warningsSeq) showWarnings(data.result || []);
        })
        .catch((error) => console.error(error));
    }
    await PAGES[main.dataset.page]?.();
  } catch (error) {
    showError(error);
  } finally {
    document.body.dataset.ready = "true";
  }
}

start();
