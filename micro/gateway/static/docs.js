// The API docs page: renders /openapi.json and lets you try each call. No dependencies.
"use strict";

const $ = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
};

function resolve(schema, document) {
  if (schema && schema.$ref) {
    const name = schema.$ref.split("/").pop();
    return document.components.schemas[name] || {};
  }
  return schema || {};
}

// An example payload built from a schema: defaults, first enum values, typed blanks.
function example(schema, document, depth = 0) {
  schema = resolve(schema, document);
  if (depth > 4) return null;
  if ("default" in schema) return schema.default;
  if (schema.enum) return schema.enum[0];
  if (schema.anyOf) return example(schema.anyOf.find((s) => s.type !== "null") || {}, document, depth + 1);
  switch (schema.type) {
    case "object": {
      const out = {};
      for (const [key, value] of Object.entries(schema.properties || {})) {
        out[key] = example(value, document, depth + 1);
      }
      return out;
    }
    case "array": return [];
    case "integer": return schema.minimum ?? (schema.exclusiveMinimum !== undefined ? schema.exclusiveMinimum + 1 : 0);
    case "number": return schema.minimum ?? 0;
    case "boolean": return false;
    case "string": return "";
    default: return schema.properties ? example({ ...schema, type: "object" }, document, depth) : null;
  }
}

async function send(method, path, parameters, bodyText, output) {
  let url = path;
  const query = new URLSearchParams();
  for (const [name, where, input] of parameters) {
    if (!input.value) continue;
    if (where === "path") url = url.replace(`{${name}}`, encodeURIComponent(input.value));
    else query.append(name, input.value);
  }
  if ([...query].length) url += "?" + query;
  const headers = {};
  const token = document.getElementById("token").value.trim();
  if (token) headers.Authorization = `Bearer ${token}`;
  const options = { method, headers };
  if (method !== "GET") {
    headers["Content-Type"] = "application/json";
    options.body = bodyText;
  }
  output.replaceChildren($("span", { class: "muted" }, `${method} ${url} …`));
  const started = performance.now();
  const response = await fetch(url, options);
  const text = await response.text();
  let shown = text;
  try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* not JSON */ }
  const position = response.headers.get("X-Micro-Position");
  output.replaceChildren(
    $("div", {},
      $("span", { class: response.ok ? "status-ok" : "status-bad" }, `${response.status} ${response.statusText}`),
      ` in ${Math.round(performance.now() - started)} ms`,
      position ? `, X-Micro-Position: ${position}` : ""),
    $("pre", {}, shown),
  );
}

function operationView(path, method, operation, document) {
  const parameters = [];
  const body = $("div", { class: "body" });
  if (operation.description) body.append($("p", { class: "muted" }, operation.description));
  for (const parameter of operation.parameters || []) {
    const input = $("input", { placeholder: parameter.required ? "required" : "optional", "data-name": parameter.name });
    parameters.push([parameter.name, parameter.in, input]);
    body.append($("label", { class: "param" }, `${parameter.name} (${parameter.in})`, input));
  }
  let textarea = null;
  if (operation.requestBody) {
    const schema = operation.requestBody.content["application/json"].schema;
    textarea = $("textarea", { spellcheck: "false" });
    textarea.value = JSON.stringify(example(schema, document), null, 2);
    body.append($("div", { class: "muted" }, "JSON body"), textarea);
    const schemaView = $("details", {}, $("summary", {}, "schema"), $("pre", {}, JSON.stringify(schema, null, 2)));
    body.append(schemaView);
  }
  const output = $("div", { class: "output" });
  body.append(
    $("button", { onclick: () => send(method.toUpperCase(), path, parameters, textarea ? textarea.value : "", output).catch((error) => output.replaceChildren($("pre", {}, String(error)))) }, "Send"),
    output,
  );
  return $("details", {},
    $("summary", {}, $("span", { class: `method ${method}` }, method.toUpperCase()), $("span", { class: "path" }, path), $("span", { class: "summary" }, operation.summary || "")),
    body);
}

async function main() {
  const response = await fetch("/openapi.json");
  const document = await response.json();
  window.document.getElementById("title").textContent = document.info.title;
  window.document.getElementById("description").textContent = document.info.description || "";
  const byTag = new Map();
  for (const [path, methods] of Object.entries(document.paths)) {
    for (const [method, operation] of Object.entries(methods)) {
      const tag = (operation.tags || ["other"])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(operationView(path, method, operation, document));
    }
  }
  const main = window.document.getElementById("operations");
  main.replaceChildren();
  if (!byTag.size) main.append($("p", { class: "muted" }, "No services discovered yet."));
  for (const [tag, views] of [...byTag].sort()) main.append($("h2", {}, tag), ...views);
}

main().catch((error) => {
  document.getElementById("operations").replaceChildren($("pre", {}, String(error)));
});
