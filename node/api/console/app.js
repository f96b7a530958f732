// gd-node web console: a client of the node's /v1 API, nothing more.
//
// The token lives in sessionStorage (this tab only) and travels as
// `Authorization: Bearer`, never as a cookie: another site cannot make the browser act
// for the person (no CSRF). Every text from the node is put in the page as text
// (textContent), never parsed as HTML, so a gene's name cannot inject script; the
// Content-Security-Policy of the page (script-src 'self') is the second wall.
"use strict";

const TOKEN_KEY = "gd.console.token";
// The OIDC sign-in in flight in this tab: {state, verifier, nonce, redirect}; one use.
const OIDC_KEY = "gd.console.oidc";
const CALLBACK_PATH = "/console/callback";
const ROLES = { viewer: 1, operator: 2, approver: 3, admin: 4 };
const MOTORS = ["M_P", "M_N", "M_C", "M_M"];
const MAX_EVENTS = 50;          // live events kept on screen
const OVERVIEW_REFRESH_MS = 5000;
const RECONNECT_MAX_MS = 30000; // event stream: back-off ceiling between reconnects

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  caller: null,     // {actor, role, domains, genes} from /v1/status
  oidc: null,       // the node's OIDC sign-in settings (GET /v1/auth/oidc), if any
  status: null,
  events: [],
  stream: null,     // AbortController of the event stream
  timer: null,
  view: "",
  renders: 0,       // the latest render's ticket
};

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

// -- tiny DOM helpers ----------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

const $ = (sel) => document.querySelector(sel);
const main = () => $("#main");
const short = (id) => (id ? String(id).slice(0, 12) : "");
const fmt = (x, d = 3) => (typeof x === "number" ? x.toFixed(d) : (x ?? "-"));
const badge = (text) => h("span", { class: `badge ${text}` }, text);
const can = (role) => state.caller !== null && ROLES[state.caller.role] >= ROLES[role];

function when(ms) {
  if (!ms) return "-";
  return new Date(ms).toISOString().replace("T", " ").slice(0, 19) + "Z";
}

// HLC stamps (decisions) carry milliseconds in their top 48 bits.
const hlcTime = (hlc) => when(Math.floor(Number(hlc) / 65536));

function flash(text, bad = false) {
  const el = $("#flash");
  el.textContent = text;
  el.className = bad ? "bad" : "";
  el.hidden = !text;
}

// -- the API -------------------------------------------------------------------------
async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  const init = { method, headers, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const reply = await fetch(path, init);
  const type = reply.headers.get("content-type") || "";
  const data = type.includes("json") ? await reply.json() : await reply.text();
  if (!reply.ok) {
    const detail = data && data.detail ? data.detail : `${reply.status} ${reply.statusText}`;
    if (reply.status === 401 && path !== "/v1/status") signOut(detail);
    throw new ApiError(reply.status, detail);
  }
  return data;
}

// -- sign in / out -------------------------------------------------------------------
async function signIn(token) {
  state.token = token;
  const status = await api("GET", "/v1/status");
  sessionStorage.setItem(TOKEN_KEY, token);
  state.status = status;
  state.caller = status.api.caller;
  $("#login").hidden = true;
  $("#nav").hidden = false;
  $("#main").hidden = false;
  $("#logout").hidden = false;
  $("#events-bar").hidden = false;
  $("#who").textContent = `${state.caller.actor} · ${state.caller.role} · ${state.caller.domains.join(", ")}`;
  $("#node-name").textContent = `${status.org} (${status.region})`;
  startEvents();
  route();
}

function signOut(why) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.caller = null;
  if (state.stream) state.stream.abort();
  state.stream = null;
  $("#nav").hidden = true;
  $("#main").hidden = true;
  $("#logout").hidden = true;
  $("#events-bar").hidden = true;
  $("#who").textContent = "";
  $("#node-name").textContent = "";
  $("#login").hidden = false;
  $("#login-error").textContent = why || "";
  flash("");
}

