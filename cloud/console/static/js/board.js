// the live board: open incidents by severity and age, kept current by the live feed; an SOS
// takes over the page (banner, colour, title, sound once the browser allows it)
"use strict";
(() => {
  const {t, el, api, all, live, SEVERITIES, OPEN} = linli;
  const incidents = new Map();   // id -> incident as the API lists it
  const fresh = new Set();       // ids that arrived live and are not acknowledged yet
  const shownAt = new Map();     // id -> Date.now() when it first appeared (the tests read it)
  const form = document.getElementById("filters");
  const rows = document.getElementById("incident-rows");
  const appTitle = document.title;
  let audio = null;
  let ringing = null;

  function rank(i) { return SEVERITIES.indexOf(i.severity); }
  // what sounds the alarm until someone takes it: an SOS press, or any critical incident
  function isSos(i) { return i.rule.startsWith("sos"); }
  function isLoud(i) { return isSos(i) || i.severity === "critical"; }

  function filtered() {
    const want = Object.fromEntries(new FormData(form));
    return [...incidents.values()]
      .filter((i) => (!want.state || i.state === want.state) && (!want.severity || i.severity === want.severity)
        && (!want.building || i.place.building === want.building))
      .sort((a, b) => rank(a) - rank(b) || Date.parse(a.detected_at) - Date.parse(b.detected_at) || a.incident_id - b.incident_id);
  }

  function row(i) {
    const tr = el("tr", {class: `${i.severity}${fresh.has(i.incident_id) ? " fresh" : ""}`, dataset: {incident: i.incident_id, severity: i.severity, state: i.state, shownAt: shownAt.get(i.incident_id)}},
      el("td", {}, linli.badge(i.severity)),
      el("td", {}, el("a", {href: `${linli.BASE}/incidents/${i.incident_id}`, text: linli.title(i)}), i.device_id ? el("div", {class: "hint", text: i.device_id}) : null),
      el("td", {text: linli.place(i.place)}),
      el("td", {class: "state", text: t(`state.${i.state}`)}),
      el("td", {class: "age", dataset: {since: i.detected_at}, text: linli.age(i.detected_at)}),
      el("td", {text: i.handler || "—"}));
    return tr;
  }

  function draw() {
    const list = filtered();
    rows.replaceChildren(...list.map(row));
    document.getElementById("empty").hidden = list.length > 0;
    document.getElementById("board-count").textContent = t("board.count", {n: incidents.size});
    const tally = document.getElementById("tally");
    tally.replaceChildren(...SEVERITIES.map((s) => {
      const n = [...incidents.values()].filter((i) => i.severity === s).length;
      return el("li", {}, linli.badge(s), " ", el("b", {text: n}));
    }));
    const buildings = [...new Set([...incidents.values()].map((i) => i.place.building).filter(Boolean))].sort((a, b) => a.localeCompare(b, undefined, {numeric: true}));
    const select = document.getElementById("building-filter");
    const current = select.value;
    select.replaceChildren(el("option", {value: "", text: t("all")}), ...buildings.map((b) => el("option", {value: b, text: b, selected: b === current})));
    alarm();
  }

  // --- the alarm: a banner, the page title and a sound while an SOS is unacknowledged
  function alarm() {
    const loud = [...fresh].map((id) => incidents.get(id)).filter((i) => i && i.state === "detected" && isLoud(i))
      .sort((a, b) => isSos(b) - isSos(a));
    const banner = document.getElementById("alarm");
    banner.hidden = loud.length === 0;
    if (loud.length) {
      const first = loud[0];
      const what = isSos(first) ? "board.sos" : "board.critical";
      document.getElementById("alarm-text").textContent = `${t(what, {title: linli.title(first)})} · ${linli.place(first.place)}`;
      document.title = `🚨 ${isSos(first) ? "SOS" : t("severity.critical")} (${loud.length}) · ${appTitle}`;
      ring();
    } else {
      document.title = incidents.size ? `(${incidents.size}) ${appTitle}` : appTitle;
      silence();
    }
  }
  function beep() {
    if (!audio || audio.state !== "running") return;
    const now = audio.currentTime;
    for (const [offset, pitch] of [[0, 880], [0.25, 660], [0.5, 880]]) {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.frequency.value = pitch;
      gain.gain.setValueAtTime(0.25, now + offset);
      gain.gain.exponentialRampToValueAtTime(0.001, now + offset + 0.22);
      osc.connect(gain).connect(audio.destination);
      osc.start(now + offset);
      osc.stop(now + offset + 0.23);
    }
  }
  function ring() { if (!ringing) { beep(); ringing = setInterval(beep, 2000); } }
  function silence() { clearInterval(ringing); ringing = null; }
  function enableSound() {
    audio ??= new AudioContext();
    audio.resume().then(() => {
      const button = document.getElementById("sound");
      button.textContent = t("board.sound_ready");
      button.setAttribute("aria-pressed", "true");
    });
  }
  document.getElementById("sound").addEventListener("click", enableSound);
  document.addEventListener("pointerdown", () => { if (!audio) enableSound(); }, {once: true});
  document.getElementById("alarm-ack").addEventListener("click", () => { fresh.clear(); draw(); });

  // --- the live feed
  function take(i, isNew) {
    if (!OPEN.has(i.state)) { incidents.delete(i.incident_id); fresh.delete(i.incident_id); return; }
    if (isNew && !incidents.has(i.incident_id)) {
      fresh.add(i.incident_id);
      shownAt.set(i.incident_id, Date.now());
    }
    incidents.set(i.incident_id, i);
  }
  let loaded = false;
  const early = [];  // events that came before the list was read
  function onEvent(kind, data) {
    if (!loaded) { early.push([kind, data]); return; }
    apply(kind, data);
    draw();
  }
  function apply(kind, data) {
    if (kind === "incident") take(data, true);
    else if (kind === "change" && data.incident) {
      take(data.incident, false);
      if (data.to_state !== "detected") fresh.delete(data.incident_id);
    }
  }
  let feedReady;
  const feedUp = new Promise((done) => { feedReady = done; });
  function onState(up) {
    document.getElementById("live-state").textContent = up ? t("board.live") : t("board.offline");
    if (up) feedReady();
  }

  form.addEventListener("change", draw);
  setInterval(() => { for (const td of rows.querySelectorAll("td.age")) td.textContent = linli.age(td.dataset.since); }, 10_000);

  (async () => {
    try {
      await linli.ready;
      // the feed first, then the list: an incident that commits in between is in one or the other
      live(onEvent, onState);
      await feedUp;
      const open = await all("/incidents", {open: true});
      for (const i of open) {
        incidents.set(i.incident_id, i);
        if (i.state === "detected" && isLoud(i)) fresh.add(i.incident_id);  // nobody has taken it yet
      }
      loaded = true;
      for (const [kind, data] of early.splice(0)) apply(kind, data);
      draw();
      linli.rendered("board");
    } catch (err) {
      linli.problem(err);
    }
  })();
})();
