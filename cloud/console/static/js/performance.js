// how the loop was worked (考核): per community and staff member over a chosen period
"use strict";
(() => {
  const {t, el, api} = linli;
  const form = document.getElementById("period");
  const day = (d) => d.toISOString().slice(0, 10);

  function cells(f) {
    const pair = (stage) => `${linli.span(f[`to_${stage}_median_s`])} / ${linli.span(f[`to_${stage}_p90_s`])}`;
    return [f.incidents, f.accepted, f.handled, pair("accept"), pair("handle"), pair("close"),
      f.overdue_share === null ? "—" : `${Math.round(f.overdue_share * 100)} % (${f.overdue})`,
      f.escalated, f.rejected, f.satisfaction === null ? "—" : `${f.satisfaction} (${f.ratings})`].map((v) => el("td", {text: v}));
  }

  async function show() {
    linli.show("problem", "");
    const start = new Date(`${form.from.value}T00:00:00`);
    const end = new Date(`${form.to.value}T00:00:00`);
    end.setDate(end.getDate() + 1);  // the last day counts whole
    const body = await api("/performance", {params: {start: start.toISOString(), end: end.toISOString(), community_id: form.community.value}});
    document.querySelector("#by-community tbody").replaceChildren(...body.communities.map((c) => el("tr", {dataset: {community: c.community_id}},
      el("th", {scope: "row", text: c.name ? `${c.name} (${c.community_id})` : c.community_id}), ...cells(c))));
    document.querySelector("#by-staff tbody").replaceChildren(...body.staff.map((s) => el("tr", {dataset: {staff: s.staff_id}},
      el("th", {scope: "row", text: s.name ? `${s.name} (${s.staff_id})` : s.staff_id}), ...cells(s))));
    linli.rendered("performance");
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); show().catch(linli.problem); });
  (async () => {
    try {
      await linli.ready;
      const now = new Date();
      form.to.value = day(now);
      form.from.value = day(new Date(now.getTime() - 29 * 86_400_000));
      const communities = (await api("/communities")).items;
      form.community.append(...communities.map((c) => el("option", {value: c.community_id, text: c.name || c.community_id})));
      await show();
    } catch (err) {
      linli.problem(err);
    }
  })();
})();
