// The floor plan: the house from /api/events (Server-Sent Events), commands by fetch.
'use strict';

const SVG = 'http://www.w3.org/2000/svg';
const plan = document.getElementById('plan');
const house = { objects: new Map(), rooms: [], peers: [], presses: {}, me: null };
let view = { x: 0, y: 0, w: 10, h: 10, r: 0.35 };
let drag = null;
let toastTimer = null;

function el(name, attrs, parent) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function toast(text) {
  const t = document.getElementById('toast');
  t.textContent = text;
  t.classList.add('show');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => t.classList.remove('show'), 3000);
}

function num(v) { return typeof v === 'number' && isFinite(v) ? v : 0; }

// Where each object is drawn: its x/y, objects sharing a spot set side by side.
function spots() {
  const seen = new Map();
  const out = new Map();
  for (const o of [...house.objects.values()].sort((a, b) => a.id.localeCompare(b.id))) {
    const key = num(o.x).toFixed(2) + ',' + num(o.y).toFixed(2);
    const n = seen.get(key) || 0;
    seen.set(key, n + 1);
    out.set(o.id, { x: num(o.x) + n * view.r * 2.6, y: num(o.y) });
  }
  return out;
}

// The view box around every room and object.
function fit() {
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  const grow = (x, y) => { x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y); };
  for (const r of house.rooms) { grow(r.x, r.y); grow(r.x + r.width, r.y + r.height); }
  for (const o of house.objects.values()) grow(num(o.x), num(o.y));
  if (!isFinite(x0)) { x0 = 0; y0 = 0; x1 = 10; y1 = 10; }
  const size = Math.max(x1 - x0, y1 - y0, 2);
  const pad = size * 0.04;
  view = { x: x0 - pad, y: y0 - pad, w: x1 - x0 + 2 * pad, h: y1 - y0 + 2 * pad, r: size / 40 };
  plan.setAttribute('viewBox', `${view.x} ${view.y} ${view.w} ${view.h}`);
}

function render() {
  if (drag) return;
  fit();
  plan.textContent = '';
  const rooms = el('g', { id: 'rooms' }, plan);
  for (const r of house.rooms) {
    const g = el('g', { class: 'room', 'data-room': r.room }, rooms);
    el('rect', { x: r.x, y: r.y, width: r.width, height: r.height, rx: view.r * 0.3 }, g);
    const t = el('text', { x: r.x + view.r * 0.5, y: r.y + view.r * 1.4, 'font-size': view.r * 1.1 }, g);
    t.textContent = r.room;
  }
  const objs = el('g', { id: 'objects' }, plan);
  const at = spots();
  for (const o of house.objects.values()) drawObject(o, at.get(o.id), objs);
}

function icon(kind, g, r) {
  const body = { class: 'body' };
  if (kind === 'input') {
    el('circle', { ...body, r }, g);
    el('circle', { class: 'glyph', r: r * 0.45 }, g);
  } else if (kind === 'virtual') {
    el('path', { ...body, d: `M0 ${-r} L${r} 0 L0 ${r} L${-r} 0 Z` }, g);
  } else if (kind === 'serial-channel' || kind === 'serial') {
    el('rect', { ...body, x: -r, y: -r, width: 2 * r, height: 2 * r, rx: r * 0.2 }, g);
    el('path', { class: 'glyph', d: `M${-r * 0.35} ${-r * 0.5} V${-r * 0.1} M${r * 0.35} ${-r * 0.5} V${-r * 0.1} M${-r * 0.5} ${-r * 0.1} H${r * 0.5} V${r * 0.2} A${r * 0.5} ${r * 0.5} 0 0 1 ${-r * 0.5} ${r * 0.2} Z` }, g);
  } else {
    // A relay: a light bulb.
    el('circle', { ...body, r }, g);
    el('path', { class: 'glyph', d: `M${-r * 0.3} ${r * 0.45} H${r * 0.3} M${-r * 0.2} ${r * 0.65} H${r * 0.2} M${-r * 0.3} ${r * 0.45} C${-r * 0.3} ${r * 0.1} ${-r * 0.55} 0 ${-r * 0.55} ${-r * 0.25} A${r * 0.55} ${r * 0.55} 0 1 1 ${r * 0.55} ${-r * 0.25} C${r * 0.55} 0 ${r * 0.3} ${r * 0.1} ${r * 0.3} ${r * 0.45}` }, g);
  }
}

