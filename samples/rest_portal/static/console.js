// The micro console: sign up and log in, call any command from its JSON Schema, watch the
// event feed live (SSE), and play with the bank. Plain JS, no build step, no CDN.
"use strict";

const state = { token: sessionStorage.getItem("micro.token"), user: null, feed: null, accountsAt: 0, seen: 0 };

const $ = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
};
const byId = (id) => document.getElementById(id);

// One call to the gateway: JSON in, JSON out, the position of a command's events kept.
// Each command carries the newest position this page has seen, so whichever instance
// serves it has applied the commands before it (a login after its sign-up).
async function api(method, path, body) {
  if (method !== "GET" && state.seen) {
    path += `${path.includes("?") ? "&" : "?"}min_position=${state.seen}`;
  }
  const headers = {};
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const options = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  let data = null;
  try { data = await response.json(); } catch (_) { /* empty or not JSON */ }
  const position = response.headers.get("X-Micro-Position");
  if (position) state.seen = Math.max(state.seen, Number(position));
  const slid = response.headers.get("X-Micro-Token");  // the session slid: keep the new token
  if (slid && state.token) {
    state.token = slid;
    sessionStorage.setItem("micro.token", slid);
  }
  return { ok: response.ok, status: response.status, data, position: position ? Number(position) : null };
}

function describeError(result) {
  const error = (result.data && result.data.error) || { message: `HTTP ${result.status}` };
  const fields = ((error.details || {}).fields || []).map((f) => `${f.field}: ${f.reason}`);
  return fields.length ? fields.join("; ") : error.message;
}

function say(element, text, ok) {
  element.textContent = text;
  element.className = `message ${ok ? "ok" : "error"}`;
}

// -- signing up and logging in ------------------------------------------------------------

function showTab(name) {
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.tab === name);
  byId("signup").hidden = name !== "signup";
  byId("login").hidden = name !== "login";
}

async function signUp(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const result = await api("POST", "/auth/signup", Object.fromEntries(form));
  if (!result.ok) return say(byId("auth-message"), describeError(result), false);
  say(byId("auth-message"), `Welcome ${form.get("name")}: now log in.`, true);
  byId("login").elements.login.value = form.get("login");
  event.target.reset();
  showTab("login");
  byId("login").elements.password.focus();
}

async function logIn(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const result = await api("POST", "/auth/login", { login: form.get("login"), password: form.get("password"), device: "console" });
  if (!result.ok) return say(byId("auth-message"), describeError(result), false);
  state.token = result.data.token;
  sessionStorage.setItem("micro.token", state.token);
  event.target.reset();
  await signedIn(result.data.user);
}

async function signedIn(user) {
  if (!user) {
    const me = await api("GET", "/auth/me");
    if (!me.ok) return signedOut();
    user = me.data;
  }
  state.user = user;
  byId("who").textContent = `${user.name} (${user.login})`;
  byId("logout").hidden = false;
  byId("auth-card").querySelector(".tabs").hidden = true;
  byId("signup").hidden = byId("login").hidden = true;
  say(byId("auth-message"), `Signed in as ${user.login}.`, true);
  const owner = byId("open-account").elements.owner;
  if (!owner.value) owner.value = user.name;
  startFeed();
}

function signedOut() {
  state.token = null;
  state.user = null;
  sessionStorage.removeItem("micro.token");
  byId("who").textContent = "not signed in";
  byId("logout").hidden = true;
  byId("auth-card").querySelector(".tabs").hidden = false;
  showTab("login");
  stopFeed();
}

async function logOut() {
  await api("POST", "/auth/logout", {});
  signedOut();
  say(byId("auth-message"), "Logged out.", true);
}

// -- the live event feed ------------------------------------------------------------------

function feedState(text, live) {
  const pill = byId("feed-state");
  pill.textContent = text;
  pill.classList.toggle("live", live);
}

function startFeed() {
  stopFeed();
  byId("events").replaceChildren();
  // EventSource sends no headers: the token goes in the query string; reconnects resume
  // from the last event id by themselves.
  const feed = new EventSource(`/api/events?access_token=${encodeURIComponent(state.token)}`);
  state.feed = feed;
  feed.onopen = () => feedState("live", true);
  feed.onerror = () => feedState(feed.readyState === EventSource.CLOSED ? "off" : "reconnecting", false);
  feed.addEventListener("event", (message) => showEvent(JSON.parse(message.data)));
}

