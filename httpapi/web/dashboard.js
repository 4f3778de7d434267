// Live updates for the dashboard. Without this script the pages still work:
// they are rendered on the server and refresh themselves through <noscript>.
(function () {
  "use strict";
  var body = document.body;
  var stateEl = document.getElementById("live-state");

  function setState(text, ok) {
    if (!stateEl) return;
    stateEl.textContent = text;
    stateEl.className = "live-state " + (ok ? "live-ok" : "live-error");
  }

  // ago writes "3 min ago" for a moment in milliseconds.
  function ago(ms) {
    var s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 5) return "just now";
    if (s < 60) return s + " s ago";
    var m = Math.floor(s / 60);
    if (m < 60) return m + " min ago";
    var h = Math.floor(m / 60);
    if (h < 24) return h + " h " + (m % 60) + " min ago";
    var d = Math.floor(h / 24);
    return d + (d === 1 ? " day ago" : " days ago");
  }

  // relTimes turns every server-written UTC time into a relative one, with
  // the full local time on hover.
  function relTimes(root) {
    var els = (root || document).querySelectorAll("time.ago[data-ts]");
    for (var i = 0; i < els.length; i++) {
      var ts = parseInt(els[i].getAttribute("data-ts"), 10);
      if (!ts) continue;
      els[i].textContent = ago(ts);
      els[i].title = new Date(ts).toLocaleString();
    }
  }

  function confirmForms() {
    document.addEventListener("submit", function (ev) {
      var msg = ev.target.getAttribute && ev.target.getAttribute("data-confirm");
      if (msg && !window.confirm(msg)) ev.preventDefault();
    }, true);
  }

  function stampUpdated() {
    var el = document.querySelector(".meta time.ago");
    if (el) el.setAttribute("data-ts", String(Date.now()));
  }

  function dashboard() {
    var live = document.getElementById("live");
    function refresh() {
      fetch("/dashboard/fragment", { cache: "no-store", credentials: "same-origin" })
        .then(function (r) {
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.text();
        })
        .then(function (html) {
          live.innerHTML = html; // server-rendered and escaped by html/template
          stampUpdated();
          relTimes();
          setState("● live", true);
        })
        .catch(function () { setState("● reconnecting", false); })
        .then(function () { setTimeout(refresh, 3000); });
    }
    setState("● live", true);
    setTimeout(refresh, 3000);
  }

  function logTools(list) {
    var tools = document.getElementById("logtools");
    var level = document.getElementById("log-level");
    var search = document.getElementById("log-search");
    var shown = document.getElementById("log-shown");
    var firstErr = document.getElementById("log-first-error");
    if (!tools) return function () {};
    tools.hidden = false;
    var rank = { debug: 0, info: 1, warn: 2, error: 3 };
    function visible(li) {
      var lv = level.value;
      var cls = li.className.match(/log-(\w+)/);
      var r = cls ? (rank[cls[1]] || 0) : 0;
      if (lv && r < rank[lv]) return false;
      var q = search.value.trim().toLowerCase();
      if (q) {
        var m = li.querySelector(".msg");
        if (!m || m.textContent.toLowerCase().indexOf(q) < 0) return false;
      }
      return true;
    }
    function apply(li) { li.classList.toggle("filtered", !visible(li)); }
    function applyAll() {
      var items = list.children, n = 0;
      for (var i = 0; i < items.length; i++) {
        apply(items[i]);
        if (!items[i].classList.contains("filtered")) n++;
      }
      shown.textContent = (level.value || search.value.trim()) ? n + " of " + items.length + " lines" : "";
    }
    level.addEventListener("change", applyAll);
    search.addEventListener("input", applyAll);
    firstErr.addEventListener("click", function () {
      var e = list.querySelector("li.log-error");
      var prev = list.querySelector("li.focus");
      if (prev) prev.classList.remove("focus");
      if (!e) { shown.textContent = "no error in the log"; return; }
      if (e.classList.contains("filtered")) { level.value = ""; search.value = ""; applyAll(); }
      e.classList.add("focus");
      e.scrollIntoView({ block: "center" });
    });
    return function (li) { apply(li); if (level.value || search.value.trim()) applyAll(); };
  }

  function buildPage() {
    var id = body.getAttribute("data-build");
    var lastSeq = parseInt(body.getAttribute("data-last-seq"), 10) || 0;
    var finished = body.getAttribute("data-finished") === "true";
    var list = document.getElementById("logs");
    var filterNew = logTools(list);
    function text(elId, value) {
      var el = document.getElementById(elId);
      if (el) el.textContent = value == null ? "" : String(value);
    }
    function append(line) {
      var li = document.createElement("li");
      li.className = "log log-" + line.level;
      li.setAttribute("data-seq", line.seq);
      var t = document.createElement("time");
      t.textContent = line.time;
      var lv = document.createElement("span");
      lv.className = "level";
      lv.textContent = line.level;
      var msg = document.createElement("span");
      msg.className = "msg";
      msg.textContent = line.message;
      li.appendChild(t);
      li.appendChild(document.createTextNode(" "));
      li.appendChild(lv);
      li.appendChild(document.createTextNode(" "));
      li.appendChild(msg);
      list.appendChild(li);
      filterNew(li);
      var empty = document.getElementById("logs-empty");
      if (empty) empty.remove();
    }
    function appendNew(line) {
      if (line.seq <= lastSeq) return; // sent already
      var nearBottom = window.innerHeight + window.scrollY >= document.body.offsetHeight - 40;
      append(line);
      lastSeq = line.seq;
      if (nearBottom) window.scrollTo(0, document.body.scrollHeight);
    }
    // show reveals the actions that fit the build's state.
    function show(d) {
      var els = document.querySelectorAll("[data-when]");
      for (var i = 0; i < els.length; i++) {
        var w = els[i].getAttribute("data-when");
        els[i].hidden = !((w === "unfinished" && !d.finished) || (w === "finished" && d.finished) ||
          (w === "retriable" && d.retriable) || (w === "result" && d.hasResult));
      }
      ["progress-row", "stage-row"].forEach(function (rowId) {
        var row = document.getElementById(rowId);
        if (row) row.hidden = d.finished || d.status === "pending";
      });
      text("build-stage", d.stage);
      if (d.progress >= 0) {
        document.getElementById("build-progress").value = d.progress;
        text("build-progress-text", d.progress + "%");
      }
      var heard = document.querySelector("#build-heard time");
      if (heard && d.lastHeardAt) heard.setAttribute("data-ts", String(d.lastHeardAt));
      relTimes();
    }
    // stream follows the build with the live log (Server-Sent Events,
    // pushed as lines commit); if the browser lacks EventSource or the
    // stream is refused (503 when too many are open), it polls instead.
    function stream() {
      if (typeof EventSource === "undefined") { setTimeout(follow, 2000); return; }
      var es = new EventSource("/builds/" + encodeURIComponent(id) + "/logs/stream?after=" + lastSeq);
      es.addEventListener("open", function () { setState("● following", true); });
      es.addEventListener("log", function (ev) {
        var e = JSON.parse(ev.data);
        // The server formats the time in UTC, as on the page.
        e.time = new Date(e.timestamp).toISOString().slice(11, 23);
        appendNew(e);
        stampUpdated();
      });
      es.addEventListener("status", function () { refresh(false); });
      es.addEventListener("end", function () {
        es.close();
        refresh(false); // the final details (duration, SHA-256)
      });
      es.addEventListener("error", function () {
        if (es.readyState === EventSource.CLOSED) { // refused: poll instead
          setTimeout(follow, 2000);
          return;
        }
        setState("● reconnecting", false); // EventSource retries with Last-Event-ID
      });
      // Progress and liveness come from heartbeats, which the stream does
      // not carry: read the details now and then while the build runs.
      (function details() {
        setTimeout(function () { if (!finished) { refresh(false); details(); } }, 5000);
      })();
    }
    // refresh reads the build's details (and any lines not shown yet);
    // polling, it keeps following until the build is finished.
    function refresh(polling) {
      fetch("/builds/" + encodeURIComponent(id) + "/logs.json?after=" + lastSeq, { cache: "no-store", credentials: "same-origin" })
        .then(function (r) {
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.json();
        })
        .then(function (d) {
          d.logs.forEach(appendNew);
          var st = document.getElementById("build-status");
          st.textContent = d.status;
          st.className = "status status-" + d.status;
          text("build-worker", d.worker);
          text("build-duration", d.duration);
          text("build-attempts", d.attempts);
          text("build-sha", d.sha256);
          text("build-error", d.error);
          stampUpdated();
          finished = d.finished && !d.more;
          show(d);
          setState(finished ? "● finished" : "● following", true);
          return d;
        })
        .catch(function () { setState("● reconnecting", false); })
        .then(function (d) {
          // A full page means more lines are waiting: fetch them at once.
          if (d && d.more) { refresh(polling); return; }
          if (polling && !finished) setTimeout(follow, 2000);
        });
    }
    function follow() { refresh(true); }
    setState(finished ? "● finished" : "● following", true);
    if (!finished) stream();
  }

  confirmForms();
  relTimes();
  setInterval(function () { relTimes(); }, 15000);
  if (body.getAttribute("data-page") === "dashboard") dashboard();
  if (body.getAttribute("data-page") === "build") buildPage();
})();