// Who holds an object, one short line each, so the labels of neighbours do not run into
// each other.
function holderLines(o) {
  if (o.conflict) return ['claimed by', ...o.conflict];
  const who = o['holder-name'] || (o.kind === 'virtual' ? 'any instance' : '');
  return (o.available === false ? ['unavailable', who] : [who]).filter(Boolean);
}

function drawObject(o, spot, parent) {
  const old = plan.querySelector(`[data-object="${CSS.escape(o.id)}"]`);
  const g = el('g', {
    class: 'obj', tabindex: 0, role: 'button',
    'data-object': o.id, 'data-kind': o.kind || '',
    'data-state': o.state || '', 'data-available': String(o.available !== false),
    'aria-label': `${o.name || o.id}: ${o.state || ''}${o.available === false ? ' (unavailable)' : ''}`,
    transform: `translate(${spot.x} ${spot.y})`,
  });
  const r = view.r;
  icon(o.kind, g, r);
  const name = el('text', { y: r * 2.1, 'font-size': r * 0.8 }, g);
  name.textContent = o.name || o.id;
  const lines = holderLines(o);
  lines.forEach((line, i) => {
    const holder = el('text', { class: 'holder', y: r * (2.9 + 0.7 * i), 'font-size': r * 0.6 }, g);
    holder.textContent = line;
  });
  // The last press seen live, else the one the house recorded (its `event` property).
  const press = house.presses[o.id] || (o.event ? { event: o.event } : null);
  if (o.kind === 'input') {
    const y = r * (2.9 + 0.7 * Math.max(lines.length, 1));
    const p = el('text', { class: 'press', y, 'font-size': r * 0.6, 'data-press': press ? press.event : '' }, g);
    const when = press && press.at ? ` · ${new Date(press.at).toLocaleTimeString()}` : '';
    p.textContent = press ? `last press: ${press.event}${when}` : 'no press yet';
  }
  const title = el('title', {}, g);
  title.textContent = `${o.id} (${o.kind || '?'}) in ${o.room || '?'}: ${o.state || ''}`;
  g.addEventListener('pointerdown', down);
  g.addEventListener('pointermove', moveDrag);
  g.addEventListener('pointerup', up);
  g.addEventListener('pointercancel', () => { drag = null; render(); });
  g.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); toggle(o.id); }
  });
  if (old) old.replaceWith(g); else (parent || plan.querySelector('#objects') || plan).appendChild(g);
}

function point(ev) {
  const m = plan.getScreenCTM();
  const p = new DOMPoint(ev.clientX, ev.clientY).matrixTransform(m.inverse());
  return { x: p.x, y: p.y };
}

function down(ev) {
  if (ev.button !== undefined && ev.button !== 0) return;
  ev.preventDefault();
  const g = ev.currentTarget;
  g.setPointerCapture(ev.pointerId);
  g.focus({ preventScroll: true });
  drag = { g, id: g.dataset.object, sx: ev.clientX, sy: ev.clientY, moved: false };
}

function moveDrag(ev) {
  if (!drag || drag.g !== ev.currentTarget) return;
  if (!drag.moved && Math.hypot(ev.clientX - drag.sx, ev.clientY - drag.sy) < 6) return;
  drag.moved = true;
  drag.g.classList.add('dragging');
  const p = point(ev);
  drag.g.setAttribute('transform', `translate(${p.x} ${p.y})`);
}

function up(ev) {
  if (!drag || drag.g !== ev.currentTarget) return;
  const d = drag;
  drag = null;
  d.g.classList.remove('dragging');
  if (d.moved) moveTo(d.id, point(ev)); else toggle(d.id);
}

