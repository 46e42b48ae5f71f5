// Timeline page (appt_pipeline.service.timeline_page): the two filters and the reschedule connectors.
// "Show canceled" off hides rows with data-status="CANCELED"; "Active only" on keeps only rows with
// data-active="true" (CONFIRMED, starting at or after the time the page was made, or without a start) - the
// rules of the history API's include_canceled / active_only. No reload, no request.
(function () {
  "use strict";
  var list = document.querySelector("[data-timeline]");
  if (!list) { return; }
  var wrap = document.querySelector("[data-timeline-wrap]");
  var svg = document.querySelector("[data-links]");
  var rows = Array.prototype.slice.call(list.querySelectorAll(".tl-row"));
  var nowMarker = list.querySelector("[data-now-marker]");
  var showCanceled = document.getElementById("show-canceled");
  var activeOnly = document.getElementById("active-only");
  var counter = document.querySelector("[data-visible-count]");
  var emptyFiltered = document.querySelector("[data-empty-filtered]");
  var SVG_NS = "http://www.w3.org/2000/svg";

  function visible(row) {
    if (!showCanceled.checked && row.dataset.status === "CANCELED") { return false; }
    return !activeOnly.checked || row.dataset.active === "true";
  }

  function rowById(id) {
    for (var i = 0; i < rows.length; i++) {
      if (rows[i].dataset.appointmentId === id) { return rows[i]; }
    }
    return null;
  }

  function dotCenter(row, origin) {
    var dot = row.querySelector(".tl-dot").getBoundingClientRect();
    return { x: dot.left + dot.width / 2 - origin.left, y: dot.top + dot.height / 2 - origin.top };
  }

  // One dashed curve per reschedule link whose two rows are visible, from the old row to the new one (arrow),
  // bulging left of the rail; links that overlap vertically bulge further so each stays readable.
  function arrowHead() {
    var defs = document.createElementNS(SVG_NS, "defs");
    var marker = document.createElementNS(SVG_NS, "marker");
    marker.setAttribute("id", "chain-arrow");
    marker.setAttribute("viewBox", "0 0 10 10");
    marker.setAttribute("refX", "9");
    marker.setAttribute("refY", "5");
    marker.setAttribute("markerWidth", "7");
    marker.setAttribute("markerHeight", "7");
    marker.setAttribute("orient", "auto-start-reverse");
    var tip = document.createElementNS(SVG_NS, "path");
    tip.setAttribute("d", "M0,0 L10,5 L0,10 z");
    tip.setAttribute("class", "chain-arrow");
    marker.appendChild(tip);
    defs.appendChild(marker);
    return defs;
  }

  function drawLinks() {
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    svg.appendChild(arrowHead());
    var origin = wrap.getBoundingClientRect();
    var spans = [];
    rows.forEach(function (row) {
      var targetId = row.dataset.successorId;
      if (!targetId || row.hidden) { return; }
      var target = rowById(targetId);
      if (!target || target.hidden) { return; }
      var a = dotCenter(row, origin), b = dotCenter(target, origin);
      var top = Math.min(a.y, b.y), bottom = Math.max(a.y, b.y);
      var depth = 0;
      spans.forEach(function (s) { if (s.top < bottom && top < s.bottom) { depth = Math.max(depth, s.depth + 1); } });
      spans.push({ top: top, bottom: bottom, depth: depth });
      var bulge = 26 + 9 * (depth % 3);
      var path = document.createElementNS(SVG_NS, "path");
      // start and end just outside the dots (they are drawn above the connector), the arrow pointing at the new row
      var ax = a.x - 9, bx = b.x - 11;
      path.setAttribute("d", "M" + ax + "," + a.y + " C" + (a.x - bulge) + "," + a.y + " " + (b.x - bulge) + "," +
        b.y + " " + bx + "," + b.y);
      path.setAttribute("class", "chain-path");
      path.setAttribute("marker-end", "url(#chain-arrow)");
      path.setAttribute("data-from", row.dataset.appointmentId);
      path.setAttribute("data-to", targetId);
      svg.appendChild(path);
    });
  }

  function apply() {
    var shown = 0;
    rows.forEach(function (row) {
      row.hidden = !visible(row);
      if (!row.hidden) { shown += 1; }
    });
    if (nowMarker) { nowMarker.hidden = shown === 0; }
    counter.textContent = shown + " of " + rows.length + " shown";
    emptyFiltered.hidden = shown > 0;
    drawLinks();
  }

  showCanceled.addEventListener("change", apply);
  activeOnly.addEventListener("change", apply);
  window.addEventListener("resize", drawLinks);
  list.addEventListener("toggle", drawLinks, true);  // a <details> opened or closed moves the rows below it
  apply();
}());