// -- sign in with OIDC: Authorization Code + PKCE (S256), node/api/oidc_login.py ------
function b64url(bytes) {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomText(bytes) {
  const buf = new Uint8Array(bytes);
  crypto.getRandomValues(buf);
  return b64url(buf);
}

async function s256(text) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return b64url(new Uint8Array(digest));
}

async function oidcOffer() {
  // The node says whether it has an issuer and a client id for the console.
  try {
    const reply = await fetch("/v1/auth/oidc", { cache: "no-store", credentials: "omit" });
    const cfg = await reply.json();
    if (!reply.ok || !cfg.enabled) return;
    state.oidc = cfg;
    $("#oidc-issuer").textContent = cfg.issuer;
    $("#oidc").hidden = false;
  } catch (err) {
    $("#oidc").hidden = true;
  }
}

async function oidcStart() {
  const cfg = state.oidc;
  // state binds the answer to this tab's request (no code injected from elsewhere);
  // the verifier proves to the issuer that whoever redeems the code started the flow.
  const flight = { state: randomText(32), verifier: randomText(48), nonce: randomText(24),
    redirect: location.origin + CALLBACK_PATH };
  sessionStorage.setItem(OIDC_KEY, JSON.stringify(flight));
  const query = new URLSearchParams({
    response_type: "code", client_id: cfg.client_id, redirect_uri: flight.redirect,
    scope: cfg.scopes, state: flight.state, nonce: flight.nonce,
    code_challenge: await s256(flight.verifier), code_challenge_method: "S256",
  });
  const sep = cfg.authorization_endpoint.includes("?") ? "&" : "?";
  location.assign(`${cfg.authorization_endpoint}${sep}${query}`);
}

async function oidcFinish() {
  const answer = new URLSearchParams(location.search);
  history.replaceState(null, "", "/console/"); // the code leaves the address bar
  let flight = null;
  try { flight = JSON.parse(sessionStorage.getItem(OIDC_KEY) || "null"); } catch { flight = null; }
  sessionStorage.removeItem(OIDC_KEY); // one use, whatever happens next
  if (answer.get("error")) {
    throw new Error(`the issuer answered ${answer.get("error")}` +
      (answer.get("error_description") ? `: ${answer.get("error_description")}` : ""));
  }
  if (!flight || !flight.state) throw new Error("this tab started no OIDC sign-in; start again");
  if (answer.get("state") !== flight.state) {
    throw new Error("the issuer's answer does not belong to the sign-in this tab started " +
      "(state mismatch); nothing was exchanged. Start again.");
  }
  const code = answer.get("code");
  if (!code) throw new Error("the issuer's answer carries no code");
  const reply = await fetch("/v1/auth/oidc/token", {
    method: "POST", headers: { "Content-Type": "application/json" }, cache: "no-store",
    credentials: "omit", body: JSON.stringify({ code, code_verifier: flight.verifier,
      redirect_uri: flight.redirect, nonce: flight.nonce }),
  });
  const data = await reply.json();
  if (!reply.ok) throw new Error(data.detail || `${reply.status} ${reply.statusText}`);
  await signIn(data.token);
}

// -- live events (SSE over fetch: EventSource cannot send a bearer header) -------------
function startEvents() {
  if (state.stream) state.stream.abort();
  const ctrl = new AbortController();
  state.stream = ctrl;
  (async () => {
    let wait = 1000;
    while (!ctrl.signal.aborted && state.token) {
      try {
        const reply = await fetch("/v1/events", {
          headers: { Authorization: `Bearer ${state.token}` }, signal: ctrl.signal,
          cache: "no-store", credentials: "omit",
        });
        if (!reply.ok) throw new ApiError(reply.status, "event stream refused");
        $("#events-state").textContent = "events: live";
        wait = 1000;
        const reader = reply.body.getReader();
        const decoder = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += decoder.decode(value, { stream: true });
          let cut;
          while ((cut = buf.indexOf("\n\n")) >= 0) {
            onSse(buf.slice(0, cut));
            buf = buf.slice(cut + 2);
          }
        }
      } catch (err) {
        if (ctrl.signal.aborted) return;
        if (err instanceof ApiError && err.status === 401) return;
      }
      $("#events-state").textContent = "events: reconnecting";
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(wait * 2, RECONNECT_MAX_MS);
    }
  })();
}