function stopFeed() {
  if (state.feed) state.feed.close();
  state.feed = null;
  feedState("off", false);
}

function showEvent(event) {
  const list = byId("events");
  const when = event.metadata.recorded_at ? new Date(event.metadata.recorded_at).toLocaleTimeString() : "";
  list.prepend($("li", { "data-type": event.type },
    $("div", {}, $("span", { class: "type" }, event.type), " ", $("span", { class: "meta" }, `#${event.position} · ${event.stream} v${event.version} · ${when}`)),
    $("pre", {}, JSON.stringify(event.data))));
  while (list.children.length > 200) list.lastChild.remove();
  if (/^(account|transfer)-/.test(event.stream)) scheduleAccounts(event.position);
}

// -- the bank -----------------------------------------------------------------------------

let accountsTimer = null;
function scheduleAccounts(position) {
  state.accountsAt = Math.max(state.accountsAt, position || 0);
  clearTimeout(accountsTimer);
  accountsTimer = setTimeout(() => loadAccounts(state.accountsAt), 30);
}

const balances = new Map();
async function loadAccounts(minPosition) {
  const query = minPosition ? `?min_position=${minPosition}` : "";
  const result = await api("GET", `/accounts${query}`);
  if (!result.ok) return say(byId("bank-message"), describeError(result), false);
  const rows = result.data.map((account) => {
    const changed = balances.has(account.id) && balances.get(account.id) !== account.balance;
    balances.set(account.id, account.balance);
    return $("tr", { class: changed ? "flash" : "", "data-account": account.id },
      $("td", {}, account.id), $("td", {}, account.owner),
      $("td", { class: "num", "data-testid": `balance-${account.id}` }, String(account.balance)));
  });
  byId("accounts").replaceChildren(...(rows.length ? rows : [$("tr", { class: "empty" }, $("td", { colspan: 3 }, "no accounts yet"))]));
  const select = byId("move-money").elements.id;
  const chosen = select.value;
  select.replaceChildren(...result.data.map((account) => $("option", { value: account.id }, `${account.id} (${account.owner})`)));
  if (chosen && balances.has(chosen)) select.value = chosen;
}

async function openAccount(event) {
  event.preventDefault();
  const form = Object.fromEntries(new FormData(event.target));
  const result = await api("POST", "/accounts", form);
  if (!result.ok) return say(byId("bank-message"), describeError(result), false);
  say(byId("bank-message"), `Account ${form.id} opened (event #${result.position}).`, true);
  event.target.elements.id.value = "";
  await loadAccounts(result.position);
  byId("move-money").elements.id.value = form.id;
}

async function moveMoney(event) {
  event.preventDefault();
  const action = event.submitter ? event.submitter.value : "deposit";
  const form = event.target.elements;
  const id = form.id.value;
  if (!id) return say(byId("bank-message"), "open an account first", false);
  const result = await api("POST", `/accounts/${encodeURIComponent(id)}/${action}`, { amount: Number(form.amount.value) });
  if (!result.ok) return say(byId("bank-message"), describeError(result), false);
  say(byId("bank-message"), `${action === "deposit" ? "Deposited" : "Withdrew"} ${form.amount.value} (balance ${result.data.balance}).`, true);
  form.amount.value = "";
  await loadAccounts(result.position);
}

// -- services and the command form --------------------------------------------------------

async function loadServices() {
  const result = await api("GET", "/api/services?refresh=1");
  const box = byId("services");
  if (!result.ok) return box.replaceChildren($("p", { class: "field-error" }, describeError(result)));
  box.replaceChildren(...result.data.services.map((service) =>
    $("div", { class: "service", "data-service": service.service },
      $("h3", {}, service.service, $("span", { class: "hint" }, `v${service.version} · ${service.instances} instance${service.instances > 1 ? "s" : ""}`)),
      $("ul", {}, ...service.endpoints.map((endpoint) =>
        $("li", { onclick: () => openCall(endpoint), "data-endpoint": endpoint.name, title: endpoint.description || "" },
          $("span", { class: `kind ${endpoint.kind}` }, endpoint.kind === "view" ? "GET" : "POST"),
          endpoint.name))))));
  if (!result.data.services.length) box.replaceChildren($("p", { class: "muted" }, "no services discovered"));
}

function resolveRef(schema, root) {
  if (schema && schema.$ref && root.$defs) return root.$defs[schema.$ref.split("/").pop()] || {};
  return schema || {};
}

