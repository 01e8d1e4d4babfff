// linli console: what every page shares. The API is read with the user's own token (kept in
// this browser's localStorage, below): the console sees exactly what the API lets this user see.
"use strict";

const linli = (() => {
  const BASE = document.body.dataset.base;
  const API = "/api/v1";
  const TEXTS = JSON.parse(document.getElementById("linli-texts").textContent);
  const LANG = document.documentElement.lang.startsWith("en") ? "en" : "zh";
  const KEY = "linli.session";

  function t(key, vars) {
    let text = TEXTS[key] ?? key;
    for (const [name, value] of Object.entries(vars || {})) text = text.replaceAll(`{${name}}`, String(value));
    return text;
  }

  // --- the session: an access token, refreshed with the one-use refresh token before it expires.
  // Kept in localStorage so every tab of this browser shares it (an incident opened in a new tab
  // needs no second login); "log out" forgets it. Tabs take turns to refresh (Web Locks where the
  // page is a secure context): a refresh token used twice would revoke the whole session.
  function session() {
    try { return JSON.parse(localStorage.getItem(KEY) || "null"); } catch { return null; }
  }
  function keep(pair) {
    localStorage.setItem(KEY, JSON.stringify({
      access: pair.access_token, refresh: pair.refresh_token, expires: Date.now() + pair.expires_in * 1000,
    }));
  }
  function forget() { localStorage.removeItem(KEY); }
  function toLogin() {
    forget();
    const here = location.pathname + location.search;
    location.assign(`${BASE}/login?next=${encodeURIComponent(here)}`);
    return new Promise(() => {});  // the page is leaving
  }
  let refreshing = null;
  function refresh(stale) {
    const run = async () => {
      const s = session();
      if (!s) return toLogin();
      if (s.access !== stale) return;  // another tab has renewed it meanwhile
      const r = await fetch(`${API}/auth/refresh`, {
        method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({refresh_token: s.refresh}),
      });
      if (!r.ok) return toLogin();
      keep(await r.json());
    };
    refreshing ??= (navigator.locks ? navigator.locks.request("linli-refresh", run) : run())
      .finally(() => { refreshing = null; });
    return refreshing;
  }
  async function token() {
    let s = session();
    if (!s) return toLogin();
    if (s.expires - Date.now() < 60_000) { await refresh(s.access); s = session(); }
    return s.access;
  }

  class ApiError extends Error {
    constructor(status, body) {
      super(reasonOf(body) || `HTTP ${status}`);
      this.status = status;
      this.body = body;
    }
  }
  function reasonOf(body) {
    if (!body) return "";
    if (body.reason) return body.reason;
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
    return "";
  }

  function url(path, params) {
    const u = new URL(API + path, location.origin);
    for (const [name, value] of Object.entries(params || {})) {
      if (value === undefined || value === null || value === "") continue;
      for (const v of Array.isArray(value) ? value : [value]) u.searchParams.append(name, v);
    }
    return u;
  }

  async function api(path, {method = "GET", body, params, signal} = {}) {
    for (let attempt = 0; ; attempt++) {
      const access = await token();
      const headers = {Authorization: `Bearer ${access}`, Accept: "application/json"};
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const r = await fetch(url(path, params), {
        method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
      });
      if (r.status === 401 && attempt === 0) { await refresh(access); continue; }
      if (r.status === 401) return toLogin();
      const data = await r.json().catch(() => null);
      if (!r.ok) throw new ApiError(r.status, data);
      return data;
    }
  }

  // every page of a list, up to `most` items
  async function all(path, params, most = 20_000) {
    const items = [];
    let after;
    do {
      const page = await api(path, {params: {...params, limit: 1000, after}});
      items.push(...page.items);
      after = page.next;
    } while (after && items.length < most);
    return items;
  }

  // --- the live feed: Server-Sent Events read with fetch (EventSource cannot send a token),
  // resumed with Last-Event-ID after a drop, with capped, jittered backoff
  function live(onEvent, onState) {
    let last = null;
    let failures = 0;
    const stop = new AbortController();
    (async () => {
      while (!stop.signal.aborted) {
        try {
          const access = await token();
          const headers = {Authorization: `Bearer ${access}`, Accept: "text/event-stream"};
          if (last) headers["Last-Event-ID"] = last;
          const r = await fetch(`${API}/live`, {headers, signal: stop.signal, cache: "no-store"});
          if (r.status === 401) { await refresh(access); continue; }
          if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
          const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = "";
          for (;;) {
            const {value, done} = await reader.read();
            if (done) break;
            buffer += value;
            let end;
            while ((end = buffer.indexOf("\n\n")) >= 0) {
              const block = buffer.slice(0, end);
              buffer = buffer.slice(end + 2);
              const event = {event: "message", data: "", id: null};
              for (const line of block.split("\n")) {
                if (line.startsWith(":")) continue;
                const colon = line.indexOf(":");
                const field = colon < 0 ? line : line.slice(0, colon);
                const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
                if (field === "data") event.data += (event.data ? "\n" : "") + text;
                else if (field === "event") event.event = text;
                else if (field === "id") event.id = text;
              }
              if (event.id) last = event.id;
              if (event.event === "ready") { failures = 0; onState?.(true); }
              if (event.data && event.event !== "ready" && event.event !== "end") onEvent(event.event, JSON.parse(event.data));
            }
          }
        } catch (err) {
          if (stop.signal.aborted) return;
        }
        onState?.(false);
        failures += 1;
        const cap = Math.min(10_000, 250 * 2 ** Math.min(failures, 6));
        await new Promise((done) => setTimeout(done, failures === 1 ? 0 : Math.random() * cap));
      }
    })();
    return stop;
  }

  // --- building the page: elements from data, never HTML strings
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  function show(id, text) {
    const node = document.getElementById(id);
    node.textContent = text || "";
    node.hidden = !text;
  }
  function problem(err, id = "problem") {
    if (err instanceof ApiError && err.status === 404) return show(id, t("not_found"));
    show(id, t("error", {reason: err.message || String(err)}));
  }

  // --- words for times, places and states
  const LOCALE = LANG === "zh" ? "zh-CN" : "en-GB";
  const TIME = new Intl.DateTimeFormat(LOCALE, {dateStyle: "short", timeStyle: "medium"});
  function time(iso) { return iso ? TIME.format(new Date(iso)) : "—"; }
  function span(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const s = Math.max(0, Math.round(seconds));
    if (s < 90) return t("seconds", {n: s});
    if (s < 90 * 60) return t("minutes", {n: Math.round(s / 60)});
    if (s < 36 * 3600) return t("hours", {n: Math.round(s / 360) / 10});
    return t("days", {n: Math.round(s / 8640) / 10});
  }
  function age(iso) { return iso ? span((Date.now() - Date.parse(iso)) / 1000) : "—"; }
  function ago(iso) { return iso ? t("ago", {age: age(iso)}) : "—"; }
  function place(p) {
    if (!p) return "—";
    const parts = [p.building && `${p.building}${LANG === "zh" ? "号楼" : " bldg"}`, p.unit && `${p.unit}${LANG === "zh" ? "单元" : " unit"}`, p.room];
    return parts.filter(Boolean).join(" ") || "—";
  }
  function title(item) { return LANG === "zh" ? item.title_zh : item.title_en; }
  function badge(severity) { return el("span", {class: `badge sev-${severity}`, text: t(`severity.${severity}`)}); }
  const SEVERITIES = ["critical", "major", "minor", "info"];
  const OPEN = new Set(["detected", "accepted", "dispatched", "handled", "verified"]);

  // --- the frame: who is logged in, logging out, the language switch
  async function frame() {
    if (document.body.dataset.page === "login") return null;
    if (!session()) return toLogin();
    document.getElementById("logout")?.addEventListener("click", () => {
      forget();
      location.assign(`${BASE}/login`);
    });
    const me = await api("/auth/me");
    const who = document.getElementById("who");
    if (who) who.textContent = `${me.name} (${me.roles.join(", ")})`;
    return me;
  }
  const ready = frame();

  // when a page has drawn its data: tests and the speed measurement wait for this mark
  function rendered(name) {
    performance.mark(`linli:${name}`);
    document.body.dataset.rendered = (document.body.dataset.rendered || "") + ` ${name}`;
  }

  return {
    BASE, LANG, t, api, all, live, keep, session, el, show, problem, time, span, age, ago, place, title, badge,
    SEVERITIES, OPEN, ApiError, reasonOf, ready, rendered,
  };
})();
