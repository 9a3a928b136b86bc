// sqla-audit viewer: progressive enhancement only -- every page works without it.
// Adds each time in the browser's own zone next to the UTC time the server rendered.
(function () {
  "use strict";
  function run() {
    var zone;
    try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone; } catch (e) { return; }
    var format = new Intl.DateTimeFormat(undefined, {
      year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
      timeZoneName: "short"
    });
    var times = document.querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var when = new Date(times[i].getAttribute("datetime"));
      if (isNaN(when.getTime())) { continue; }
      var local = document.createElement("span");
      local.className = "local";
      local.textContent = "(" + format.format(when) + ")";
      times[i].title = times[i].textContent;
      times[i].insertAdjacentElement("afterend", local);
    }
    var label = document.querySelector("[data-zone]");
    if (label && zone) { label.textContent = "your zone: " + zone; label.hidden = false; }
    var note = document.querySelector("[data-zone-note]");
    if (note && zone) { note.textContent = "; in brackets, your browser's zone (" + zone + ")"; }
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", run);
  } else {
    run();
  }
})();
