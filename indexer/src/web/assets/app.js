// ubackup dashboard: local times, copy buttons, confirmations, and alert notifications.
(function () {
  "use strict";
  var fmt = new Intl.DateTimeFormat(undefined, {year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false});
  function localTimes(root) {
    (root || document).querySelectorAll("time[data-ms]").forEach(function (t) {
      var ms = Number(t.getAttribute("data-ms"));
      if (!ms) return;
      var d = new Date(ms);
      t.textContent = fmt.format(d);
      t.setAttribute("datetime", d.toISOString());
    });
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local";
    var tz = document.getElementById("tz");
    if (tz) tz.textContent = zone;
    // Hour labels of charts in the reader's zone, stated beside the chart's title.
    var hours = (root || document).querySelectorAll("text[data-hour-ms]");
    hours.forEach(function (t) {
      t.textContent = new Date(Number(t.getAttribute("data-hour-ms"))).getHours() + "h";
    });
    if (hours.length) document.querySelectorAll(".hours-zone").forEach(function (s) { s.textContent = "(hours in " + zone + ")"; });
    // Charts that scroll (phones) open on their newest data, at the right.
    document.querySelectorAll("figure.chart .scroll").forEach(function (s) { s.scrollLeft = s.scrollWidth; });
  }
  function copyButtons() {
    document.querySelectorAll("button[data-copy]").forEach(function (b) {
      b.addEventListener("click", function () {
        var el = document.getElementById(b.getAttribute("data-copy"));
        if (!el) return;
        var text = el.textContent;
        var done = function () { b.textContent = "Copied"; setTimeout(function () { b.textContent = "Copy"; }, 1500); };
        if (navigator.clipboard) navigator.clipboard.writeText(text).then(done, function () {});
        else { var r = document.createRange(); r.selectNodeContents(el); var s = getSelection(); s.removeAllRanges(); s.addRange(r); }
      });
    });
  }
  function confirms() {
    document.querySelectorAll("form[data-confirm]").forEach(function (f) {
      f.addEventListener("submit", function (e) {
        if (!window.confirm(f.getAttribute("data-confirm"))) e.preventDefault();
      });
    });
  }
  function selectAll() {
    var all = document.getElementById("select-all");
    if (!all) return;
    var name = all.getAttribute("data-select") || "key";
    all.addEventListener("change", function () {
      document.querySelectorAll("input[type=checkbox][name=" + name + "]").forEach(function (c) { c.checked = all.checked; });
    });
  }
  // Grouped alerts: an opened group fetches its newest alerts once (put in as text).
  function groupSamples() {
    document.querySelectorAll("details.group").forEach(function (d) {
      var ul = d.querySelector("ul.samples[data-src]");
      if (!ul) return;
      d.addEventListener("toggle", function () {
        if (!d.open || ul.getAttribute("data-loaded")) return;
        ul.setAttribute("data-loaded", "1");
        fetch(ul.getAttribute("data-src"), {credentials: "same-origin"})
          .then(function (r) { return r.ok ? r.json() : null; })
          .then(function (j) {
            if (!j) { ul.removeAttribute("data-loaded"); return; }
            j.alerts.forEach(function (a) {
              var li = document.createElement("li"), link = document.createElement("a"), m = document.createElement("span");
              link.href = "/alerts/" + a.id;
              link.textContent = a.rule + " " + a.subject;
              m.className = "muted";
              m.textContent = " " + a.message;
              li.appendChild(link); li.appendChild(m); ul.appendChild(li);
            });
          }).catch(function () { ul.removeAttribute("data-loaded"); });
      });
    });
  }
  // Alerts page: poll the feed; a new open alert in a focus business raises a notification.
  function notifications() {
    var box = document.getElementById("notify");
    if (!box) return;
    var btn = document.getElementById("notify-enable");
    if (!("Notification" in window)) { box.textContent = "This browser has no notifications."; return; }
    function state() { box.querySelector("span").textContent = "Notifications: " + Notification.permission; }
    state();
    if (btn) btn.addEventListener("click", function () { Notification.requestPermission().then(state); });
    var seen = null;
    function poll() {
      fetch("/alerts/feed", {credentials: "same-origin"}).then(function (r) { return r.ok ? r.json() : null; })
        .then(function (j) {
          if (!j) return;
          var ids = {};
          j.alerts.forEach(function (a) { ids[a.id] = true; });
          if (seen !== null && Notification.permission === "granted") {
            j.alerts.forEach(function (a) {
              if (!seen[a.id] && a.focus) new Notification("ubackup: " + a.rule, {body: a.subject + "\n" + a.message, tag: "ubk-" + a.id});
            });
          }
          seen = ids;
        }).catch(function () {});
    }
    poll();
    setInterval(poll, 30000);
  }
  document.addEventListener("DOMContentLoaded", function () {
    localTimes(); copyButtons(); confirms(); selectAll(); groupSamples(); notifications();
  });
})();