function onSse(chunk) {
  let kind = "";
  let data = "";
  for (const line of chunk.split("\n")) {
    if (line.startsWith("event:")) kind = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  if (!kind || !data) return;
  let event;
  try { event = JSON.parse(data); } catch { return; }
  state.events.unshift(event);
  state.events.length = Math.min(state.events.length, MAX_EVENTS);
  $("#events-last").textContent = `${kind} ${short(event.gene || event.job || event.peer || "")}`;
  // Lists follow the stream; an open gene or job is left alone (a person may be typing).
  const list = !/^#\/?\w+\/./.test(location.hash);
  if (list && kind.startsWith("job.") && state.view === "jobs") route();
  if (list && kind.startsWith("gene.") && state.view === "pending") route();
}

// -- router ---------------------------------------------------------------------------
const VIEWS = {
  overview: viewOverview, pending: viewPending, decisions: viewDecisions,
  agreements: viewAgreements, audit: viewAudit, ledger: viewLedger, jobs: viewJobs,
};

async function route() {
  if (!state.token || !state.caller) return;
  const parts = (location.hash.replace(/^#\/?/, "") || "overview").split("/");
  const name = VIEWS[parts[0]] ? parts[0] : "overview";
  state.view = name;
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.view === name);
  }
  clearInterval(state.timer);
  // Renders overlap (a click, an event, the refresh timer): only the latest one lands.
  const ticket = ++state.renders;
  try {
    const content = await VIEWS[name](parts.slice(1).map(decodeURIComponent));
    const nodes = [content].flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false);
    if (ticket === state.renders) main().replaceChildren(...nodes);
  } catch (err) {
    if (ticket === state.renders) {
      main().replaceChildren(h("div", { class: "card error" }, `Could not load: ${err.message}`));
    }
  }
}

// -- overview -------------------------------------------------------------------------
function stat(key, value, alarm = false) {
  return h("div", { class: `stat${alarm ? " alarm" : ""}` },
    h("div", { class: "k" }, key), h("div", { class: "v" }, value));
}

async function viewOverview() {
  const [status, peers, head] = await Promise.all([
    api("GET", "/v1/status"), api("GET", "/v1/peers"), api("GET", "/v1/ledger/head")]);
  state.status = status;
  const alarms = head.region && head.region.alarms ? head.region.alarms : 0;
  state.timer = setInterval(() => { if (state.view === "overview") route(); }, OVERVIEW_REFRESH_MS);
  const regions = Object.entries(status.peers_by_region || {});
  return [
    h("h1", {}, `Node ${status.org} · ${status.region}`),
    h("div", { class: "grid", id: "overview-stats" },
      stat("ledger height", status.ledger_height),
      stat("sync lag", status.sync_lag ?? "-"),
      stat("peers", status.peers),
      stat("conflicts", status.conflicts ?? 0),
      stat("ledger alarms", alarms, alarms > 0),
      stat("ledger role", head.region ? (head.region.role || head.region.mode || "-") : "-"),
      stat("uptime", `${Math.round(status.uptime_s)} s`)),
    h("div", { class: "card" }, h("div", { class: "muted" }, "peer id"),
      h("div", { class: "mono" }, status.peer_id)),
    h("h2", {}, "Peers by region"),
    regions.length
      ? h("table", {}, h("tr", {}, h("th", {}, "region"), h("th", {}, "connected")),
        regions.map(([r, n]) => h("tr", {}, h("td", {}, r), h("td", {}, n))))
      : h("p", { class: "muted" }, "No peer connected."),
    peers.length ? h("table", { id: "peers" },
      h("tr", {}, ["peer", "org", "region", "latency", "score", "ledger"].map((c) => h("th", {}, c))),
      peers.map((p) => h("tr", {}, h("td", { class: "mono" }, short(p.peer_id)), h("td", {}, p.org),
        h("td", {}, p.region), h("td", {}, p.latency_ms === null ? "-" : `${fmt(p.latency_ms, 1)} ms`),
        h("td", {}, fmt(p.score, 2)), h("td", {}, p.ledger_size ?? "-")))) : null,
    h("h2", {}, "Live events"),
    state.events.length
      ? h("ul", { class: "events" }, state.events.map((e) => h("li", {},
        `${when(e.time_ms)} ${e.kind} ${e.domain || ""} ${short(e.gene || e.job || e.peer || "")}`)))
      : h("p", { class: "muted" }, "None since you signed in."),
  ];
}

