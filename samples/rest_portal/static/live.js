// The live panel of the micro console: per-command rate and latency as small charts, and
// the model lag of each service, polled from the gateway's /api/stats (the same view as
// `micro top --once --json`). Self-contained: it touches only #live and its own styles.
"use strict";

(() => {
  const POLL_MS = 2000;
  const KEEP = 60; // points per chart: two minutes at one poll every two seconds
  const history = new Map(); // "service/command" -> {rate: [], p50: [], p99: []}
  const box = document.getElementById("live");
  if (!box) return;

  const svgNS = "http://www.w3.org/2000/svg";
  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  };

  // A sparkline: each series scaled to the largest value any of them reached.
  function chart(series, label) {
    const width = 110, height = 24;
    const svg = document.createElementNS(svgNS, "svg");
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("class", "spark");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", label);
    const top = Math.max(1e-9, ...series.flatMap((s) => s.values));
    for (const { values, name } of series) {
      if (values.length < 2) continue;
      const step = width / (KEEP - 1);
      const offset = width - step * (values.length - 1);
      const points = values.map((v, i) => `${(offset + i * step).toFixed(1)},${(height - 2 - (v / top) * (height - 4)).toFixed(1)}`);
      const line = document.createElementNS(svgNS, "polyline");
      line.setAttribute("points", points.join(" "));
      line.setAttribute("class", name);
      svg.append(line);
    }
    return svg;
  }

  function remember(key, row) {
    const past = history.get(key) || { rate: [], p50: [], p99: [] };
    past.rate.push(row.rate || 0);
    past.p50.push(row.p50_ms || 0);
    past.p99.push(row.p99_ms || 0);
    for (const values of Object.values(past)) if (values.length > KEEP) values.shift();
    history.set(key, past);
    return past;
  }

  function render(view) {
    const services = view.services || [];
    if (!services.length) {
      box.replaceChildren(el("p", { class: "muted" }, "no services answer yet"));
      return;
    }
    box.replaceChildren(...services.map((service) => {
      const lag = service.lag;
      const lagText = lag === null || lag === undefined ? "no models" : `lag ${lag}`;
      const head = el("div", { class: "live-head" },
        el("strong", {}, service.service),
        el("span", { class: "hint" }, `${service.instances} instance${service.instances === 1 ? "" : "s"}`),
        el("span", { class: `lag ${lag ? "behind" : "caught-up"}`, "data-testid": "live-lag" }, lagText));
      // Busy commands first; those never called stay out of the way.
      const busy = service.commands.filter((row) => row.requests > 0).sort((a, b) => b.requests - a.requests);
      const idle = service.commands.length - busy.length;
      const rows = busy.map((row) => {
        const past = remember(`${service.service}/${row.command}`, row);
        const rate = row.rate === null || row.rate === undefined ? "…" : row.rate.toFixed(1);
        return el("tr", { "data-testid": "live-row", "data-command": row.command },
          el("td", { class: "name" }, row.command),
          el("td", { class: "figure" }, el("span", {}, `${rate}/s`),
            chart([{ values: past.rate, name: "rate" }], `rate of ${row.command}`)),
          el("td", { class: "figure" }, el("span", {}, `${row.p50_ms.toFixed(1)} / ${row.p99_ms.toFixed(1)} ms`),
            chart([{ values: past.p99, name: "p99" }, { values: past.p50, name: "p50" }], `latency of ${row.command}`)),
          el("td", { class: `num ${row.errors ? "errors" : ""}` }, String(row.errors)));
      });
      const table = el("table", { class: "live-table" },
        el("thead", {}, el("tr", {}, ...["command", "rate", "p50 / p99", "errors"].map((t) => el("th", {}, t)))),
        el("tbody", {}, ...rows));
      const footer = idle ? el("p", { class: "hint" }, `${idle} command${idle === 1 ? "" : "s"} not called yet`) : null;
      return el("div", { class: "live-service", "data-testid": "live-service", "data-service": service.service }, head, table, footer);
    }));
  }

  let timer = null;
  async function poll() {
    timer = null;
    try {
      const response = await fetch("/api/stats", { cache: "no-store" });
      if (response.ok) render(await response.json());
    } catch (_) { /* the gateway is away: try again on the next tick */ }
    if (!document.hidden) timer = setTimeout(poll, POLL_MS);
  }
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && timer === null) poll();
  });
  poll();
})();
