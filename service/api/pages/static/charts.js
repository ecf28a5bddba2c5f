// Small SVG charts drawn from the service's JSON: lines over dates or numbers, and bars.
// Each chart is a <figure> with a caption, an aria-label summary and a legend.
(() => {
"use strict";

const PALETTE = ["#0a58ca", "#b35900", "#116329", "#8250df", "#a40e26", "#1b7c83", "#57606a"];
const NS = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function fmt(v) {
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString();
  if (Number.isInteger(v)) return String(v);
  return v.toFixed(Math.abs(v) < 1 ? 3 : 2);
}

function figure(container, title, summary) {
  const fig = document.createElement("figure");
  fig.className = "chart";
  const cap = document.createElement("figcaption");
  cap.textContent = title;
  fig.append(cap);
  container.replaceChildren(fig);
  const svg = svgEl("svg", {
    class: "chart", viewBox: "0 0 480 220", role: "img", "aria-label": `${title}: ${summary}`,
  });
  fig.append(svg);
  return { fig, svg };
}

function legend(fig, names) {
  const box = document.createElement("div");
  box.className = "legend";
  names.forEach((n, i) => {
    const s = document.createElement("span");
    s.style.setProperty("--c", PALETTE[i % PALETTE.length]);
    s.textContent = n;
    box.append(s);
  });
  fig.append(box);
}

function axes(svg, x0, x1, y0, y1, yMax, yMin) {
  const g = svgEl("g");
  g.append(svgEl("line", { x1: x0, y1: y1, x2: x1, y2: y1, stroke: "#d0d7de" }));
  g.append(svgEl("line", { x1: x0, y1: y0, x2: x0, y2: y1, stroke: "#d0d7de" }));
  for (let i = 0; i <= 4; i++) {
    const v = yMin + ((yMax - yMin) * i) / 4;
    const y = y1 - ((y1 - y0) * i) / 4;
    g.append(svgEl("line", { x1: x0, y1: y, x2: x1, y2: y, stroke: "#eef1f4" }));
    g.append(svgEl("text", { x: x0 - 4, y: y + 4, "text-anchor": "end" }, fmt(v)));
  }
  svg.append(g);
}

// series: [{name, points: [[x, y], ...]}], x numbers (or Date ms with opts.dates).
function lineChart(container, title, series, opts = {}) {
  const pts = series.flatMap((s) => s.points);
  const summary = pts.length
    ? series.map((s) => `${s.name}: ${s.points.length} points, last ${fmt(s.points.at(-1)[1])}`).join("; ")
    : "no data yet";
  const { fig, svg } = figure(container, title, summary);
  fig.dataset.points = String(pts.length);
  if (!pts.length) {
    svg.append(svgEl("text", { x: 240, y: 110, "text-anchor": "middle" }, "no data yet"));
    return;
  }
  const [x0, x1, y0, y1] = [48, 470, 12, 190];
  let xMin = Math.min(...pts.map((p) => p[0])), xMax = Math.max(...pts.map((p) => p[0]));
  if (xMin === xMax) { xMin -= 1; xMax += 1; }
  const yMin = opts.yMin ?? 0;
  const yMax = opts.yMax ?? niceMax(Math.max(...pts.map((p) => p[1])));
  axes(svg, x0, x1, y0, y1, yMax, yMin);
  const sx = (x) => x0 + ((x - xMin) / (xMax - xMin)) * (x1 - x0);
  const sy = (y) => y1 - ((y - yMin) / (yMax - yMin || 1)) * (y1 - y0);
  const label = (x) => (opts.dates ? new Date(x).toISOString().slice(5, 10) : fmt(x));
  svg.append(svgEl("text", { x: x0, y: 212 }, label(xMin)));
  svg.append(svgEl("text", { x: x1, y: 212, "text-anchor": "end" }, label(xMax)));
  series.forEach((s, i) => {
    const c = PALETTE[i % PALETTE.length];
    const sorted = [...s.points].sort((a, b) => a[0] - b[0]);
    if (sorted.length > 1) {
      svg.append(svgEl("polyline", {
        points: sorted.map((p) => `${sx(p[0])},${sy(p[1])}`).join(" "),
        fill: "none", stroke: c, "stroke-width": 2,
      }));
    }
    for (const p of sorted) {
      const dot = svgEl("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 3, fill: c });
      dot.append(svgEl("title", {}, `${s.name} ${label(p[0])}: ${fmt(p[1])}`));
      svg.append(dot);
    }
  });
  legend(fig, series.map((s) => s.name));
}

// bars: [{label, value}]
function barChart(container, title, bars, opts = {}) {
  const summary = bars.length ? bars.map((b) => `${b.label} ${fmt(b.value)}`).join(", ") : "no data yet";
  const { fig, svg } = figure(container, title, summary);
  fig.dataset.points = String(bars.length);
  if (!bars.length) {
    svg.append(svgEl("text", { x: 240, y: 110, "text-anchor": "middle" }, "no data yet"));
    return;
  }
  const [x0, x1, y0, y1] = [48, 470, 12, 190];
  const yMax = opts.yMax ?? niceMax(Math.max(...bars.map((b) => b.value)));
  axes(svg, x0, x1, y0, y1, yMax, 0);
  const w = (x1 - x0) / bars.length;
  const every = Math.ceil(bars.length / 12);
  bars.forEach((b, i) => {
    const h = ((y1 - y0) * b.value) / yMax;
    const rect = svgEl("rect", {
      x: x0 + i * w + w * 0.12, y: y1 - h, width: w * 0.76, height: Math.max(h, 0),
      fill: PALETTE[(opts.colourBy ? i : 0) % PALETTE.length],
    });
    rect.append(svgEl("title", {}, `${b.label}: ${fmt(b.value)}`));
    svg.append(rect);
    if (i % every === 0) {
      svg.append(svgEl("text", { x: x0 + i * w + w / 2, y: 206, "text-anchor": "middle" }, b.label));
    }
  });
}

window.charts = { lineChart, barChart, PALETTE };
})();