// -- pending genes --------------------------------------------------------------------
async function viewPending(args) {
  if (args[0]) return viewPendingGene(args[0]);
  const rows = await api("GET", "/v1/pending");
  return [
    h("h1", {}, "Pending genes"),
    h("p", { class: "muted" }, "Received from peers, waiting for a person. Open one to compare it with its variants."),
    rows.length ? h("table", { id: "pending-list" },
      h("tr", {}, ["name", "domain", "action", "condition", "origin", "CP"].map((c) => h("th", {}, c))),
      rows.map((g) => h("tr", {
        class: "clickable", dataset: { gene: g.id },
        onclick: () => { location.hash = `#/pending/${g.id}`; },
      }, h("td", {}, h("a", { href: `#/pending/${g.id}` }, g.name)), h("td", {}, g.domain),
      h("td", {}, g.action), h("td", { class: "mono" }, g.condition),
      h("td", { class: "mono" }, short(g.origin)), h("td", {}, fmt(g.cp)))))
      : h("p", { class: "muted", id: "pending-empty" }, "Nothing is waiting for approval."),
  ];
}

async function latestDecision(geneId) {
  const page = await api("GET", `/v1/decisions?gene=${encodeURIComponent(geneId)}&limit=1000`);
  let best = null;
  for (const d of page.items) if (best === null || d.decided_at > best.decided_at) best = d;
  return best;
}

function motorChart(decision) {
  // One bar per motor (its score in [0, 1]; red when it vetoed) and Craft Performance.
  const rows = [...MOTORS.map((m) => [m, decision.motors[m]]), ["CP", { score: decision.cp, cp: true }]];
  const width = 360, rowH = 22, labelW = 44, barW = width - labelW - 90;
  const chart = svg("svg", { class: "chart", width, height: rows.length * rowH + 4,
    viewBox: `0 0 ${width} ${rows.length * rowH + 4}`, role: "img",
    "aria-label": "score of each motor and the craft performance" });
  rows.forEach(([name, r], i) => {
    const y = i * rowH + 2;
    chart.append(svg("text", { x: 0, y: y + 14 }, name));
    chart.append(svg("rect", { class: "track", x: labelW, y: y + 3, width: barW, height: rowH - 8, rx: 2 }));
    if (r && typeof r.score === "number") {
      const cls = r.cp ? "bar cp" : (r.veto ? "bar veto" : "bar");
      chart.append(svg("rect", { class: cls, x: labelW, y: y + 3,
        width: Math.max(1, Math.min(1, r.score) * barW), height: rowH - 8, rx: 2 }));
      chart.append(svg("text", { x: labelW + barW + 6, y: y + 14 },
        `${r.score.toFixed(3)}${r.veto ? " veto" : ""}`));
    } else {
      chart.append(svg("text", { x: labelW + barW + 6, y: y + 14 }, "did not run"));
    }
  });
  return chart;
}

function motorExplanations(decision) {
  return h("div", {}, MOTORS.filter((m) => decision.motors[m]).map((m) => [
    h("strong", {}, `${m} ${fmt(decision.motors[m].score)}`),
    h("p", { class: "explain" }, decision.motors[m].explanation)]));
}

