// tuneloop ui: a job page's live part. One EventSource per page on /jobs/ID/stream (server-sent
// events after the last event the page was rendered with); the server-rendered page is complete
// without it. Redraws each curve with charts.py's geometry, appends events, updates the state.
(function () {
  "use strict";
  var box = document.getElementById("job");
  if (!box || box.dataset.active !== "yes" || !window.EventSource) { return; }
  var L = 4, R = 296, T = 8, B = 104;             // charts.py's LEFT, RIGHT, TOP, BOTTOM
  var MARKS = { completed: "✓ ", failed: "✗ ", cancelled: "■ ", running: "▶ ", queued: "… " };   // macros.html's
  var panels = {};
  document.querySelectorAll(".panel").forEach(function (fig) {
    var data = fig.querySelector("script.points");
    panels[fig.dataset.metric] = { fig: fig, points: data ? JSON.parse(data.textContent) : [] };
  });
  function fmt(v) { return Number(v.toPrecision(4)).toString(); }
  var BUCKETS = 500;                              // charts.py's BUCKETS: the same downsampling
  function downsample(pts) {
    if (pts.length <= BUCKETS) { return { drawn: pts, band: [] }; }
    var drawn = [], band = [], n = pts.length;
    for (var b = 0; b < BUCKETS; b++) {
      var run = pts.slice(Math.floor(b * n / BUCKETS), Math.floor((b + 1) * n / BUCKETS)), sum = 0, lo = Infinity, hi = -Infinity;
      run.forEach(function (q) { sum += q[1]; lo = Math.min(lo, q[1]); hi = Math.max(hi, q[1]); });
      drawn.push([run[run.length - 1][0], sum / run.length]); band.push([run[run.length - 1][0], lo, hi]);
    }
    return { drawn: drawn, band: band };
  }
  function draw(p) {
    var pts = p.points;
    if (!pts.length) { return; }
    var d = downsample(pts), x0 = pts[0][0], x1 = pts[pts.length - 1][0], y0 = Infinity, y1 = -Infinity;
    pts.forEach(function (q) { y0 = Math.min(y0, q[1]); y1 = Math.max(y1, q[1]); });
    var dx = (x1 - x0) || 1, dy = (y1 - y0) || 1;
    function xy(s, v) { return (L + (s - x0) / dx * (R - L)).toFixed(1) + "," + (B - (v - y0) / dy * (B - T)).toFixed(1); }
    p.fig.querySelector("polyline").setAttribute("points", d.drawn.map(function (q) { return xy(q[0], q[1]); }).join(" "));
    p.fig.querySelector("polygon.band").setAttribute("points", d.band.map(function (q) { return xy(q[0], q[2]); })
      .concat(d.band.slice().reverse().map(function (q) { return xy(q[0], q[1]); })).join(" "));
    var last = pts[pts.length - 1];
    p.fig.querySelector(".last").textContent = fmt(last[1]) + " at step " + last[0];
    p.fig.querySelector(".lo").textContent = "min " + fmt(y0);
    p.fig.querySelector(".hi").textContent = "max " + fmt(y1);
  }
  function add(p, step, value) {                 // a step logged twice (after a resume) keeps its last value
    var i = p.points.findIndex(function (q) { return q[0] === step; });
    if (i >= 0) { p.points[i][1] = value; } else { p.points.push([step, value]); p.points.sort(function (a, b) { return a[0] - b[0]; }); }
  }
  var source = new EventSource(box.dataset.stream);
  source.addEventListener("metrics", function (ev) {
    var m = JSON.parse(ev.data);
    if (typeof m.step !== "number") { return; }
    Object.keys(panels).forEach(function (name) {
      var v = m[name];
      if (typeof v === "number" && isFinite(v)) { add(panels[name], m.step, v); draw(panels[name]); }
    });
  });
  source.addEventListener("message", function (ev) {
    var e = JSON.parse(ev.data), li = document.createElement("li"), t = document.createElement("time"), s = document.createElement("strong");
    li.className = "level-" + e.level; t.textContent = e.time; s.textContent = e.level;
    li.append(t, " ", s, " " + e.message);
    document.getElementById("events").appendChild(li);
  });
  source.addEventListener("job", function (ev) {
    var j = JSON.parse(ev.data);
    var st = document.querySelector("#job-state .state");
    st.textContent = (MARKS[j.state] || "") + j.state; st.className = "state state-" + j.state;
    document.getElementById("job-progress").value = j.percent;
    document.getElementById("job-steps").textContent = "step " + j.step + " of " + (j.total_steps || "?") + " (" + j.percent + "%)";
    document.getElementById("job-loss").textContent = j.loss === null ? "-" : j.loss.toFixed(4);
  });
  source.addEventListener("end", function () {    // the job ended: the page as the server renders it now
    source.close();
    window.location.reload();
  });
}());
