// The web console's stylesheet and script (broker/http/console.h), served
// from the binary at /ui/static/: no build step, no external assets, and
// nothing inline, so the Content-Security-Policy can forbid inline code.
#pragma once

#include <string_view>

namespace jitbroker::http {

inline constexpr std::string_view kConsoleCss = R"css(
:root { color-scheme: light dark; --fg: #1d1d1f; --bg: #fbfbfd; --muted: #6e6e73;
  --line: #d2d2d7; --ok: #1a7f37; --bad: #b42318; --accent: #0b57d0; }
@media (prefers-color-scheme: dark) { :root { --fg: #f5f5f7; --bg: #1d1d1f; --muted: #a1a1a6;
  --line: #424245; --ok: #4ac26b; --bad: #ff6b5b; --accent: #8ab4f8; } }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
a { color: var(--accent); }
.skip { position: absolute; left: -999px; }
.skip:focus { left: 8px; top: 8px; background: var(--bg); padding: 4px; }
header { display: flex; flex-wrap: wrap; gap: 16px; align-items: center; padding: 10px 20px;
  border-bottom: 1px solid var(--line); }
.brand { font-weight: 700; }
nav { display: flex; gap: 14px; }
nav a[aria-current=page] { font-weight: 700; text-decoration: none; }
.whoami { margin-left: auto; display: flex; gap: 10px; align-items: center; }
main { padding: 8px 20px 40px; max-width: 1100px; }
h1 { font-size: 22px; }
h2 { font-size: 17px; margin: 0 0 8px; }
section { border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; margin: 14px 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0 0 10px; }
dt { color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; }
pre { margin: 0; font-size: 13px; white-space: pre-wrap; }
code { font-size: 13px; overflow-wrap: anywhere; }
.tier { display: inline-block; padding: 0 6px; border-radius: 4px; border: 1px solid var(--line);
  font-size: 13px; }
.tier-merge_deploy, .tier-secret, .tier-destructive { border-color: var(--bad); color: var(--bad); }
form.decide { display: grid; gap: 6px; max-width: 640px; }
form.revoke, form.search { display: flex; flex-wrap: wrap; gap: 8px; align-items: center;
  margin: 8px 0; }
textarea, input { font: inherit; padding: 4px 6px; }
.buttons { display: flex; gap: 10px; }
button { font: inherit; padding: 5px 14px; border-radius: 6px; border: 1px solid var(--line);
  background: transparent; color: var(--fg); cursor: pointer; }
button:focus-visible, a:focus-visible, input:focus-visible, textarea:focus-visible {
  outline: 2px solid var(--accent); outline-offset: 2px; }
button.approve { border-color: var(--ok); color: var(--ok); font-weight: 600; }
button.deny { border-color: var(--bad); color: var(--bad); }
table { border-collapse: collapse; width: 100%; margin: 8px 0; font-size: 14px; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
th, td { text-align: left; border-bottom: 1px solid var(--line); padding: 4px 8px;
  vertical-align: top; }
.state-active, .ok { color: var(--ok); }
.state-revoked, .state-denied, .broken, .error { color: var(--bad); }
form.newsession fieldset { display: grid; grid-template-columns: max-content 1fr; gap: 6px 12px;
  max-width: 760px; border: 1px solid var(--line); border-radius: 8px; margin: 10px 0; }
form.newsession legend { font-weight: 600; }
select { font: inherit; padding: 4px 6px; }
#session-env { padding: 8px; border: 1px solid var(--line); border-radius: 6px; }
.notice, .live:not(:empty) { padding: 6px 10px; border: 1px solid var(--line); border-radius: 6px; }
)css";

inline constexpr std::string_view kConsoleJs = R"js(
// jitbroker console: live countdowns, and noticing new or decided approvals.
"use strict";
(function () {
  function tick() {
    var now = Date.now();
    document.querySelectorAll(".countdown[data-expires]").forEach(function (el) {
      var left = Math.round((Date.parse(el.dataset.expires) - now) / 1000);
      if (isNaN(left)) { return; }
      if (left <= 0) { el.textContent = "expired"; return; }
      var m = Math.floor(left / 60), s = left % 60;
      el.textContent = m > 0 ? m + "m " + s + "s" : s + "s";
    });
  }
  function busy() {
    var a = document.activeElement;
    if (a && (a.tagName === "TEXTAREA" || a.tagName === "INPUT")) { return true; }
    return Array.prototype.some.call(document.querySelectorAll("textarea"),
      function (t) { return t.value !== ""; });
  }
  function poll(main) {
    fetch(main.dataset.poll, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (state) {
        if (!state || state.ids === main.dataset.ids) { return; }
        if (busy()) {
          document.getElementById("live").textContent =
            "The pending approvals changed. Reload the page to see them.";
        } else {
          window.location.reload();
        }
      })
      .catch(function () {});
  }
  document.addEventListener("DOMContentLoaded", function () {
    tick();
    setInterval(tick, 1000);
    var main = document.getElementById("main");
    if (main && main.dataset.poll) {
      setInterval(function () { poll(main); }, 3000);
    }
  });
})();
)js";

}  // namespace jitbroker::http