async function candidateCard(gene, original, isOriginal) {
  const decision = await latestDecision(gene.id);
  const allowed = can("approver");
  const approve = h("button", {
    type: "button", class: "approve", dataset: { gene: gene.id }, disabled: !allowed,
    title: allowed ? null : `approving needs the approver role; you are ${state.caller.role}`,
    onclick: () => approveGene(original.id, isOriginal ? null : gene.id),
  }, isOriginal ? "Approve" : "Approve this variant instead");
  const reason = h("input", { type: "text", class: "reason", placeholder: "reason to reject",
    disabled: !allowed });
  const reject = h("button", {
    type: "button", class: "reject", dataset: { gene: gene.id }, disabled: !allowed,
    onclick: () => rejectGene(gene.id, reason.value),
  }, "Reject");
  return h("div", { class: "card candidate", dataset: { gene: gene.id } },
    h("h2", {}, `${isOriginal ? "Original" : "Variant"}: ${gene.name} v${gene.version}`),
    h("div", {}, badge(gene.status), " ", h("span", { class: "muted" }, `${gene.domain} · ${gene.action}`)),
    h("p", { class: "mono" }, `when ${gene.condition}`),
    h("p", { class: "muted mono" }, `id ${gene.id} · origin ${short(gene.origin)}`),
    decision
      ? [h("div", {}, "latest decision ", badge(decision.verdict), ` CP ${fmt(decision.cp)} · `,
        h("a", { href: `#/decisions/${decision.id}` }, short(decision.id))),
      motorChart(decision), motorExplanations(decision)]
      : h("p", { class: "muted" }, "Not evaluated on this node yet: no motor scores to show."),
    h("div", { class: "actions" }, approve, isOriginal ? [reason, reject] : null,
      allowed ? null : h("span", { class: "muted role-note" },
        `Read only: approving needs the approver role (you are ${state.caller.role}).`)));
}

async function viewPendingGene(geneId) {
  let view;
  try {
    view = await api("GET", `/v1/pending/${encodeURIComponent(geneId)}`);
  } catch (err) {
    if (err.status !== 404) throw err;
    view = null;
  }
  const gene = await api("GET", `/v1/genes/${encodeURIComponent(geneId)}`);
  if (view === null || gene.status !== "adaptation_pending") {
    return [h("h1", {}, `Gene ${gene.name}`),
      h("div", { class: "card", id: "gene-state" }, "Status: ", h("span", { id: "gene-status" }, badge(gene.status)),
        h("p", { class: "mono" }, `when ${gene.condition} → ${gene.action}`),
        h("p", {}, h("a", { href: "#/pending" }, "Back to pending genes")))];
  }
  const cards = [await candidateCard(view.original, view.original, true)];
  for (const v of view.variants) cards.push(await candidateCard(v, view.original, false));
  return [h("h1", {}, `Pending: ${view.original.name}`),
    h("p", { class: "muted" }, `${view.variants.length} variant(s) from the meristic motor. `,
      h("span", { id: "gene-status" }, badge(gene.status))),
    h("div", { class: "compare" }, cards)];
}

async function approveGene(geneId, variant) {
  try {
    const changed = await api("POST", `/v1/pending/${encodeURIComponent(geneId)}/approve`,
      variant ? { variant } : {});
    flash(`Approved: ${changed.map((g) => `${g.name} is ${g.status}`).join(", ")}`);
    const next = `#/pending/${changed[0].id}`;
    if (location.hash === next) route();
    else location.hash = next; // the hashchange renders it
  } catch (err) {
    flash(`Not approved: ${err.message}`, true);
  }
}

async function rejectGene(geneId, reason) {
  if (!reason.trim()) { flash("A rejection needs a reason.", true); return; }
  try {
    const g = await api("POST", `/v1/pending/${encodeURIComponent(geneId)}/reject`, { reason });
    flash(`Rejected: ${g.name}`);
    route();
  } catch (err) {
    flash(`Not rejected: ${err.message}`, true);
  }
}

