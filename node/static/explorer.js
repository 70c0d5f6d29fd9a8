// CareLedger explorer: draws /verified/explorer (served by this node) with plain DOM and inline SVG.
// Every figure carries the "verified" flag the node's light client set; nothing is loaded from elsewhere.
"use strict";

const REFRESH_MS = 3000;
const SVG_NS = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function mark(verified, reason) {
  const span = el("span", { class: verified ? "mark ok verified-mark" : "mark no", title: reason || "" },
                  verified ? "\u2713 verified" : "unverified");
  span.dataset.verified = verified ? "true" : "false";
  return span;
}

function dollars(cents) {
  if (cents === null || cents === undefined) return "–";
  const sign = cents < 0 ? "-" : "";
  const abs = Math.abs(cents);
  const whole = Math.floor(abs / 100).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return sign + "$" + whole + "." + String(abs % 100).padStart(2, "0");
}

function short(hex) { return hex ? hex.slice(0, 12) + "…" : ""; }

function fillRows(tableId, rows) {
  const body = document.querySelector("#" + tableId + " tbody");
  body.replaceChildren(...rows.map(cells => el("tr", {}, ...cells.map(cell =>
    cell instanceof Node && cell.tagName === "TD" ? cell : el("td", {}, cell)))));
}

// A horizontal bar chart as inline SVG: items [{label, value, verified}].
function barChart(containerId, items, format) {
  const container = document.getElementById(containerId);
  if (!items.length) { container.replaceChildren(el("p", {}, "nothing recorded yet")); return; }
  const rowHeight = 22, labelWidth = 150, width = 520, barSpace = width - labelWidth - 140;
  const max = Math.max(...items.map(i => Math.abs(i.value)), 1);
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${items.length * rowHeight + 4}`);
  svg.setAttribute("role", "img");
  items.forEach((item, index) => {
    const y = index * rowHeight + 2;
    const label = document.createElementNS(SVG_NS, "text");
    label.setAttribute("x", 0); label.setAttribute("y", y + 15); label.textContent = item.label;
    const bar = document.createElementNS(SVG_NS, "rect");
    bar.setAttribute("x", labelWidth); bar.setAttribute("y", y + 3);
    bar.setAttribute("width", Math.max(1, barSpace * Math.abs(item.value) / max)); bar.setAttribute("height", 14);
    bar.setAttribute("fill", item.verified ? "#2f8f4e" : "#9aa3af");
    const value = document.createElementNS(SVG_NS, "text");
    value.setAttribute("x", labelWidth + barSpace + 6); value.setAttribute("y", y + 15);
    value.textContent = format(item.value) + (item.verified ? " \u2713" : "");
    svg.append(label, bar, value);
  });
  container.replaceChildren(svg);
}

function render(data) {
  const chain = data.chain;
  document.getElementById("node-line").textContent =
    `${chain.chain_id} · node ${chain.moniker} (${chain.role})`;
  document.getElementById("chain-height").textContent = chain.height;
  document.getElementById("chain-height-mark").replaceChildren(
    mark(chain.height_verified, chain.light_client ? "" : "this node runs no light client"));
  document.getElementById("verified-height").textContent =
    chain.verified_height === null ? "no light client on this node" : chain.verified_height;
  document.getElementById("chain-view").textContent = chain.view;
  document.getElementById("validator-count").textContent =
    `${chain.validators.validators.length} (quorum ${chain.validators.quorum})`;
  document.getElementById("evidence-count").textContent = chain.evidence.length;
  const failure = chain.light_client && chain.light_client.failure;
  const alert = document.getElementById("light-failure");
  alert.hidden = !failure;
  alert.textContent = failure ? `light client stopped at height ${failure.height}: ${failure.reason}` : "";

  fillRows("blocks", chain.recent_blocks.map(b =>
    [b.height, b.view, b.txs, el("span", { class: "hash" }, short(b.hash))]));
  fillRows("validators", chain.validators.validators.map(v => [v.name, el("span", { class: "hash" }, short(v.public_key))]));
  barChart("block-chart", chain.recent_blocks.slice().reverse().map(b =>
    ({ label: "block " + b.height, value: b.txs, verified: chain.verified_height !== null && b.height <= chain.verified_height })),
    v => v + " txs");

  barChart("tx-chart", data.tx_types.map(t => ({ label: t.type, value: t.count, verified: t.verified })), v => String(v));
  document.getElementById("failed-txs").textContent = `${data.failed_txs} failed transaction(s) (receipt not ok)`;

  fillRows("programs", data.programs.map(p => [p.id, p.type, p.performance_year, p.status,
    (p.participants || []).map(x => `${x[0]} ${x[1] / 100}%`).join(", "), mark(p.verified, p.reason)]));
  fillRows("settlements", data.settlements.map(s => [
    el("span", { class: "settlement-id" }, s.id), s.stage, el("td", { class: "num amount" }, dollars(s.amount_due_cents)),
    s.height, mark(s.verified, s.reason)]));

  barChart("quality-chart", data.quality.map(q => ({
    label: `${q.provider} ${q.measure_id}`, value: q.rate ? q.rate[0] / Math.max(q.rate[1], 1) * 100 : 0,
    verified: q.verified })), v => v.toFixed(1) + "%");
  barChart("cost-chart", data.costs.map(c => ({ label: c.provider, value: c.paid_cents, verified: c.verified })), dollars);
  document.body.dataset.loaded = "true";
}

async function refresh() {
  try {
    const response = await fetch("/verified/explorer", { cache: "no-store" });
    if (!response.ok) throw new Error(`${response.status} ${await response.text()}`);
    render(await response.json());
  } catch (error) {
    document.getElementById("node-line").textContent = "cannot load: " + error;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
