// one device: where and whose it is, latest values, a history chart that zooms down to raw
// readings (the API aggregates), battery and link quality over 30 days, and its events
"use strict";
(() => {
  const {t, el, api} = linli;
  const id = document.body.dataset.device;
  const path = `/devices/${encodeURIComponent(id)}`;
  const HOUR = 3_600_000;
  const RANGES = {"1h": HOUR, "6h": 6 * HOUR, "24h": 24 * HOUR, "7d": 168 * HOUR, "30d": 720 * HOUR, "365d": 8760 * HOUR};
  const STEPS = [["1m", 60e3], ["5m", 300e3], ["15m", 900e3], ["1h", HOUR], ["6h", 6 * HOUR], ["1d", 24 * HOUR]];
  const RAW_UP_TO = 6 * HOUR;   // shorter ranges show every reading
  const MOST = 600;             // points a chart needs at most
  let units = {};

  function interval(span) {
    if (span <= RAW_UP_TO) return null;
    return (STEPS.find(([, width]) => span / width <= MOST) || STEPS[STEPS.length - 1])[0];
  }

  function fact(list, name, value) {
    if (value === null || value === undefined || value === "") return;
    list.append(el("dt", {text: name}), el("dd", {}, value));
  }

  function drawDevice(d) {
    document.getElementById("device-status").replaceChildren(
      el("span", {class: `badge st-${d.status}`, text: t(`status.${d.status}`)}), ` ${t("col.last_seen")}: ${linli.ago(d.last_seen)}`);
    const facts = document.getElementById("facts");
    fact(facts, t("device.type"), d.device_type);
    fact(facts, t("device.profile"), d.profile_info ? `${d.profile_info.vendor} ${d.profile_info.model} (${d.profile})` : d.profile);
    fact(facts, t("incident.place"), `${d.community_id || "—"} · ${linli.place(d.location)}`);
    if (d.location.lat !== null) fact(facts, "lat, lon", `${d.location.lat.toFixed(6)}, ${d.location.lon.toFixed(6)}`);
    fact(facts, t("col.gateway"), d.gateway_id);
    fact(facts, t("incident.resident"), d.resident_id);
    fact(facts, t("device.battery"), d.battery_pct === null ? null : `${Math.round(d.battery_pct)} %${d.battery_at ? ` (${linli.ago(d.battery_at)})` : ""}`);
    fact(facts, t("device.open_incidents"), d.open_incidents ? el("a", {href: `${linli.BASE}/board`, text: String(d.open_incidents)}) : "0");
    units = Object.fromEntries(d.latest.map((m) => [m.metric, m.unit]));
    document.querySelector("#latest tbody").replaceChildren(...d.latest.map((m) => el("tr", {dataset: {metric: m.metric}},
      el("td", {}, m.metric, m.description ? el("div", {class: "hint", text: m.description}) : null),
      el("td", {text: m.value === null ? "—" : `${m.value}${m.unit && m.unit !== "1" ? ` ${m.unit}` : ""}`}),
      el("td", {text: linli.ago(m.time)}))));
    const select = document.getElementById("metric");
    select.replaceChildren(...d.latest.map((m) => el("option", {value: m.metric, text: m.metric})));
    const first = d.latest.find((m) => m.value !== null);
    if (first) select.value = first.metric;
  }

  async function history(startMs, endMs) {
    const metric = document.getElementById("metric").value;
    if (!metric) return;
    const step = interval(endMs - startMs);
    const params = {metric, start: new Date(startMs).toISOString(), end: new Date(endMs).toISOString()};
    if (step) Object.assign(params, {interval: step, agg: "avg"});
    const body = await api(`${path}/readings`, {params});
    const points = body.series[metric] || [];
    const source = body.source === "raw" && !step ? t("device.source_raw") : body.source;
    document.getElementById("history-source").textContent = points.length
      ? t("device.source", {source, interval: step || "—"}) : t("device.no_data");
    const box = document.getElementById("history-chart");
    linliCharts.draw(box, {[metric]: points}, {
      labels: {[metric]: units[metric] && units[metric] !== "1" ? `${metric} (${units[metric]})` : metric},
      onZoom: (from, to) => history(from, to).catch(linli.problem),
    });
    box.dataset.points = points.length;
    box.dataset.interval = step || "raw";
  }
  function fromRange() {
    const end = Date.now();
    return history(end - RANGES[document.getElementById("range").value], end);
  }

  async function health() {
    const wanted = ["battery_pct", "rssi_dbm", "link_quality"].filter((m) => m in units);
    const box = document.getElementById("health-chart");
    if (!wanted.length) { box.replaceChildren(el("p", {class: "hint", text: t("device.no_data")})); return; }
    const end = Date.now();
    const body = await api(`${path}/readings`, {params: {metric: wanted, start: new Date(end - RANGES["30d"]).toISOString(), end: new Date(end).toISOString(), interval: "6h", agg: "avg"}});
    linliCharts.draw(box, body.series, {height: 160});
  }

  async function events() {
    const body = await api(`${path}/events`, {params: {limit: 50, start: new Date(Date.now() - RANGES["30d"]).toISOString()}});
    document.querySelector("#events tbody").replaceChildren(...body.items.map((e) => el("tr", {},
      el("td", {text: linli.time(e.time)}), el("td", {text: e.event}),
      el("td", {text: Object.keys(e.attributes).length ? JSON.stringify(e.attributes) : ""}))));
  }

  // --- commands: buttons for what the device's dialect carries, its latest commands and their
  // states (followed until each ends), and a streetlight's schedule for tonight
  const FINAL = new Set(["confirmed", "failed", "expired"]);
  let following = null;

  function params(p) {
    return Object.entries(p).map(([k, v]) => `${k}=${v}`).join(" ");
  }

  async function send(name, body, buttons) {
    linli.show("command-problem", "");
    linli.show("command-done", "");
    for (const b of buttons) b.disabled = true;
    try {
      await api(`${path}/commands`, {method: "POST", body: {name, params: body}});
      linli.show("command-done", t("device.command_sent", {name: `${name} ${params(body)}`.trim()}));
      await commands();
    } catch (err) {
      linli.problem(err, "command-problem");
    } finally {
      for (const b of buttons) b.disabled = false;
    }
  }

  function drawButtons(d) {
    const carried = d.profile_info ? d.profile_info.commands : [];
    const box = document.getElementById("command-buttons");
    const buttons = [];
    const button = (text, cls, onclick) => {
      const b = el("button", {type: "button", class: cls, text, onclick: () => onclick()});
      buttons.push(b);
      return b;
    };
    const parts = [];
    if (carried.includes("switch")) {
      parts.push(button(t("device.switch_on"), "primary", () => send("switch", {on: true}, buttons)),
        button(t("device.switch_off"), "", () => send("switch", {on: false}, buttons)));
    }
    if (carried.includes("dim")) {
      const input = el("input", {type: "number", id: "dim-level", min: "0", max: "100", step: "5", value: "50", inputmode: "numeric"});
      parts.push(el("label", {for: "dim-level", text: t("device.dim_level")}), input,
        button(t("device.dim"), "", () => send("dim", {level_pct: Number(input.value)}, buttons)));
    }
    if (carried.includes("acknowledge")) {
      parts.push(button(t("device.acknowledge"), "primary", () => send("acknowledge", {}, buttons)));
    }
    box.replaceChildren(...parts);
    document.getElementById("commands-card").hidden = !carried.length;
    return carried.length > 0;
  }

  async function commands() {
    const body = await api(`${path}/commands`, {params: {limit: 10}});
    const rows = body.items.map((c) => el("tr", {dataset: {command: c.command_id, state: c.state}},
      el("td", {text: linli.time(c.requested_at)}), el("td", {text: `${c.name} ${params(c.params)}`.trim()}),
      el("td", {text: c.requested_by}), el("td", {}, el("span", {class: `badge cmd-${c.state}`, text: t(`command.${c.state}`)})),
      el("td", {text: c.reason || ""})));
    document.querySelector("#commands tbody").replaceChildren(
      ...(rows.length ? rows : [el("tr", {}, el("td", {colspan: "5", class: "hint", text: t("device.no_commands")}))]));
    clearTimeout(following);
    if (body.items.some((c) => !FINAL.has(c.state))) {
      following = setTimeout(() => commands().catch((err) => linli.problem(err, "command-problem")), 1000);
    }
  }

  async function schedule(d) {
    if (d.device_type !== "streetlight" || !d.community_id) return;
    let plan;
    try {
      plan = await api(`/communities/${encodeURIComponent(d.community_id)}/schedule`);
    } catch (err) {
      if (err instanceof linli.ApiError && err.status === 404) return;  // no schedule for it
      throw err;
    }
    document.querySelector("#schedule-table tbody").replaceChildren(...plan.transitions.map((x) => el("tr", {},
      el("td", {text: linli.time(x.at)}),
      el("td", {text: x.on ? t("device.lamp_on", {level: x.level_pct}) : t("device.lamp_off")}))));
    document.getElementById("schedule").hidden = !plan.transitions.length;
  }

  (async () => {
    try {
      await linli.ready;
      const d = await api(path);
      drawDevice(d);
      if (drawButtons(d)) await Promise.all([commands(), schedule(d)]);
      document.getElementById("history-form").addEventListener("change", () => fromRange().catch(linli.problem));
      await Promise.all([fromRange(), health(), events()]);
      linli.rendered("device");
    } catch (err) {
      linli.problem(err);
    }
  })();
})();