// -- decisions ------------------------------------------------------------------------
async function viewDecisions(args) {
  if (args[0]) {
    const d = await api("GET", `/v1/decisions/${encodeURIComponent(args[0])}`);
    const summary = (await api("GET", `/v1/decisions?gene=${encodeURIComponent(d.gene_id)}&limit=1000`))
      .items.find((x) => x.id === d.id);
    const replay = h("button", { type: "button", onclick: async (ev) => {
      ev.target.disabled = true;
      try {
        const r = await api("POST", `/v1/decisions/${encodeURIComponent(d.id)}/replay`);
        flash(r.exact ? "Replay: the same decision, exactly." : `Replay differs: ${r.differences.join("; ")}`, !r.exact);
      } catch (err) { flash(`Replay failed: ${err.message}`, true); }
      ev.target.disabled = false;
    } }, "Replay from stored inputs");
    return [h("h1", {}, `Decision ${short(d.id)}`),
      h("div", { class: "card" },
        h("div", {}, badge(summary.verdict), " ", badge(summary.band), ` CP ${fmt(summary.cp)} · gene `,
          h("span", { class: "mono" }, d.gene_id), ` · ${summary.states} state(s) · seed ${summary.seed} · ${hlcTime(summary.decided_at)}`),
        h("h2", {}, "Each motor"), motorChart(summary), motorExplanations(summary),
        h("div", { class: "actions" }, replay))];
  }
  const page = await api("GET", "/v1/decisions?limit=1000");
  const rows = [...page.items].sort((a, b) => (b.decided_at > a.decided_at ? 1 : -1)).slice(0, 200);
  return [h("h1", {}, "Decisions"),
    h("p", { class: "muted" }, `${page.total} in your scope; the newest 200.`),
    h("table", { id: "decisions" },
      h("tr", {}, ["decided", "gene", "domain", "verdict", "band", "CP", ...MOTORS].map((c) => h("th", {}, c))),
      rows.map((d) => h("tr", { class: "clickable", onclick: () => { location.hash = `#/decisions/${d.id}`; } },
        h("td", {}, hlcTime(d.decided_at)), h("td", { class: "mono" }, short(d.gene_id)), h("td", {}, d.domain),
        h("td", {}, badge(d.verdict)), h("td", {}, d.band), h("td", {}, fmt(d.cp)),
        MOTORS.map((m) => h("td", {}, d.motors[m] ? fmt(d.motors[m].score) + (d.motors[m].veto ? " ✗" : "") : "-")))))];
}

// -- agreements -----------------------------------------------------------------------
async function share(body, verb) {
  try {
    await api("POST", verb === "revoke" ? "/v1/revoke" : "/v1/share", body);
    flash(`${verb}: ${body.domain} with ${short(body.with)} done`);
    route();
  } catch (err) {
    flash(`${verb} failed: ${err.message}`, true);
  }
}

