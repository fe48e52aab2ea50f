// The console's transport: calls and the live event feed over the gateway's WebSocket (/ws),
// falling back to HTTP calls and the SSE feed when the socket cannot be had.
//
// window.microSocket.call(method, path, body) answers a gateway route (POST /accounts, GET
// /accounts/{id}?min_position=3, ...) over the socket in the shape the console's api() uses,
// or null when it cannot (no socket, a route it does not know, a query it would have to
// coerce): api() then uses HTTP. subscribe(onEvent, onState) follows the event feed over the
// socket, or returns false so the console opens an EventSource instead.
"use strict";

(() => {
  const TOKEN_KEY = "micro.token";
  const OPEN_TIMEOUT = 3000;
  const CALL_TIMEOUT = 15000;

  const socket = {
    ws: null,
    token: null,
    opening: null,
    available: typeof WebSocket === "function",
    failures: 0,
    nextId: 1,
    pending: new Map(),
    routes: null,
    routesAt: 0,
    feed: null, // { onEvent, onState, position }
  };

  const currentToken = () => sessionStorage.getItem(TOKEN_KEY);

  function showTransport() {
    const pill = document.getElementById("transport");
    if (!pill) return;
    const live = socket.ws && socket.ws.readyState === WebSocket.OPEN;
    pill.textContent = live ? "WebSocket" : socket.available ? "connecting" : "HTTP + SSE";
    pill.classList.toggle("live", !!live);
  }

  // -- the socket ---------------------------------------------------------------------------

  function open() {
    if (!socket.available) return Promise.resolve(null);
    const token = currentToken();
    if (socket.ws && socket.token === token && socket.ws.readyState === WebSocket.OPEN) return Promise.resolve(socket.ws);
    if (socket.opening && socket.token === token) return socket.opening;
    close();
    socket.token = token;
    socket.opening = new Promise((resolve) => {
      let settled = false;
      const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
      const give = (value) => { if (!settled) { settled = true; socket.opening = null; resolve(value); } };
      const timer = setTimeout(() => { ws.close(); give(null); }, OPEN_TIMEOUT);
      ws.onopen = () => {
        clearTimeout(timer);
        socket.ws = ws;
        socket.failures = 0;
        if (token) ws.send(JSON.stringify({ token }));
        showTransport();
        if (socket.feed) sendSubscribe();
        give(ws);
      };
      ws.onmessage = (message) => receive(JSON.parse(message.data));
      ws.onclose = () => {
        clearTimeout(timer);
        if (socket.ws === ws) socket.ws = null;
        failPending();
        if (!settled) {
          // A socket that never opened: after two tries, HTTP and SSE for this page.
          socket.failures += 1;
          if (socket.failures >= 2) socket.available = false;
        }
        give(null);
        showTransport();
        if (socket.feed) {
          if (!socket.available) fallBack();
          else {
            socket.feed.onState("reconnecting", false);
            setTimeout(() => { if (socket.feed) open(); }, 1000);
          }
        }
      };
    });
    return socket.opening;
  }

  function failPending() {
    for (const [, waiter] of socket.pending) waiter({ ok: false, status: 0, data: { error: { code: "disconnected", message: "the connection closed before the reply came" } }, position: null });
    socket.pending.clear();
  }

  function close() {
    if (socket.ws) {
      const ws = socket.ws;
      socket.ws = null;
      ws.onclose = null;
      ws.close();
      failPending();
    }
  }

  function receive(frame) {
    if (frame.id !== undefined && socket.pending.has(frame.id)) {
      const waiter = socket.pending.get(frame.id);
      socket.pending.delete(frame.id);
      if (frame.error) waiter({ ok: false, status: frame.status, data: { error: frame.error }, position: null });
      else {
        // The session slid: the socket already uses the fresh token, so the page keeping it
        // must not look like a change of user (which reopens the socket).
        if (frame.token && socket.token) socket.token = frame.token;
        waiter({ ok: true, status: 200, data: frame.result, position: frame.position === undefined ? null : frame.position, token: frame.token || null });
      }
    } else if (frame.event && socket.feed) {
      socket.feed.position = Math.max(socket.feed.position, frame.event.position);
      socket.feed.onEvent(frame.event);
    } else if (frame.subscribed && socket.feed) {
      socket.feed.onState("live", true);
    } else if (frame.error && socket.feed && frame.id === undefined) {
      socket.feed.onState("off", false);
    }
  }

  // -- routes -> commands ----------------------------------------------------------------

  async function routes(fresh) {
    // Looked up again when a route is missing, at most every 5 s: services come and go.
    if (socket.routes && !(fresh && Date.now() - socket.routesAt > 5000)) return socket.routes;
    socket.routesAt = Date.now();
    const response = await fetch("/api/services");
    if (!response.ok) return [];
    const found = [];
    for (const service of (await response.json()).services) {
      for (const endpoint of service.endpoints) {
        for (const route of endpoint.routes) {
          const names = [];
          const pattern = route.path.replace(/[.*+?^$()|[\]\\]/g, "\\$&").replace(/\{([^}]+)\}/g, (_, name) => { names.push(name); return "([^/]+)"; });
          found.push({ method: route.method, regex: new RegExp(`^${pattern}$`), names, endpoint });
        }
      }
    }
    socket.routes = found;
    return found;
  }

  function coerce(value, schema) {
    const type = schema && schema.type;
    if (type === "integer" || type === "number") return Number(value);
    return value;
  }

  async function call(method, path, body) {
    if (!socket.available) return null;
    const url = new URL(path, location.origin);
    const query = [...url.searchParams.keys()];
    if (query.some((key) => key !== "min_position")) return null; // HTTP coerces query strings by schema
    const match = (list) => list.find((r) => r.method === method && r.regex.test(url.pathname));
    const route = match(await routes(false)) || match(await routes(true));
    if (!route) return null;
    const ws = await open();
    if (!ws) return null;
    const values = route.regex.exec(url.pathname).slice(1);
    const properties = ((route.endpoint.request_schema || {}).properties) || {};
    const payload = { ...(body || {}) };
    route.names.forEach((name, index) => { payload[name] = coerce(decodeURIComponent(values[index]), properties[name]); });
    const id = socket.nextId++;
    const frame = { id, act: route.endpoint.name, payload };
    const minPosition = url.searchParams.get("min_position");
    if (minPosition) frame.min_position = Number(minPosition);
    return new Promise((resolve) => {
      const timer = setTimeout(() => { socket.pending.delete(id); resolve({ ok: false, status: 504, data: { error: { code: "timeout", message: "no reply in time" } }, position: null }); }, CALL_TIMEOUT);
      socket.pending.set(id, (result) => { clearTimeout(timer); resolve(result); });
      ws.send(JSON.stringify(frame));
    });
  }

  // -- the event feed ----------------------------------------------------------------------

  function sendSubscribe() {
    const frame = { subscribe: "events" };
    if (socket.feed.position) frame.from_position = socket.feed.position + 1;
    socket.ws.send(JSON.stringify(frame));
  }

  function fallBack() {
    const feed = socket.feed;
    socket.feed = null;
    if (feed && feed.fallback) feed.fallback();
  }

  function subscribe(onEvent, onState, fallback) {
    if (!socket.available) return false;
    unsubscribe();
    socket.feed = { onEvent, onState, fallback, position: 0 };
    onState("connecting", false);
    // An open socket with the right token subscribes now; a new one does when it opens.
    if (socket.ws && socket.ws.readyState === WebSocket.OPEN && socket.token === currentToken()) sendSubscribe();
    else open().then((ws) => { if (!ws && !socket.available) fallBack(); });
    return true;
  }

  function unsubscribe() {
    if (socket.feed && socket.ws && socket.ws.readyState === WebSocket.OPEN) socket.ws.send(JSON.stringify({ unsubscribe: "events" }));
    socket.feed = null;
  }

  window.microSocket = { call, subscribe, unsubscribe, open, get available() { return socket.available; } };
  document.addEventListener("DOMContentLoaded", showTransport);
  showTransport();
})();
