// Small hand-written SVG charts: every point is drawn (nothing thinned), marks for checkpoints and the best one.
"use strict";
const SVGNS = "http://www.w3.org/2000/svg";

function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVGNS, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function niceRange(values) {
  let lo = Math.min(...values), hi = Math.max(...values);
  if (!isFinite(lo)) return [0, 1];
  if (lo === hi) { lo -= 0.5; hi += 0.5; }
  const pad = (hi - lo) * 0.06;
  return [lo - pad, hi + pad];
}

// series: [{name, points: [[x, y]], color, marker: "dot"|"diamond"}]; vlines: [{x, label, best}]
function lineChart(container, series, opts) {
  opts = opts || {};
  const W = 640, H = 260, L = 52, R = 12, T = 12, B = 34;
  container.textContent = "";
  const all = series.flatMap(s => s.points);
  if (!all.length) { container.textContent = opts.empty || "no points yet"; return; }
  const xs = all.map(p => p[0]).concat((opts.vlines || []).map(v => v.x));
  const [x0, x1] = opts.xmax ? [0, Math.max(opts.xmax, ...xs)] : niceRange(xs);
  const [y0, y1] = niceRange(all.map(p => p[1]));
  const sx = x => L + (x - x0) / (x1 - x0 || 1) * (W - L - R);
  const sy = y => H - B - (y - y0) / (y1 - y0 || 1) * (H - T - B);
  const svg = svgEl("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.label || "chart"});
  svg.append(svgEl("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999"}));
  svg.append(svgEl("line", {x1: L, y1: T, x2: L, y2: H - B, stroke: "#999"}));
  let lastX = null;
  for (let i = 0; i <= 4; i++) {
    const y = y0 + (y1 - y0) * i / 4, x = x0 + (x1 - x0) * i / 4;
    svg.append(svgEl("text", {x: L - 6, y: sy(y) + 4, "text-anchor": "end", "font-size": 11, fill: "#555"}, y.toPrecision(3)));
    if (Math.round(x) === lastX) continue;  // a short axis: each whole step labelled once, where it is
    lastX = Math.round(x);
    svg.append(svgEl("text", {x: sx(lastX), y: H - B + 16, "text-anchor": "middle", "font-size": 11, fill: "#555"}, lastX));
  }
  svg.append(svgEl("text", {x: (L + W) / 2, y: H - 4, "text-anchor": "middle", "font-size": 11, fill: "#555"}, opts.xlabel || "step"));
  for (const v of opts.vlines || []) {
    svg.append(svgEl("line", {x1: sx(v.x), x2: sx(v.x), y1: T, y2: H - B, stroke: v.best ? "#d08700" : "#bbb",
                              "stroke-dasharray": v.best ? "" : "3 3", "stroke-width": v.best ? 2 : 1, class: v.best ? "best-mark" : "ckpt-mark"}));
    if (v.best) svg.append(svgEl("text", {x: sx(v.x), y: T + 10, "text-anchor": "middle", "font-size": 13, fill: "#d08700"}, "★ best"));
  }
  series.forEach((s, i) => {
    const pts = s.points.map(p => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
    if (s.points.length > 1 && s.marker !== "diamond") svg.append(svgEl("polyline", {points: pts, fill: "none", stroke: s.color, "stroke-width": 1.5}));
    const g = svgEl("g", {class: "series", "data-name": s.name});
    for (const p of s.points) {
      const x = sx(p[0]), y = sy(p[1]);
      const m = s.marker === "diamond"
        ? svgEl("polygon", {points: `${x},${y - 5} ${x + 5},${y} ${x},${y + 5} ${x - 5},${y}`, fill: s.color, class: "point"})
        : svgEl("circle", {cx: x, cy: y, r: 2.2, fill: s.color, class: "point"});
      m.append(svgEl("title", {}, `${s.name} step ${p[0]}: ${p[1].toFixed(4)}`));
      g.append(m);
    }
    svg.append(g);
    svg.append(svgEl("text", {x: L + 8, y: T + 12 + 14 * i, "text-anchor": "start", "font-size": 12, fill: s.color}, s.name));
  });
  container.append(svg);
}

// bars: [[label, value]]
function barChart(container, bars, opts) {
  opts = opts || {};
  container.textContent = "";
  if (!bars.length) return;
  const longest = Math.max(...bars.map(b => String(b[0]).length));
  const L = Math.min(210, 12 + 6.2 * Math.min(longest, 32)), W = L + 230, row = 16, H = bars.length * row + 8;
  const max = Math.max(...bars.map(b => b[1])) || 1;
  const svg = svgEl("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.label || "bars"});
  bars.forEach(([label, v], i) => {
    svg.append(svgEl("text", {x: L - 4, y: 4 + i * row + 11, "text-anchor": "end", "font-size": 11, fill: "#333"}, String(label).length > 32 ? String(label).slice(0, 31) + "…" : String(label)));
    svg.append(svgEl("rect", {x: L, y: 4 + i * row + 2, width: Math.max(1, (W - L - 40) * v / max), height: row - 4, fill: opts.color || "#55a868"}));
    svg.append(svgEl("text", {x: L + (W - L - 40) * v / max + 4, y: 4 + i * row + 11, "font-size": 11, fill: "#333"}, v));
  });
  container.append(svg);
}

function histogram(values, bins) {
  if (!values.length) return [];
  const lo = Math.min(...values), hi = Math.max(...values), n = Math.min(bins, Math.max(1, hi - lo + 1));
  const width = (hi - lo + 1) / n, counts = new Array(n).fill(0);
  for (const v of values) counts[Math.min(n - 1, Math.floor((v - lo) / width))]++;
  return counts.map((c, i) => [`${Math.round(lo + i * width)}–${Math.round(lo + (i + 1) * width) - 1}`, c]);
}