async function viewAgreements() {
  const rows = await api("GET", "/v1/agreements");
  const admin = can("admin");
  const withInput = h("input", { name: "with", placeholder: "org:globex, region:R or peer id", required: true });
  const domainInput = h("input", { name: "domain", placeholder: "turbofan", required: true });
  const direction = h("select", { name: "direction" }, ["both", "send", "receive"].map((d) => h("option", {}, d)));
  const form = h("form", { class: "inline", onsubmit: (ev) => {
    ev.preventDefault();
    share({ with: withInput.value.trim(), domain: domainInput.value.trim(), direction: direction.value }, "propose");
  } }, h("label", {}, "with", withInput), h("label", {}, "domain", domainInput),
  h("label", {}, "direction", direction), h("button", { type: "submit", class: "primary", disabled: !admin }, "Propose"));
  return [h("h1", {}, "Agreements"),
    h("div", { class: "card" }, h("h2", {}, "Propose a share"), form,
      admin ? null : h("p", { class: "muted" }, "Sharing needs the admin role.")),
    rows.length ? h("table", { id: "agreements" },
      h("tr", {}, ["peer", "domain", "state", "flows", "ours", "theirs", ""].map((c) => h("th", {}, c))),
      rows.map((a) => h("tr", {}, h("td", { class: "mono" }, short(a.peer)), h("td", {}, a.domain),
        h("td", {}, badge(a.state)), h("td", {}, a.flows.join(", ") || "-"), h("td", {}, a.ours || "-"),
        h("td", {}, a.theirs || "-"),
        h("td", {}, a.theirs && !a.ours
          ? h("button", { type: "button", class: "primary", disabled: !admin,
            onclick: () => share({ with: a.peer, domain: a.domain }, "accept") }, "Accept")
          : null,
        a.ours ? h("button", { type: "button", class: "danger", disabled: !admin,
          onclick: () => share({ with: a.peer, domain: a.domain }, "revoke") }, "Revoke") : null))))
      : h("p", { class: "muted" }, "No agreement in your scope."),
  ];
}

// -- audit ----------------------------------------------------------------------------
async function viewAudit() {
  if (!can("admin")) {
    return [h("h1", {}, "Audit log"), h("p", { class: "muted" }, `The audit log needs the admin role (you are ${state.caller.role}).`)];
  }
  const rows = await api("GET", "/v1/audit/export?format=json");
  const verify = h("button", { type: "button", onclick: async () => {
    try {
      const r = await api("GET", "/v1/audit/verify");
      flash(`Audit chain: ${JSON.stringify(r)}`, r.ok === false);
    } catch (err) { flash(`Audit chain broken: ${err.message}`, true); }
  } }, "Verify the hash chain");
  const newest = rows.slice(-200).reverse();
  return [h("h1", {}, "Audit log"), h("div", { class: "actions" }, verify,
    h("span", { class: "muted" }, `${rows.length} records; the newest 200.`)),
  h("table", { id: "audit" },
    h("tr", {}, ["#", "time", "kind", "peer", "gene", "detail"].map((c) => h("th", {}, c))),
    newest.map((r) => h("tr", {}, h("td", {}, r.index), h("td", {}, when(r.time_ms)), h("td", {}, r.kind),
      h("td", { class: "mono" }, short(r.peer)), h("td", { class: "mono" }, short(r.gene_id)),
      h("td", { class: "mono" }, JSON.stringify(r.detail)))))];
}

// -- ledger ---------------------------------------------------------------------------
async function viewLedger() {
  const head = await api("GET", "/v1/ledger/head");
  const start = Math.max(0, head.size - 20);
  const entries = await api("GET", `/v1/ledger/entries?offset=${start}&limit=20`);
  const out = h("div", { id: "proof-result" });
  const index = h("input", { type: "number", min: 0, max: Math.max(0, head.size - 1), value: Math.max(0, head.size - 1), id: "proof-index" });
  const form = h("form", { class: "inline", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const p = await api("GET", `/v1/ledger/proof?index=${encodeURIComponent(index.value)}`);
      out.replaceChildren(h("p", {}, `Entry ${p.index} is in the tree of size ${p.size}, root `,
        h("span", { class: "mono" }, p.root)), h("p", {}, "leaf hash ", h("span", { class: "mono" }, p.leaf_hash)),
      h("ol", { class: "mono" }, p.path.map((x) => h("li", {}, x))));
    } catch (err) { out.replaceChildren(h("p", { class: "error" }, err.message)); }
  } }, h("label", {}, "entry index", index), h("button", { type: "submit", class: "primary", id: "proof-button" }, "Inclusion proof"));
  const verify = h("button", { type: "button", onclick: async () => {
    try {
      const r = await api("GET", "/v1/ledger/verify");
      flash(`Ledger verify: ${JSON.stringify(r)}`, r.ok === false);
    } catch (err) { flash(`Ledger verify failed: ${err.message}`, true); }
  } }, "Verify chain and signatures");
  const region = head.region || {};
  return [h("h1", {}, "Ledger"),
    h("div", { class: "grid" }, stat("size", head.size), stat("mode", region.mode || "-"),
      stat("role", region.role || "-"), stat("alarms", region.alarms || 0, (region.alarms || 0) > 0)),
    h("div", { class: "card" }, h("div", { class: "muted" }, "root"), h("div", { class: "mono" }, head.root),
      head.signed_head ? h("div", { class: "muted" }, `signed by ${short(head.signed_head.signer)} at ${when(head.signed_head.timestamp)}`) : null,
      h("div", { class: "actions" }, verify)),
    h("div", { class: "card" }, h("h2", {}, "Proof lookup"), form, out),
    h("h2", {}, "Latest entries"),
    h("table", { id: "ledger-entries" },
      h("tr", {}, ["#", "kind", "time", "author", "payload hash"].map((c) => h("th", {}, c))),
      entries.items.map((e, i) => h("tr", {}, h("td", {}, e.index ?? start + i), h("td", {}, e.kind),
        h("td", {}, e.hlc ? hlcTime(e.hlc) : "-"), h("td", { class: "mono" }, short(e.author)),
        h("td", { class: "mono" }, e.payload_hash || "-"))))];
}

