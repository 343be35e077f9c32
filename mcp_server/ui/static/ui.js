// Live updates for the control room: poll a tiny summary of what changes (the version, the newest
// agent audit entry, the open approval requests) and, when it changes, fetch this same page and swap
// its header, navigation and main content in place. Nothing is swapped while the reader works in a
// form or has focus inside the page; a note says there is news instead. No other script runs here.
(function () {
  "use strict";
  var body = document.body;
  var live = body.getAttribute("data-live");
  if (!live || !window.fetch || !window.DOMParser) return;
  var state = body.getAttribute("data-state");
  var every = Number(body.getAttribute("data-poll-ms")) || 3000;
  var busy = false;

  function note(text) {
    var box = document.getElementById("live-note");
    if (box) box.textContent = text;
  }

  function occupied() {
    var active = document.activeElement;
    if (!active || active === body || active === document.documentElement) return false;
    var main = document.getElementById("main");
    return active !== main && main !== null && main.contains(active);
  }

  function swap(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html");
    ["status", "nav", "main"].forEach(function (id) {
      var now = document.getElementById(id);
      var next = fresh.getElementById(id);
      if (!now || !next) return;
      if (id === "main") {
        var flashes = now.querySelectorAll(":scope > .flash");
        for (var i = flashes.length - 1; i >= 0; i--) next.insertBefore(flashes[i], next.firstChild);
      }
      now.replaceWith(next);
    });
    document.title = fresh.title || document.title;
  }

  function poll() {
    if (busy || document.hidden) return;
    busy = true;
    fetch(live, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 401) {
          note("Signed out: open a new sign-in link.");
          clearInterval(timer);
          return null;
        }
        return response.ok ? response.json() : null;
      })
      .then(function (head) {
        if (!head || head.state === state) return null;
        if (occupied()) {
          note("Something changed: reload to see it.");
          return null;
        }
        return fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
          .then(function (response) { return response.ok ? response.text() : null; })
          .then(function (html) {
            if (html === null) return;
            swap(html);
            state = head.state;
            body.setAttribute("data-state", state);
            note("Updated " + new Date().toLocaleTimeString() + ".");
          });
      })
      .catch(function () { note("Lost contact with the control room; retrying."); })
      .then(function () { busy = false; });
  }

  var timer = setInterval(poll, every);
})();
