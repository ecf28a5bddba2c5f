// The search page: text, photo or "like this photo, but..." searches; facets with counts over
// every candidate; cards whose click, add-to-cart and purchase go back as real feedback.
(() => {
"use strict";

const { api, el, pageConfig } = window.fr;
const config = pageConfig();
const state = { photo: null, filters: {}, last: null, open: null };
const $ = (id) => document.getElementById(id);

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "muted";
}

// ---- suggestions as you type ----------------------------------------------------------------
let suggestTimer = null;
let suggestSeq = 0;
let active = -1;

function closeSuggestions() {
  $("suggestions").hidden = true;
  $("suggestions").replaceChildren();
  $("q").setAttribute("aria-expanded", "false");
  $("q").removeAttribute("aria-activedescendant");
  active = -1;
}

function highlight(i) {
  const items = [...$("suggestions").children];
  items.forEach((li, j) => li.setAttribute("aria-selected", String(i === j)));
  active = i;
  if (items[i]) $("q").setAttribute("aria-activedescendant", items[i].id);
}

async function suggest() {
  const typed = $("q").value.trim();
  const seq = ++suggestSeq;
  if (!typed) return closeSuggestions();
  let found = [];
  try {
    found = (await api("/v1/suggest", { params: { q: typed, limit: 8 } })).suggestions;
  } catch (e) {
    return closeSuggestions();  // suggestions are a help, never an error to show
  }
  if (seq !== suggestSeq) return;
  const list = $("suggestions");
  list.replaceChildren(...found.map((s, i) => el("li", {
    id: `suggestion-${i}`, role: "option", "aria-selected": "false",
    onmousedown: (ev) => { ev.preventDefault(); pick(s); },
  }, s)));
  list.hidden = !found.length;
  $("q").setAttribute("aria-expanded", String(found.length > 0));
  active = -1;
}

function pick(text) {
  $("q").value = text;
  closeSuggestions();
  search();
}

$("q").addEventListener("input", () => {
  clearTimeout(suggestTimer);
  suggestTimer = setTimeout(suggest, 120);
});
$("q").addEventListener("keydown", (ev) => {
  const items = [...$("suggestions").children];
  if ($("suggestions").hidden || !items.length) return;
  if (ev.key === "ArrowDown") { ev.preventDefault(); highlight((active + 1) % items.length); }
  else if (ev.key === "ArrowUp") { ev.preventDefault(); highlight((active - 1 + items.length) % items.length); }
  else if (ev.key === "Enter" && active >= 0) { ev.preventDefault(); pick(items[active].textContent); }
  else if (ev.key === "Escape") closeSuggestions();
});
$("q").addEventListener("blur", () => setTimeout(closeSuggestions, 100));

// ---- photo ----------------------------------------------------------------------------------
function usePhoto(file) {
  if (!file) return;
  if (!/^image\/(jpeg|png|webp)$/.test(file.type)) {
    status("Choose a JPEG, PNG or WebP photo.", true);
    return;
  }
  const reader = new FileReader();
  reader.onload = () => {
    state.photo = reader.result;
    $("photo-preview").src = reader.result;
    $("photo-preview").hidden = false;
    $("photo-clear").hidden = false;
    $("drop-text").textContent = "Searching with this photo; add words to change it:";
    $("q").placeholder = "Optional: how it should differ, e.g. in red";
    search();
  };
  reader.readAsDataURL(file);
}

function clearPhoto() {
  state.photo = null;
  $("photo").value = "";
  $("photo-preview").hidden = true;
  $("photo-clear").hidden = true;
  $("drop-text").textContent = "Search by photo: drop an image here or";
  $("q").placeholder = "Search products, e.g. red summer dress";
}

if (!config.images) {
  $("photo-row").hidden = true;  // a titles-only catalog has no photos to compare with
}
$("photo").addEventListener("change", (ev) => usePhoto(ev.target.files[0]));
$("photo-clear").addEventListener("click", () => { clearPhoto(); if ($("q").value.trim()) search(); });
const drop = $("drop");
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  drop.classList.remove("over");
  usePhoto(ev.dataTransfer.files[0]);
});

// ---- searching ------------------------------------------------------------------------------
function filtersBody() {
  const out = {};
  for (const [attr, values] of Object.entries(state.filters)) {
    if (values.size) out[attr] = [...values];
  }
  return Object.keys(out).length ? out : undefined;
}

async function search() {
  const query = $("q").value.trim();
  if (!query && !state.photo) {
    status("Type something to search for, or choose a photo.");
    return;
  }
  clearTimeout(suggestTimer);
  suggestSeq++;  // a suggestion still on its way is for words already searched
  closeSuggestions();
  status("Searching…");
  $("search-button").disabled = true;
  try {
    const body = {
      query: query || undefined,
      image: state.photo || undefined,
      k: 24,
      filters: filtersBody(),
      explain: true,
      facets: config.attributes.length ? config.attributes : undefined,
    };
    const res = await api("/v1/search", { method: "POST", json: body });
    state.last = res;
    renderFacets(res.facets || {});
    renderResults(res);
    const kind = state.photo ? (query ? "photo and words" : "photo") : "words";
    status(`${res.results.length} results for your ${kind} (model ${res.model_version}).`);
  } catch (e) {
    status(`Search failed: ${e.message}`, true);
  } finally {
    $("search-button").disabled = false;
  }
}