// -- jobs -----------------------------------------------------------------------------
async function viewJobs(args) {
  if (args[0]) {
    const job = await api("GET", `/v1/jobs/${encodeURIComponent(args[0])}`);
    let result = null;
    if (["succeeded", "failed", "cancelled"].includes(job.state)) {
      result = await api("GET", `/v1/jobs/${encodeURIComponent(job.id)}/result`);
    }
    return [h("h1", {}, `Job ${job.id}`), h("pre", {}, JSON.stringify(result || job, null, 2))];
  }
  const page = await api("GET", "/v1/jobs?limit=100");
  return [h("h1", {}, "Jobs"),
    h("p", { class: "muted" }, "Progress updates live from the event stream."),
    page.items.length ? h("table", { id: "jobs" },
      h("tr", {}, ["job", "kind", "gene", "state", "progress", "created", ""].map((c) => h("th", {}, c))),
      page.items.map((j) => h("tr", {}, h("td", { class: "mono" }, h("a", { href: `#/jobs/${j.id}` }, short(j.id))),
        h("td", {}, j.kind), h("td", { class: "mono" }, short(j.gene_id)), h("td", {}, badge(j.state)),
        h("td", {}, h("progress", { max: j.total || 1, value: j.done }), ` ${j.done}/${j.total}`),
        h("td", {}, when(j.created_ms)),
        h("td", {}, ["queued", "running"].includes(j.state) ? h("button", {
          type: "button", class: "danger", disabled: !can("operator"),
          onclick: async () => {
            try { await api("POST", `/v1/jobs/${encodeURIComponent(j.id)}/cancel`); route(); } catch (err) { flash(err.message, true); }
          },
        }, "Cancel") : null))))
      : h("p", { class: "muted" }, "No job in your scope.")];
}

// -- start ----------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("#login-error").textContent = "";
    try {
      await signIn($("#token").value.trim());
      $("#token").value = "";
    } catch (err) {
      state.token = null;
      $("#login-error").textContent = `Sign-in refused: ${err.message}`;
    }
  });
  $("#logout").addEventListener("click", () => signOut(""));
  $("#oidc-login").addEventListener("click", () => {
    oidcStart().catch((err) => { $("#login-error").textContent = `OIDC sign-in failed: ${err.message}`; });
  });
  oidcOffer();
  window.addEventListener("hashchange", () => route());
  $("#nav").addEventListener("click", () => flash(""));
  if (location.pathname === CALLBACK_PATH) {
    signOut("");
    oidcFinish().catch((err) => signOut(`OIDC sign-in refused: ${err.message}`));
  } else if (state.token) {
    signIn(state.token).catch(() => signOut("Your session ended; sign in again."));
  } else {
    signOut("");
  }
});
