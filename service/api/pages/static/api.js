// The pages' one way to call the API: same-origin, with the session cookie the service set
// (never a key), and the header that marks a request as coming from these pages.
(() => {
"use strict";

class ApiError extends Error {
  constructor(status, body) {
    const detail = body && (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error;
  }
}

async function api(path, { method = "GET", json, params } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const headers = { "X-Fusionrank-Page": "1", Accept: "application/json" };
  if (json !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(url, {
    method, headers, credentials: "same-origin",
    body: json === undefined ? undefined : JSON.stringify(json),
  });
  const text = await r.text();
  const body = text ? JSON.parse(text) : null;
  if (!r.ok) throw new ApiError(r.status, body);
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v === true) node.setAttribute(k, "");
    else if (v !== false && v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined && c !== false) node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

function pageConfig() {
  return JSON.parse(document.getElementById("page-config").textContent);
}

window.fr = { api, el, ApiError, pageConfig };
})();
