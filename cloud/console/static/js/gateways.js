// gateways and their health: state, last status, links, buffer depth and age
"use strict";
(() => {
  const {t, el} = linli;
  function bytes(n) {
    if (n === null) return "—";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
  }
  (async () => {
    try {
      await linli.ready;
      const items = await linli.all("/gateways", {});
      document.querySelector("#gateways tbody").replaceChildren(...items.map((g) => el("tr", {dataset: {gateway: g.gateway_id, state: g.state}},
        el("td", {text: g.gateway_id}),
        el("td", {}, el("a", {href: `${linli.BASE}/map?community=${encodeURIComponent(g.community_id)}`, text: g.community_id})),
        el("td", {}, el("span", {class: `badge st-${g.state === "online" ? "online" : "offline"}`, text: t(`status.${g.state === "online" ? "online" : "offline"}`)})),
        el("td", {text: `${linli.time(g.last_seen)} (${linli.ago(g.last_seen)})`}),
        el("td", {}, ...Object.entries(g.links).map(([name, up]) => el("span", {class: `chip st-${up ? "online" : "offline"}`, text: `${name} ${up ? "✓" : "✗"}`}))),
        el("td", {text: g.buffer.depth === null ? "—" : `${g.buffer.depth}${g.buffer.alarm ? ` (SOS/alarm ${g.buffer.alarm})` : ""}`}),
        el("td", {text: linli.span(g.buffer.oldest_age_s)}),
        el("td", {text: g.buffer.disk_bytes === null ? "—" : `${bytes(g.buffer.disk_bytes)} / ${bytes(g.buffer.cap_bytes)}`}),
        el("td", {text: `${g.devices}${g.pending_devices ? ` · ${t("gateways.pending")} ${g.pending_devices}` : ""}`}),
        el("td", {text: g.version || "—"}))));
      document.getElementById("empty").hidden = items.length > 0;
      linli.rendered("gateways");
    } catch (err) {
      linli.problem(err);
    }
  })();
})();
