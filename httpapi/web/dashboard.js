// Live updates for the dashboard. Without this script the pages still work:
// they are rendered on the server and refresh themselves through <noscript>.
(function () {
  "use strict";
  var body = document.body;
  var stateEl = document.getElementById("live-state");
  var updatedEl = document.getElementById("updated");

  function setState(text, ok) {
    if (!stateEl) return;
    stateEl.textContent = text;
    stateEl.className = "live-state " + (ok ? "live-ok" : "live-error");
  }

  function stamp() {
    if (updatedEl) updatedEl.textContent = new Date().toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }

  function dashboard() {
    var live = document.getElementById("live");
    function refresh() {
      fetch("/dashboard/fragment", { cache: "no-store" })
        .then(function (r) {
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.text();
        })
        .then(function (html) {
          live.innerHTML = html; // server-rendered and escaped by html/template
          stamp();
          setState("● live", true);
        })
        .catch(function () { setState("● reconnecting", false); })
        .then(function () { setTimeout(refresh, 3000); });
    }
    setState("● live", true);
    setTimeout(refresh, 3000);
  }

  function buildPage() {
    var id = body.getAttribute("data-build");
    var lastSeq = parseInt(body.getAttribute("data-last-seq"), 10) || 0;
    var finished = body.getAttribute("data-finished") === "true";
    var list = document.getElementById("logs");
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
        stamp();
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
    }
    // refresh reads the build's details (and any lines not shown yet);
    // polling, it keeps following until the build is finished.
    function refresh(polling) {
      fetch("/builds/" + encodeURIComponent(id) + "/logs.json?after=" + lastSeq, { cache: "no-store" })
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
          stamp();
          finished = d.finished && !d.more;
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

  if (body.getAttribute("data-page") === "dashboard") dashboard();
  if (body.getAttribute("data-page") === "build") buildPage();
})();