function fieldType(schema, root) {
  schema = resolveRef(schema, root);
  if (schema.type) return Array.isArray(schema.type) ? schema.type.find((t) => t !== "null") : schema.type;
  for (const option of schema.anyOf || []) if (option.type !== "null") return fieldType(option, root);
  return schema.properties ? "object" : "string";
}

function openCall(endpoint) {
  const route = endpoint.routes.find((r) => !r.path.includes("{")) || endpoint.routes[0];
  byId("call-card").hidden = false;
  byId("call-name").textContent = endpoint.name;
  byId("call-route").textContent = route ? `${route.method} ${route.path}` : "no route";
  byId("call-result").replaceChildren();
  const schema = endpoint.request_schema || { type: "object", properties: {} };
  const root = resolveRef(schema, schema);
  const form = byId("call-form");
  const inputs = [];
  const fields = Object.entries(root.properties || {}).map(([name, property]) => {
    const type = fieldType(property, schema);
    const resolved = resolveRef(property, schema);
    const required = (root.required || []).includes(name);
    let input;
    if (resolved.enum) input = $("select", { name }, ...resolved.enum.map((v) => $("option", { value: JSON.stringify(v) }, String(v))));
    else if (type === "boolean") input = $("select", { name }, $("option", { value: "" }, ""), $("option", { value: "true" }, "true"), $("option", { value: "false" }, "false"));
    else if (type === "object" || type === "array") input = $("textarea", { name, placeholder: type === "array" ? "[ ]" : "{ }" });
    else input = $("input", { name, type: type === "integer" || type === "number" ? "number" : (/password/i.test(name) ? "password" : "text"), step: type === "number" ? "any" : "1", placeholder: resolved.default !== undefined ? `default ${resolved.default}` : "" });
    inputs.push([name, type, input, !!resolved.enum]);
    return $("label", { "data-field": name }, `${name}${required ? " *" : ""}`, input, $("div", { class: "field-error" }));
  });
  const free = !root.properties ? $("textarea", { name: "__payload", placeholder: "JSON payload" }) : null;
  form.replaceChildren(...fields, free ? $("label", {}, "payload (JSON)", free) : null, $("button", { type: "submit", "data-testid": "call-submit" }, route && route.method === "GET" ? "Query" : "Send"));
  form.onsubmit = async (event) => {
    event.preventDefault();
    for (const error of form.querySelectorAll(".field-error")) error.textContent = "";
    const payload = {};
    try {
      if (free && free.value.trim()) Object.assign(payload, JSON.parse(free.value));
      for (const [name, type, input, isEnum] of inputs) {
        const text = input.value;
        if (text === "") continue;
        if (isEnum || type === "object" || type === "array") payload[name] = JSON.parse(text);
        else if (type === "integer" || type === "number") payload[name] = Number(text);
        else if (type === "boolean") payload[name] = text === "true";
        else payload[name] = text;
      }
    } catch (error) {
      return showResult({ ok: false, status: 0, data: { error: { message: `not JSON: ${error.message}` } } });
    }
    let result;
    if (route.method === "GET") result = await api("GET", `${route.path}?${new URLSearchParams(Object.entries(payload).map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : String(v)]))}`);
    else result = await api(route.method, route.path, payload);
    showResult(result);
    for (const field of ((result.data && result.data.error && result.data.error.details) || {}).fields || []) {
      const slot = form.querySelector(`[data-field="${CSS.escape(field.field.split(".")[0])}"] .field-error`);
      if (slot) slot.textContent = field.reason;
    }
  };
}

function showResult(result) {
  const ok = result.ok;
  byId("call-result").replaceChildren(
    $("div", {}, $("span", { class: `status ${ok ? "ok" : "error"}`, "data-testid": "call-status" }, ok ? `${result.status} OK` : `${result.status} ${(result.data && result.data.error && result.data.error.code) || "error"}`),
      result.position ? $("span", { class: "hint" }, `  event position ${result.position}`) : null),
    $("pre", {}, JSON.stringify(result.data, null, 2)));
}

// -- start --------------------------------------------------------------------------------

function main() {
  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => showTab(tab.dataset.tab));
  byId("signup").addEventListener("submit", signUp);
  byId("login").addEventListener("submit", logIn);
  byId("logout").addEventListener("click", logOut);
  byId("open-account").addEventListener("submit", openAccount);
  byId("move-money").addEventListener("submit", moveMoney);
  byId("refresh-services").addEventListener("click", loadServices);
  loadServices();
  loadAccounts();
  if (state.token) signedIn(null);
}

main();