$("search-form").addEventListener("submit", (ev) => { ev.preventDefault(); search(); });

// ---- facets ---------------------------------------------------------------------------------
function renderFacets(facets) {
  const box = $("facets");
  box.replaceChildren();
  for (const attr of config.attributes) {
    const counted = facets[attr] || [];
    const chosen = state.filters[attr] || new Set();
    const values = new Map(counted.map((f) => [f.value, f.count]));
    for (const v of chosen) if (!values.has(v)) values.set(v, 0);
    if (!values.size) continue;
    const fs = el("fieldset", { "data-attribute": attr }, el("legend", {}, attr));
    [...values.entries()].slice(0, 12).forEach(([value, count]) => {
      const input = el("input", {
        type: "checkbox", value, checked: chosen.has(value),
        onchange: (ev) => {
          const set = state.filters[attr] || (state.filters[attr] = new Set());
          if (ev.target.checked) set.add(value); else set.delete(value);
          search();
        },
      });
      fs.append(el("label", {}, input, el("span", {}, value), el("span", { class: "count" }, count)));
    });
    box.append(fs);
  }
  if (!box.children.length && config.attributes.length) {
    box.append(el("p", { class: "muted" }, "No filters for these results."));
  }
}

// ---- results --------------------------------------------------------------------------------
function picture(url, title) {
  const ph = el("div", { class: "placeholder", role: "img", "aria-label": `No photo of ${title}` }, "no photo");
  if (!url) return ph;
  const img = el("img", { src: url, alt: title, loading: "lazy" });
  img.addEventListener("error", () => img.replaceWith(ph), { once: true });
  return img;
}

function num(v) { return typeof v === "number" ? v.toFixed(3) : "–"; }

function explanation(why) {
  if (!why) return null;
  const rows = [];
  for (const [name, c] of Object.entries(why.channels || {})) {
    rows.push([`channel ${name}`, `${num(c.score)} (rank ${c.rank ?? "–"})`]);
  }
  rows.push(["fused dense", num(why.fused)], ["learned adjustment", num(why.adjustment)]);
  for (const [name, t] of Object.entries(why.mix || {})) {
    rows.push([`mix ${name}`, `${num(t.weight)} × ${num(t.value)}`]);
  }
  if (why.memory) {
    const m = why.memory;
    rows.push(["memory lift", num(m.lift)],
      ["memory events / looks", `${num(m.events)} / ${num(m.examinations)}`],
      ["borrowed from similar queries", `${Math.round((m.borrowed_share || 0) * 100)}% of ${m.similar_queries}`]);
  } else {
    rows.push(["memory", "nothing yet for this query"]);
  }
  return el("details", {}, el("summary", {}, "Why here?"),
    el("table", {}, el("tbody", {}, rows.map(([k, v]) => el("tr", {}, el("th", { scope: "row" }, k), el("td", {}, v))))));
}

function renderResults(res) {
  const box = $("results");
  box.replaceChildren(...res.results.map((hit) => el("article", { class: "card", "data-product": hit.product_id },
    el("button", { type: "button", class: "open", onclick: () => openProduct(hit) },
      picture(hit.image_url, hit.title),
      el("span", { class: "title" }, hit.title)),
    el("span", { class: "meta" }, `#${hit.position} · score ${num(hit.score)}`),
    explanation(hit.explanation))));
  if (!res.results.length) box.append(el("p", { class: "muted" }, "Nothing found. Try other words or fewer filters."));
}

// ---- product view and feedback --------------------------------------------------------------
// An event belongs to the search that showed the product.
async function send(type, hit, searchId) {
  await api("/v1/feedback", {
    method: "POST",
    json: { search_id: searchId, product_id: hit.product_id, type },
  });
}

async function openProduct(hit) {
  state.open = { hit, searchId: state.last.search_id };
  $("product-status").textContent = "";
  $("product-title").textContent = hit.title;
  $("product-image").replaceChildren(picture(hit.image_url, hit.title));
  $("product-attributes").replaceChildren(...Object.entries(hit.attributes || {}).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]));
  $("product-description").textContent = "";
  $("product").showModal();
  try {
    await send(config.events.click, hit, state.open.searchId);
  } catch (e) {
    $("product-status").textContent = `The click was not recorded: ${e.message}`;
  }
  try {
    const p = await api(`/v1/products/${encodeURIComponent(hit.product_id)}`);
    $("product-description").textContent = p.description || "";
  } catch (e) { /* the card already shows what matters */ }
}

async function act(type, label) {
  const { hit, searchId } = state.open;
  try {
    await send(type, hit, searchId);
    $("product-status").className = "ok";
    $("product-status").textContent = `${label}: recorded.`;
  } catch (e) {
    $("product-status").className = "error";
    $("product-status").textContent = `${label} failed: ${e.message}`;
  }
}

if (config.events.cart) {
  $("add-to-cart").addEventListener("click", () => act(config.events.cart, "Added to cart"));
} else {
  $("add-to-cart").hidden = true;
}
$("buy").addEventListener("click", () => act(config.events.purchase, "Bought"));
$("close-product").addEventListener("click", () => $("product").close());

$("catalog-size").textContent = config.products ? `${config.products.toLocaleString()} products` : "";
$("q").focus();
})();
