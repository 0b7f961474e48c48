// Live updates of the overview: swap in the tiles and errors the server sends.
(function () {
  "use strict";
  var state = document.getElementById("live-state");
  if (!window.EventSource || !document.getElementById("tiles")) {
    return;
  }
  var source = new EventSource("/events");
  source.addEventListener("open", function () {
    if (state) { state.textContent = "Live: tiles update as flows run."; }
  });
  source.addEventListener("error", function () {
    if (state) { state.textContent = "Live updates paused; reconnecting…"; }
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
    document.body.setAttribute("data-live-updates", String(Number(document.body.getAttribute("data-live-updates") || 0) + 1));
  });
})();