async function post(path, body) {
  const r = await fetch(path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  if (r.status === 401) { location.reload(); return null; }
  let answer = {};
  try { answer = await r.json(); } catch (e) { /* not JSON */ }
  return { ok: r.ok, answer };
}

function describe(res) {
  const a = res.answer || {};
  return a.error || a.result || 'failed';
}

async function toggle(id) {
  const o = house.objects.get(id);
  if (!o) return;
  if (o.kind === 'input') { toast(`${o.name || id} is an input: it cannot be switched`); return; }
  const g = plan.querySelector(`[data-object="${CSS.escape(id)}"]`);
  if (g) g.classList.add('busy');
  try {
    const res = await post(`/api/objects/${encodeURIComponent(id)}/set`, { state: 'TOGGLE' });
    if (res && !res.ok) toast(`${o.name || id}: ${describe(res)}`);
  } catch (e) {
    toast('not connected');
  } finally {
    const now = plan.querySelector(`[data-object="${CSS.escape(id)}"]`);
    if (now) now.classList.remove('busy');
  }
}

async function moveTo(id, p) {
  try {
    const res = await post(`/api/objects/${encodeURIComponent(id)}/move`, { x: Math.round(p.x * 100) / 100, y: Math.round(p.y * 100) / 100 });
    if (res && !res.ok) toast(`${id}: ${describe(res)}`);
    else if (res) toast(`${id} moved to ${(res.answer.state || {}).room || '?'}`);
  } catch (e) {
    toast('not connected');
  }
  render();
}

function renderPeers() {
  const ul = document.getElementById('peers');
  ul.textContent = '';
  for (const p of house.peers) {
    const li = document.createElement('li');
    li.dataset.peer = p.name || p.addr;
    li.dataset.status = p.status;
    const n = document.createElement('span');
    n.textContent = p.name || p.addr;
    const s = document.createElement('span');
    s.className = 'status';
    s.textContent = p.status === 'self' ? 'this Pi' : p.status;
    li.append(n, s);
    ul.appendChild(li);
  }
}

function connected(yes) {
  const c = document.getElementById('conn');
  c.dataset.connected = String(yes);
  c.textContent = yes ? 'live' : 'reconnecting…';
}

let source = null;
function connect() {
  source = new EventSource('/api/events');
  source.addEventListener('house', (e) => {
    const h = JSON.parse(e.data);
    house.objects = new Map(h.objects.map((o) => [o.id, o]));
    house.rooms = h.rooms;
    house.peers = h.peers;
    house.presses = h.presses || {};
    house.me = h.me;
    document.getElementById('title').textContent = `pimesh · ${h.me.name}`;
    document.getElementById('user').textContent = h.user;
    connected(true);
    render();
    renderPeers();
  });
  source.addEventListener('object', (e) => {
    const o = JSON.parse(e.data);
    const before = house.objects.get(o.id);
    house.objects.set(o.id, o);
    if (!before || before.x !== o.x || before.y !== o.y) render();
    else if (!drag || drag.id !== o.id) drawObject(o, spots().get(o.id));
  });
  source.addEventListener('gone', (e) => { house.objects.delete(JSON.parse(e.data).id); render(); });
  source.addEventListener('rooms', (e) => { house.rooms = JSON.parse(e.data); render(); });
  source.addEventListener('peers', (e) => { house.peers = JSON.parse(e.data); renderPeers(); });
  source.addEventListener('press', (e) => {
    const p = JSON.parse(e.data);
    house.presses[p.id] = p;
    const o = house.objects.get(p.id);
    if (o && (!drag || drag.id !== p.id)) drawObject(o, spots().get(p.id));
  });
  source.onopen = () => connected(true);
  source.onerror = () => {
    connected(false);
    // The browser retries by itself unless the server answered with an error (a restart
    // that lost the login, a removed user): then ask whether we are still logged in.
    if (source.readyState === EventSource.CLOSED) setTimeout(recover, 1000);
  };
}

async function recover() {
  try {
    const r = await fetch('/api/house', { cache: 'no-store' });
    if (r.status === 401) { location.reload(); return; }
    if (r.ok) { connect(); return; }
  } catch (e) { /* still down */ }
  setTimeout(recover, 1000);
}

window.addEventListener('resize', () => render());
connect();
