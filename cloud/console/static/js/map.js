// the site plan ("一张图"): buildings from the inventory's building/unit, devices as markers
// coloured by open incidents and status, on a canvas (ten thousand markers draw in milliseconds);
// drag or arrow keys to pan, wheel or +/- to zoom, click a marker for the device
"use strict";
(() => {
  const {t, el, api} = linli;
  const canvas = document.getElementById("plan");
  const ctx = canvas.getContext("2d");
  const COLOURS = {critical: "#b3141f", major: "#b35400", minor: "#c9a400", info: "#c9a400",
    online: "#1d7a3a", offline: "#5d6670", unknown: "#9aa3ad"};
  const CELL = 4;   // metres between markers inside a building
  let plan = null;  // {ids, types, x, y, colour, open, building, unit, status, worst}
  let blocks = [];  // buildings: {name, x, y, w, h}
  let view = {scale: 1, x: 0, y: 0};
  let picked = -1;
  let grid = null;  // spatial index for picking: cell key -> marker indexes

  const natural = (a, b) => String(a).localeCompare(String(b), undefined, {numeric: true});

  // --- layout: metres east (x) and south (y) of the community's centre
  function layout(cols, severities) {
    const n = cols.device_id.length;
    const x = new Float64Array(n), y = new Float64Array(n);
    const lats = cols.lat.filter((v) => v !== null), lons = cols.lon.filter((v) => v !== null);
    const lat0 = lats.length ? lats.reduce((a, b) => a + b, 0) / lats.length : 0;
    const lon0 = lons.length ? lons.reduce((a, b) => a + b, 0) / lons.length : 0;
    const kx = 111_320 * Math.cos(lat0 * Math.PI / 180), ky = 110_540;
    const geo = (i) => cols.lat[i] === null || cols.lon[i] === null ? null : [(cols.lon[i] - lon0) * kx, -(cols.lat[i] - lat0) * ky];
    // buildings: a block of units side by side, each unit a small grid of its devices
    const byBuilding = new Map();
    const loose = [];
    for (let i = 0; i < n; i++) {
      const b = cols.building[i];
      if (b === null) { loose.push(i); continue; }
      if (!byBuilding.has(b)) byBuilding.set(b, new Map());
      const units = byBuilding.get(b);
      const u = cols.unit[i] ?? "";
      if (!units.has(u)) units.set(u, []);
      units.get(u).push(i);
    }
    const found = [];
    const unplaced = [];
    for (const name of [...byBuilding.keys()].sort(natural)) {
      const units = byBuilding.get(name);
      const members = [...units.values()].flat();
      const side = Math.ceil(Math.sqrt(Math.max(...[...units.values()].map((m) => m.length))));
      const w = units.size * (side * CELL + CELL), h = side * CELL + 2 * CELL;
      const points = members.map(geo).filter(Boolean);
      const centre = points.length ? [points.reduce((a, p) => a + p[0], 0) / points.length, points.reduce((a, p) => a + p[1], 0) / points.length] : null;
      const block = {name, w, h, units, side, x: 0, y: 0};
      (centre ? found : unplaced).push([block, centre]);
    }
    for (const [block, centre] of found) { block.x = centre[0] - block.w / 2; block.y = centre[1] - block.h / 2; }
    // buildings and devices without coordinates: rows below everything that has them
    let bottom = 0, left = 0;
    for (const [block] of found) { bottom = Math.max(bottom, block.y + block.h); left = Math.min(left, block.x); }
    for (const i of loose) { const p = geo(i); if (p) { bottom = Math.max(bottom, p[1]); left = Math.min(left, p[0]); } }
    let cx = left, cy = found.length || loose.some((i) => geo(i)) ? bottom + 20 : 0, rowH = 0;
    const width = Math.max(200, Math.sqrt(unplaced.reduce((a, [b]) => a + (b.w + 8) * (b.h + 8), 0)) * 1.6);
    for (const [block] of unplaced) {
      if (cx - left + block.w > width && cx > left) { cx = left; cy += rowH + 8; rowH = 0; }
      block.x = cx; block.y = cy;
      cx += block.w + 8; rowH = Math.max(rowH, block.h);
    }
    blocks = [...found, ...unplaced].map(([b]) => b);
    for (const block of blocks) {
      let ux = block.x + CELL;
      for (const u of [...block.units.keys()].sort(natural)) {
        block.units.get(u).sort((a, b) => natural(cols.device_id[a], cols.device_id[b])).forEach((i, k) => {
          x[i] = ux + (k % block.side) * CELL + CELL / 2;
          y[i] = block.y + 1.5 * CELL + Math.floor(k / block.side) * CELL;
        });
        ux += block.side * CELL + CELL;
      }
    }
    const stray = [];
    for (const i of loose) { const p = geo(i); if (p) { x[i] = p[0]; y[i] = p[1]; } else stray.push(i); }
    if (stray.length) {
      const top = Math.max(cy + rowH + 20, ...blocks.map((b) => b.y + b.h + 20));
      const side = Math.ceil(Math.sqrt(stray.length));
      stray.forEach((i, k) => { x[i] = left + (k % side) * CELL; y[i] = top + Math.floor(k / side) * CELL; });
      blocks.push({name: t("map.unplaced"), x: left - CELL, y: top - 2 * CELL, w: side * CELL + CELL, h: Math.ceil(stray.length / side) * CELL + 2 * CELL, loose: true});
    }
    const colour = cols.device_id.map((_, i) => cols.worst[i] !== null ? COLOURS[severities[cols.worst[i]]] : COLOURS[cols.status[i]] || COLOURS.unknown);
    return {...cols, x, y, colour, n};
  }

  function index() {
    grid = new Map();
    for (let i = 0; i < plan.n; i++) {
      const key = `${Math.floor(plan.x[i] / 10)},${Math.floor(plan.y[i] / 10)}`;
      if (!grid.has(key)) grid.set(key, []);
      grid.get(key).push(i);
    }
  }

  // --- drawing
  function size() {
    const ratio = window.devicePixelRatio || 1;
    const {width, height} = canvas.getBoundingClientRect();
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  }
  function fit() {
    if (!plan || !plan.n) return;
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (let i = 0; i < plan.n; i++) { x0 = Math.min(x0, plan.x[i]); x1 = Math.max(x1, plan.x[i]); y0 = Math.min(y0, plan.y[i]); y1 = Math.max(y1, plan.y[i]); }
    for (const b of blocks) { x0 = Math.min(x0, b.x); y0 = Math.min(y0, b.y); x1 = Math.max(x1, b.x + b.w); y1 = Math.max(y1, b.y + b.h); }
    const {width, height} = canvas.getBoundingClientRect();
    view.scale = Math.min(width / (x1 - x0 + 20), height / (y1 - y0 + 20));
    view.x = width / 2 - (x0 + x1) / 2 * view.scale;
    view.y = height / 2 - (y0 + y1) / 2 * view.scale;
  }
  function draw() {
    const {width, height} = canvas.getBoundingClientRect();
    ctx.clearRect(0, 0, width, height);
    if (!plan) return;
    const s = view.scale;
    ctx.lineWidth = 1;
    ctx.font = "12px system-ui, sans-serif";
    for (const b of blocks) {
      const bx = b.x * s + view.x, by = b.y * s + view.y;
      if (bx > width || by > height || bx + b.w * s < 0 || by + b.h * s < 0) continue;
      ctx.fillStyle = b.loose ? "rgba(255,255,255,.4)" : "#fff";
      ctx.strokeStyle = "#9aa3ad";
      ctx.fillRect(bx, by, b.w * s, b.h * s);
      ctx.strokeRect(bx, by, b.w * s, b.h * s);
      if (b.w * s > 24) { ctx.fillStyle = "#1b2430"; ctx.fillText(b.loose ? b.name : linli.place({building: b.name}), bx + 2, by - 3); }
    }
    const r = Math.max(1.5, Math.min(7, CELL * s * 0.38));
    // markers by colour (one path each), alarms last so they sit on top
    const byColour = new Map();
    for (let i = 0; i < plan.n; i++) {
      const px = plan.x[i] * s + view.x, py = plan.y[i] * s + view.y;
      if (px < -r || py < -r || px > width + r || py > height + r) continue;
      const c = plan.colour[i];
      if (!byColour.has(c)) byColour.set(c, []);
      byColour.get(c).push(px, py);
    }
    const order = [COLOURS.unknown, COLOURS.offline, COLOURS.online, COLOURS.minor, COLOURS.major, COLOURS.critical];
    for (const c of [...byColour.keys()].sort((a, b) => order.indexOf(a) - order.indexOf(b))) {
      const pts = byColour.get(c);
      const rr = c === COLOURS.critical || c === COLOURS.major ? r * 1.6 : r;
      ctx.beginPath();
      for (let k = 0; k < pts.length; k += 2) { ctx.moveTo(pts[k] + rr, pts[k + 1]); ctx.arc(pts[k], pts[k + 1], rr, 0, 2 * Math.PI); }
      ctx.fillStyle = c;
      ctx.fill();
    }
    if (picked >= 0) {
      ctx.beginPath();
      ctx.arc(plan.x[picked] * s + view.x, plan.y[picked] * s + view.y, r * 2.2, 0, 2 * Math.PI);
      ctx.strokeStyle = "#f0a500";
      ctx.lineWidth = 3;
      ctx.stroke();
    }
  }
  let queued = false;
  function redraw() { if (!queued) { queued = true; requestAnimationFrame(() => { queued = false; draw(); }); } }

  // --- interaction
  function zoom(factor, cx, cy) {
    const {width, height} = canvas.getBoundingClientRect();
    cx ??= width / 2; cy ??= height / 2;
    const next = Math.min(200, Math.max(0.01, view.scale * factor));
    view.x = cx - (cx - view.x) * next / view.scale;
    view.y = cy - (cy - view.y) * next / view.scale;
    view.scale = next;
    redraw();
  }
  function markerAt(px, py) {
    const wx = (px - view.x) / view.scale, wy = (py - view.y) / view.scale;
    const reach = Math.max(8 / view.scale, 1);
    let best = -1, bestD = reach * reach;
    for (let gx = Math.floor((wx - reach) / 10); gx <= Math.floor((wx + reach) / 10); gx++) {
      for (let gy = Math.floor((wy - reach) / 10); gy <= Math.floor((wy + reach) / 10); gy++) {
        for (const i of grid.get(`${gx},${gy}`) || []) {
          const d = (plan.x[i] - wx) ** 2 + (plan.y[i] - wy) ** 2;
          if (d <= bestD) { best = i; bestD = d; }
        }
      }
    }
    return best;
  }
  function pick(i) {
    picked = i;
    redraw();
    const box = document.getElementById("picked");
    if (i < 0) { box.replaceChildren(el("p", {class: "hint", text: t("map.pick")})); return; }
    const id = plan.device_id[i];
    box.replaceChildren(el("h2", {text: id}), el("dl", {class: "facts"},
      el("dt", {text: t("device.type")}), el("dd", {text: plan.device_type[i]}),
      el("dt", {text: t("incident.place")}), el("dd", {text: linli.place({building: plan.building[i], unit: plan.unit[i]})}),
      el("dt", {text: t("device.status")}), el("dd", {text: t(`status.${plan.status[i]}`)}),
      el("dt", {text: t("device.open_incidents")}), el("dd", {text: plan.open_incidents[i]})),
    el("a", {href: `${linli.BASE}/devices/${encodeURIComponent(id)}`, id: "picked-link", text: t("map.open")}));
  }
  let drag = null;
  canvas.addEventListener("pointerdown", (e) => { drag = {x: e.clientX, y: e.clientY, vx: view.x, vy: view.y, moved: false}; canvas.setPointerCapture(e.pointerId); });
  canvas.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
    view.x = drag.vx + dx; view.y = drag.vy + dy;
    redraw();
  });
  canvas.addEventListener("pointerup", (e) => {
    if (drag && !drag.moved && plan) {
      const box = canvas.getBoundingClientRect();
      pick(markerAt(e.clientX - box.left, e.clientY - box.top));
    }
    drag = null;
  });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const box = canvas.getBoundingClientRect();
    zoom(e.deltaY < 0 ? 1.25 : 0.8, e.clientX - box.left, e.clientY - box.top);
  }, {passive: false});
  canvas.addEventListener("keydown", (e) => {
    const step = 60;
    const moves = {ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step], ArrowDown: [0, -step]};
    if (moves[e.key]) { view.x += moves[e.key][0]; view.y += moves[e.key][1]; redraw(); }
    else if (e.key === "+" || e.key === "=") zoom(1.25);
    else if (e.key === "-") zoom(0.8);
    else if (e.key === "0") { fit(); redraw(); }
    else return;
    e.preventDefault();
  });
  document.getElementById("zoom-in").addEventListener("click", () => zoom(1.25));
  document.getElementById("zoom-out").addEventListener("click", () => zoom(0.8));
  document.getElementById("zoom-reset").addEventListener("click", () => { fit(); redraw(); });
  new ResizeObserver(() => { size(); redraw(); }).observe(canvas);

  // --- loading a community
  async function load(community) {
    linli.show("problem", "");
    const body = await api(`/communities/${encodeURIComponent(community)}/plan`);
    plan = layout(body.devices, body.severities);
    index();
    picked = -1;
    size(); fit(); draw();
    const online = plan.status.filter((s) => s === "online").length;
    const offline = plan.status.filter((s) => s === "offline").length;
    const alarms = [];
    for (let i = 0; i < plan.n; i++) if (plan.open_incidents[i] > 0) alarms.push(i);
    document.getElementById("map-summary").textContent = t("map.summary", {n: plan.n, online, offline, alarms: alarms.length});
    alarms.sort((a, b) => plan.worst[a] - plan.worst[b]);
    document.getElementById("alarm-devices").replaceChildren(...alarms.slice(0, 200).map((i) => el("li", {},
      linli.badge(body.severities[plan.worst[i]]), " ",
      el("a", {href: `${linli.BASE}/devices/${encodeURIComponent(plan.device_id[i])}`, text: plan.device_id[i]}),
      ` ${linli.place({building: plan.building[i], unit: plan.unit[i]})}`)));
    const url = new URL(location.href);
    url.searchParams.set("community", community);
    history.replaceState(null, "", url);
    linli.rendered("map");
  }

  // for tests and keyboard users' tools: where a device's marker is on the screen
  window.linliMap = {
    count: () => (plan ? plan.n : 0),
    screenOf(id) {
      const i = plan.device_id.indexOf(id);
      if (i < 0) return null;
      const box = canvas.getBoundingClientRect();
      return {x: box.left + plan.x[i] * view.scale + view.x, y: box.top + plan.y[i] * view.scale + view.y};
    },
  };

  (async () => {
    try {
      await linli.ready;
      const communities = (await api("/communities")).items;
      const select = document.getElementById("community");
      const wanted = new URLSearchParams(location.search).get("community");
      select.replaceChildren(...communities.map((c) => el("option", {value: c.community_id, text: c.name ? `${c.name} (${c.community_id})` : c.community_id, selected: c.community_id === wanted})));
      select.addEventListener("change", () => load(select.value).catch(linli.problem));
      if (communities.length) await load(select.value);
      else document.getElementById("map-summary").textContent = t("map.summary", {n: 0, online: 0, offline: 0, alarms: 0});
    } catch (err) {
      linli.problem(err);
    }
  })();
})();
