// one incident: what happened, its trail and notifications, and the actions this user's role
// may take now; a refusal shows the server's reason
"use strict";
(() => {
  const {t, el, api} = linli;
  const id = Number(document.body.dataset.incident);
  const NEEDS_NOTE = new Set(["handle", "reopen", "reject"]);
  // one tap: nothing to ask (a note stays optional and can go with the next step)
  const AT_ONCE = new Set(["accept", "verify", "close", "assess"]);
  let current = null;
  let staff = null;

  function fact(list, name, value) {
    if (value === null || value === undefined || value === "") return;
    list.append(el("dt", {text: name}), el("dd", {}, value));
  }

  function draw(i) {
    current = i;
    document.getElementById("incident").setAttribute("aria-busy", "false");
    document.getElementById("incident-title").textContent = `${t("incident.title", {id: i.incident_id})} · ${linli.title(i)}`;
    document.title = `${linli.title(i)} · ${t("app")}`;
    document.getElementById("incident-severity").replaceWith(Object.assign(linli.badge(i.severity), {id: "incident-severity"}));
    const state = document.getElementById("incident-state");
    state.textContent = t(`state.${i.state}`);
    state.dataset.state = i.state;
    document.getElementById("incident-detail").textContent = linli.LANG === "zh" ? i.detail_zh : i.detail_en;
    const facts = document.getElementById("facts");
    facts.replaceChildren();
    fact(facts, t("incident.device"), i.device_id ? el("a", {href: `${linli.BASE}/devices/${encodeURIComponent(i.device_id)}`, text: i.device_id}) : null);
    fact(facts, t("incident.place"), `${i.community_id} · ${linli.place(i.place)}`);
    fact(facts, t("incident.resident"), i.resident_id);
    fact(facts, t("incident.started"), linli.time(i.started_at));
    fact(facts, t("incident.detected"), `${linli.time(i.detected_at)} (${linli.ago(i.detected_at)})`);
    fact(facts, t("col.handler"), i.handler);
    fact(facts, t("incident.escalation"), String(i.escalation_level));
    fact(facts, t("incident.occurrences"), String(i.occurrences));
    if (i.rating !== null) fact(facts, t("incident.rating"), `${"★".repeat(i.rating)}${"☆".repeat(5 - i.rating)} ${i.rating_comment || ""}`);
    if (i.sla) {
      const line = t("incident.sla_line", {accept: linli.span(i.sla.to_accept_s), handle: linli.span(i.sla.to_handle_s), close: linli.span(i.sla.to_close_s)});
      fact(facts, t("incident.sla"), i.sla.overdue ? `${line} (${t("incident.overdue")})` : line);
    }
    if (i.reject_reason) fact(facts, t("state.rejected"), i.reject_reason);
    document.getElementById("contacts").replaceChildren(...(i.contacts.length ? i.contacts.map((c) => el("li", {text: `${c.name || "—"} (${c.relation}) ${c.mobile || ""} ${c.email || ""}`})) : [el("li", {class: "hint", text: t("none")})]));
    evidence(i);
    document.querySelector("#audit tbody").replaceChildren(...i.audit.map((a) => el("tr", {dataset: {action: a.action}},
      el("td", {text: linli.time(a.at)}),
      el("td", {text: `${a.actor} (${a.actor_role})`}),
      el("td", {text: t(`action.${a.action}`)}),
      el("td", {text: `${t(`state.${a.from_state}`)} → ${t(`state.${a.to_state}`)}`}),
      el("td", {text: a.note || ""}))));
    document.querySelector("#notifications tbody").replaceChildren(...i.notifications.map((n) => el("tr", {dataset: {state: n.state}},
      el("td", {text: linli.time(n.created_at)}),
      el("td", {text: n.reason}),
      el("td", {text: n.channel}),
      el("td", {text: n.recipients.map((r) => r.name || r.staff_id || r.mobile || r.email).filter(Boolean).join(", ") || "—"}),
      el("td", {text: `${n.state}${n.sent_at ? ` · ${linli.time(n.sent_at)}` : ""}${n.last_code ? ` · ${n.last_code}` : ""}${n.last_message ? ` ${n.last_message}` : ""}`}),
      el("td", {text: n.attempts}))));
    actions(i);
  }

  function evidence(i) {
    const list = document.getElementById("evidence");
    list.replaceChildren(...i.evidence.map((e) => el("li", {text: [
      e.time_us ? linli.time(new Date(e.time_us / 1000).toISOString()) : "", e.device_id, e.metric || e.event,
      e.value === undefined ? "" : `= ${e.value}`, e.note || "",
    ].filter(Boolean).join(" ")})));
    // the readings of the metrics behind it, from an hour before it started to an hour after
    // (or now): the evidence itself is only the few values that crossed the line
    const metrics = [...new Set(i.evidence.filter((e) => e.metric && typeof e.value === "number").map((e) => e.metric))];
    const box = document.getElementById("evidence-chart");
    box.hidden = !(metrics.length && i.device_id);
    if (box.hidden) return;
    const start = Date.parse(i.started_at) - 3_600_000;
    const end = Math.min(Date.now(), Date.parse(i.started_at) + 3_600_000);
    api(`/devices/${encodeURIComponent(i.device_id)}/readings`, {params: {
      metric: metrics.slice(0, 4), start: new Date(start).toISOString(), end: new Date(Math.max(end, start + 60_000)).toISOString(),
    }}).then((body) => {
      linliCharts.draw(box, body.series, {height: 160});
      box.dataset.points = Object.values(body.series).reduce((n, points) => n + points.length, 0);
    }).catch(() => { box.hidden = true; });
  }

  function actions(i) {
    const box = document.getElementById("actions");
    box.replaceChildren(...i.may.map((a) => el("button", {type: "button", class: a === "reject" ? "" : "primary", dataset: {action: a}, text: t(`action.${a}`), onclick: () => open(a)})));
    if (!i.may.length) box.append(el("p", {class: "hint", text: t("incident.no_actions")}));
  }

  async function open(action) {
    linli.show("action-problem", "");
    linli.show("action-done", "");
    const form = document.getElementById("action-form");
    if (AT_ONCE.has(action)) {
      form.hidden = true;
      form.replaceChildren();
      return submit(action, form, document.querySelectorAll("#actions button"));
    }
    const fields = [];
    if (action === "dispatch") {
      staff ??= (await api(`/communities/${encodeURIComponent(current.community_id)}/staff`)).items;
      fields.push(el("label", {for: "handler", text: t("incident.handler")}),
        el("select", {id: "handler", name: "handler", required: true}, ...staff.map((s) => el("option", {value: s.staff_id, text: `${s.name} (${s.staff_id}, ${s.roles.join(", ")})`}))));
    }
    if (action === "rate") {
      fields.push(el("label", {for: "score", text: t("incident.score")}),
        el("select", {id: "score", name: "score"}, ...[5, 4, 3, 2, 1].map((n) => el("option", {value: n, text: `${n} ${"★".repeat(n)}`}))),
        el("label", {for: "comment", text: t("incident.comment")}), el("textarea", {id: "comment", name: "comment", rows: 2, required: true}));
    }
    if (action !== "rate") {
      fields.push(el("label", {for: "note", text: t("incident.note")}), el("textarea", {id: "note", name: "note", rows: 2, required: NEEDS_NOTE.has(action)}));
    }
    form.replaceChildren(el("h3", {text: t(`action.${action}`)}), ...fields, el("div", {class: "row"},
      el("button", {type: "submit", class: "primary", text: t("incident.submit")}),
      el("button", {type: "button", text: t("incident.cancel"), onclick: () => { form.hidden = true; }})));
    form.hidden = false;
    form.onsubmit = (e) => { e.preventDefault(); submit(action, form); };
    form.querySelector("select, textarea")?.focus();
  }

  async function submit(action, form, buttons = form.querySelectorAll("button")) {
    const data = Object.fromEntries(new FormData(form));
    const body = {action, version: current.version, note: data.note || ""};
    if (data.handler) body.handler = data.handler;
    if (action === "rate") { body.score = Number(data.score); body.comment = data.comment || ""; }
    for (const button of buttons) button.disabled = true;
    try {
      const after = await api(`/incidents/${id}/transitions`, {method: "POST", body});
      form.hidden = true;
      draw(after);
      linli.show("action-done", t("incident.done", {action: t(`action.${action}`)}));
    } catch (err) {
      // the server's reason, as it gave it: the state, the role, what was missing, a newer version
      linli.show("action-problem", t("incident.refused", {reason: err.message}));
      if (err instanceof linli.ApiError && err.status === 409) load();
    } finally {
      for (const button of buttons) button.disabled = false;
    }
  }

  async function load() {
    try {
      draw(await api(`/incidents/${id}`));
      linli.rendered("incident");
    } catch (err) {
      linli.problem(err);
      document.getElementById("incident").hidden = true;
    }
  }

  (async () => {
    await linli.ready;
    await load();
    // someone else's change of this incident shows without a reload
    linli.live((kind, data) => { if (kind === "change" && data.incident_id === id) load(); });
  })();
})();
