// the login form: the API's password flow; the tokens stay in this tab
"use strict";
(() => {
  const form = document.getElementById("login-form");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    linli.show("login-problem", "");
    const body = new URLSearchParams({username: form.username.value.trim(), password: form.password.value});
    const r = await fetch("/api/v1/auth/token", {method: "POST", body});
    const data = await r.json().catch(() => null);
    if (!r.ok) {
      linli.show("login-problem", linli.t("login.failed", {reason: linli.reasonOf(data) || `HTTP ${r.status}`}));
      form.password.select();
      return;
    }
    linli.keep(data);
    const next = new URLSearchParams(location.search).get("next");
    location.assign(next && next.startsWith(`${linli.BASE}/`) && !next.startsWith(`${linli.BASE}/login`) ? next : `${linli.BASE}/board`);
  });
})();
