// Live updates of the overview: swap in the tiles and errors the server sends.
(function () {
  "use strict";
  var state = document.getElementById("live-state");
  if (!window.EventSource || !document.getElementById("tiles")) {
    return;
  }
  // Relative times ("31 s ago") follow the clock here, from each
  // <time datetime>; the server sends an update only when the data changes.
  function ago(moment) {
    var gap = Math.max((Date.now() - moment) / 1000, 0);
    if (gap < 60) { return Math.round(gap) + " s ago"; }
    if (gap < 3600) { return Math.round(gap / 60) + " min ago"; }
    if (gap < 86400) { return Math.round(gap / 3600) + " h ago"; }
    return Math.round(gap / 86400) + " d ago";
  }
  function refreshTimes() {
    var times = document.querySelectorAll("time[data-ago][datetime]");
    for (var i = 0; i < times.length; i++) {
      var moment = Date.parse(times[i].getAttribute("datetime"));
      if (!isNaN(moment)) { times[i].textContent = ago(moment); }
    }
  }
  window.setInterval(refreshTimes, 5000);
  var source = new EventSource("/events");
  source.addEventListener("open", function () {
    if (state) { state.textContent = "Live: tiles update as flows run."; }
  });
  source.addEventListener("error", function () {
    if (state) { state.textContent = "Live updates paused; reconnecting…"; }
  });
  source.addEventListener("signed_out", function () {
    source.close();
    if (state) { state.textContent = "Signed out: reload the page to sign in again."; }
  });
  source.addEventListener("snapshot", function (event) {
    var data = JSON.parse(event.data);
    Object.keys(data.tiles).forEach(function (flow) {
      var tiles = document.querySelectorAll("[data-tile]");
      for (var i = 0; i < tiles.length; i++) {
        if (tiles[i].getAttribute("data-tile") === flow) {
          tiles[i].outerHTML = data.tiles[flow];
        }
      }
    });
    var errors = document.getElementById("recent-errors");
    if (errors) { errors.innerHTML = data.errors; }
    var summary = document.getElementById("summary");
    if (summary) { summary.innerHTML = data.summary; }
    refreshTimes();
    document.body.setAttribute("data-live-updates", String(Number(document.body.getAttribute("data-live-updates") || 0) + 1));
  });
})();
