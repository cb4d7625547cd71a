// Backbeat dashboard: draws charts from <script type="application/json"> blocks, toggles
// their tables, and fetches a live forecast on the booking form. No inline script anywhere
// (the Content-Security-Policy forbids it).
(function () {
  "use strict";

  var COLORS = ["#2563eb", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be123c",
                "#4d7c0f", "#a16207", "#475569", "#db2777", "#0d9488", "#7c3aed"];

  function readJson(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  function drawChart(canvas) {
    var data = readJson(canvas.dataset.chart);
    if (!data || typeof Chart === "undefined") { return; }
    var kind = canvas.dataset.kind || "line";
    var names = Object.keys(data.series);
    var datasets = names.map(function (name, i) {
      var color = COLORS[i % COLORS.length];
      var set = {
        label: name, data: data.series[name], borderColor: color,
        backgroundColor: kind === "bar" ? color : color + "33", pointRadius: 0, borderWidth: 2,
        tension: 0
      };
      if (name.indexOf("per period") >= 0) { set.type = "bar"; set.yAxisID = "y2"; set.backgroundColor = color + "66"; }
      if (name.indexOf("Planned") === 0) { set.borderDash = [6, 4]; }
      return set;
    });
    var xTicks = kind === "bar" ? { autoSkip: false } : { maxRotation: 0, autoSkip: true, maxTicksLimit: 12 };
    var scales = { x: { ticks: xTicks }, y: { beginAtZero: true } };
    if (datasets.some(function (d) { return d.yAxisID === "y2"; })) {
      scales.y2 = { beginAtZero: true, position: "right", grid: { drawOnChartArea: false } };
    }
    var chart = new Chart(canvas, {
      type: kind, data: { labels: data.labels, datasets: datasets },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        interaction: { mode: "index", intersect: false },
        plugins: { legend: { display: names.length > 1 } }, scales: scales
      }
    });
    canvas.dataset.rendered = String(chart.data.datasets.length);
  }

  function toggleTable(button) {
    var table = document.getElementById(button.dataset.toggleTable);
    if (!table) { return; }
    table.hidden = !table.hidden;
    button.setAttribute("aria-expanded", String(!table.hidden));
  }

  function forecast(textarea) {
    var url = textarea.dataset.forecastUrl, timer = null, seq = 0;
    var out = {
      matched: document.getElementById("forecast-matched"),
      available: document.getElementById("forecast-available"),
      reach: document.getElementById("forecast-reach"),
      error: document.getElementById("forecast-error")
    };
    function fmt(n) { return n === null || n === undefined ? "–" : Number(n).toLocaleString(); }
    var form = textarea.form;
    var FIELDS = ["tier", "cpm", "goal_impressions", "cap_count_0", "cap_length_0", "cap_period_0",
                  "cap_count_1", "cap_length_1", "cap_period_1", "cap_count_2", "cap_length_2",
                  "cap_period_2", "targeting"];
    function run() {
      var mine = ++seq;
      // Only the draft's fields: never the CSRF token (URLs end up in logs).
      var params = new URLSearchParams({ campaign_id: textarea.dataset.campaignId });
      FIELDS.forEach(function (name) {
        var input = form.elements.namedItem(name);
        if (input && input.value !== "") { params.set(name, input.value); }
      });
      fetch(url + "?" + params.toString(), { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.json().then(function (body) { return { ok: r.ok, body: body }; }); })
        .then(function (res) {
          if (mine !== seq) { return; }
          if (!res.ok) {
            out.error.textContent = res.body.detail || "forecast unavailable";
            out.error.hidden = false;
            return;
          }
          out.error.hidden = !res.body.note;
          out.error.textContent = res.body.note || "";
          out.matched.textContent = fmt(res.body.matched);
          out.available.textContent = fmt(res.body.available);
          out.reach.textContent = fmt(res.body.reach);
          textarea.dataset.forecasted = String(mine);
        })
        .catch(function () { out.error.textContent = "forecast unavailable"; out.error.hidden = false; });
    }
    function later() { clearTimeout(timer); timer = setTimeout(run, 300); }
    FIELDS.forEach(function (name) {
      var input = form.elements.namedItem(name);
      if (input) { input.addEventListener("input", later); input.addEventListener("change", later); }
    });
    run();
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("canvas[data-chart]").forEach(drawChart);
    document.querySelectorAll("[data-toggle-table]").forEach(function (button) {
      button.addEventListener("click", function () { toggleTable(button); });
    });
    document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
    document.querySelectorAll("textarea[data-forecast-url]").forEach(forecast);
  });
})();
