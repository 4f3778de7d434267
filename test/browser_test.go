package test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/expo-free-agent/controller/internal/testkit"
)

// browserWait bounds one browser step. The pages refresh every 2 s (build
// page) and 3 s (dashboard), so a healthy step takes at most a few seconds;
// the margin is for a CI runner busy with the rest of the package under -race.
const browserWait = 15 * time.Second

// xssWorkerName and the xss log lines would set window.__xss if the pages
// ever parsed them as HTML.
const (
	xssWorkerName = `<img src=x onerror=window.__xss=1>`
	xssLogBefore  = `<script>window.__xss=2</script><img src=x onerror=window.__xss=3>`
	xssLogAfter   = `<img src=y onerror=window.__xss=4><b>bold?</b>`
)

// TestDashboardInBrowser drives headless Chromium against the real
// controller (§3.3): the dashboard and the build page follow a build live,
// without a reload, from submit to completed; they show HTML from a worker
// name or a log line as text and never run it; and with JavaScript off the
// server-rendered pages still carry the same information.
func TestDashboardInBrowser(t *testing.T) {
	t.Parallel()
	execPath := browserExecPath(t)
	c := Start(t)
	dash := startBrowser(t, execPath)

	// The empty dashboard.
	browserDo(t, dash, "open the dashboard", chromedp.Navigate(c.URL+"/"))
	require.Equal(t, "Expo Free Agent — build controller", browserRun(t, dash, "title", chromedp.Title()))
	require.Equal(t, "No builds yet.", browserRun(t, dash, "empty builds text", chromedp.Text(chromedp.ID("builds-empty"))))
	require.Equal(t, "The queue is empty.", browserRun(t, dash, "empty queue text", chromedp.Text(chromedp.ID("queue-empty"))))
	// A reload would drop this marker: every later change must come from the
	// page's own refresh of #live.
	browserDo(t, dash, "set the no-reload marker", chromedp.Evaluate[chromedp.Void](`window.__noReload = "first load"`))

	// A submitted build appears without a reload, pending and queued.
	b := c.Submit("ios", []byte("PK\x03\x04 browser source"), nil)
	row := fmt.Sprintf(`#builds tr[data-build=%q]`, b.ID)
	browserDo(t, dash, "the build's row appears", chromedp.WaitVisible(chromedp.CSS(row)))
	browserPoll(t, dash, "the row says pending and the queue lists the build", fmt.Sprintf(`(() => {
		const r = document.querySelector(%[1]s);
		return r && r.dataset.status === "pending" && r.cells[2].textContent === "pending" &&
			document.querySelector(%[2]s) !== null;
	})()`, jsString(row), jsString(fmt.Sprintf(`#queue tr[data-build=%q]`, b.ID))))

	// Times read "just now" / "… ago", with the full local time on hover.
	browserPoll(t, dash, "the submitted time is relative", fmt.Sprintf(`(() => {
		const el = document.querySelector(%s + " time.ago");
		return el !== null && /^(just now|\d+ s ago|\d+ min ago)$/.test(el.textContent) &&
			el.title !== "" && !el.title.endsWith("UTC") && el.title === new Date(+el.dataset.ts).toLocaleString();
	})()`, jsString(row)))

	// A worker whose name is HTML takes the build: assigned, named as text.
	w := c.Register(xssWorkerName, "ios")
	job := c.Poll(w)
	require.NotNil(t, job, "the worker gets the build")
	browserPoll(t, dash, "the row says assigned, with the worker's name as text", fmt.Sprintf(`(() => {
		const r = document.querySelector(%[1]s);
		return r && r.dataset.status === "assigned" && r.cells[2].textContent === "assigned" &&
			r.cells[3].textContent === %[2]s && document.getElementById("queue-empty") !== null;
	})()`, jsString(row), jsString(xssWorkerName)))
	browserPoll(t, dash, "the workers table names the worker as text", fmt.Sprintf(
		`Array.from(document.querySelectorAll("#workers tbody tr")).some(r => r.cells[0].textContent === %s)`,
		jsString(xssWorkerName)))

	// The worker logs (its first log makes the build "building").
	postLog := func(level, msg string) {
		t.Helper()
		r := c.PostJSON("/api/builds/"+b.ID+"/logs", map[string]string{"level": level, "message": msg}, c.KeyH("X-Worker-Id", w))
		require.Equal(t, http.StatusOK, r.Status, "post log: %s", r.Body)
	}
	postLog("info", "[VM] compiling")
	postLog("warn", xssLogBefore)

	// The build page, in a second tab, needs sign-in: the form, which posts
	// the admin key (never in a URL) and goes on to the page asked for.
	bp := newTab(t, dash)
	browserDo(t, bp, "open the build page", chromedp.Navigate(c.URL+"/builds/"+b.ID))
	require.Equal(t, "Sign in — Expo Free Agent", browserRun(t, bp, "sign-in title", chromedp.Title()))
	browserDo(t, bp, "sign in with a wrong key", chromedp.SendKeys("#key", "not-the-key"), chromedp.Click("#signin-submit"))
	browserWaitFor(t, bp, "the wrong key is refused",
		`document.getElementById("signin-error").textContent === "Wrong key"`)
	browserDo(t, bp, "sign in", chromedp.SendKeys("#key", c.Key), chromedp.Click("#signin-submit"))
	browserWaitFor(t, bp, "the build page after sign-in", `document.body.dataset.page === "build"`)
	require.Equal(t, c.URL+"/builds/"+b.ID, browserRun(t, bp, "the address after sign-in", chromedp.Location()))
	require.False(t, browserRun(t, bp, "the session cookie is HttpOnly",
		chromedp.Evaluate[bool](`document.cookie.includes("efa_session")`)))
	// The build page shows the lines logged so far.
	require.Equal(t, "Build "+b.ID[:8]+" — Expo Free Agent", browserRun(t, bp, "build page title", chromedp.Title()))
	require.Equal(t, "building", browserRun(t, bp, "build status", chromedp.Text(chromedp.ID("build-status"))))
	require.Equal(t, xssWorkerName, browserRun(t, bp, "build worker", chromedp.Evaluate[string](`document.getElementById("build-worker").textContent`)))
	require.Equal(t, []string{"Build submitted", "Assigned to worker " + xssWorkerName, "[VM] compiling", xssLogBefore},
		browserRun(t, bp, "server-rendered log lines", chromedp.Evaluate[[]string](logMessagesJS)))
	browserDo(t, bp, "set the no-reload marker", chromedp.Evaluate[chromedp.Void](`window.__noReload = "first load"`))
	// It follows through the live log (§2.9), not by polling.
	eventually(t, 20*time.Second, func() bool {
		return strings.Contains(string(c.Get("/metrics", c.KeyH()).Body), "controller_log_streams_open 1")
	}, "the build page opens a live log stream")

	// New lines appear without a reload, as text.
	postLog("info", "[VM] linking")
	postLog("error", xssLogAfter)
	browserPoll(t, bp, "the new log lines appear", fmt.Sprintf(`(() => {
		const m = %s;
		return m.length === 6 && m[4] === "[VM] linking" && m[5] === %s;
	})()`, logMessagesJS, jsString(xssLogAfter)))
	require.Equal(t, "error", browserRun(t, bp, "level of the last line",
		chromedp.Evaluate[string](`document.querySelector("#logs li:last-child .level").textContent`)))
	require.Regexp(t, `^\d\d:\d\d:\d\d\.\d{3}$`, browserRun(t, bp, "time of the last line",
		chromedp.Evaluate[string](`document.querySelector("#logs li:last-child time").textContent`)))

	// The dashboard follows: building.
	browserPoll(t, dash, "the row says building", fmt.Sprintf(
		`(() => { const r = document.querySelector(%s); return r && r.dataset.status === "building"; })()`, jsString(row)))

	// Stage and progress from the VM's heartbeats show on both pages.
	r := c.PostJSON("/api/builds/"+b.ID+"/telemetry", map[string]any{"type": "heartbeat",
		"data": map[string]any{"stage": "archiving"}}, c.KeyH("X-Worker-Id", w, "X-Build-Id", b.ID))
	require.Equal(t, http.StatusOK, r.Status, "telemetry: %s", r.Body)
	r = c.PostJSON("/api/builds/"+b.ID+"/heartbeat?worker_id="+w, map[string]any{"progress": 65}, c.KeyH())
	require.Equal(t, http.StatusOK, r.Status, "heartbeat: %s", r.Body)
	browserPoll(t, bp, "the build page shows stage and progress", `document.getElementById("build-stage").textContent === "archiving" &&
		document.getElementById("build-progress-text").textContent === "65%"`)
	browserPoll(t, dash, "the running table shows stage and progress", fmt.Sprintf(`(() => {
		const r = document.querySelector(%s);
		return r !== null && r.querySelector(".stage").textContent === "archiving" && r.textContent.includes("65%%");
	})()`, jsString(fmt.Sprintf(`#running tr[data-build=%q]`, b.ID))))

	// The worker uploads its result: the build page and the dashboard say
	// completed, still without a reload.
	result := []byte("browser test result")
	sum := sha256.Sum256(result)
	up := c.Upload(b.ID, w, true, result, "")
	require.Equal(t, http.StatusOK, up.Status, "upload: %s", up.Body)
	browserPoll(t, bp, "the build page says completed and stops following", fmt.Sprintf(`(() => {
		const st = document.getElementById("build-status");
		return st.textContent === "completed" && st.className === "status status-completed" &&
			document.getElementById("build-sha").textContent === %s &&
			document.getElementById("live-state").textContent === "● finished";
	})()`, jsString(hex.EncodeToString(sum[:]))))
	msgs := browserRun(t, bp, "log lines after completion", chromedp.Evaluate[[]string](logMessagesJS))
	require.Equal(t, "Build completed successfully", msgs[len(msgs)-1])
	eventually(t, 20*time.Second, func() bool {
		return strings.Contains(string(c.Get("/metrics", c.KeyH()).Body), "controller_log_streams_open 0")
	}, "the finished build's stream ended and the page did not reopen it")
	browserPoll(t, dash, "the row says completed", fmt.Sprintf(`(() => {
		const r = document.querySelector(%s);
		return r && r.dataset.status === "completed" && r.cells[2].textContent === "completed" &&
			document.getElementById("count-completed").textContent === "1";
	})()`, jsString(row)))

	// The completed build's result downloads through the signed-in link.
	dlDir := t.TempDir()
	_, err := chromedp.CallBrowser(bp, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: dlDir})
	require.NoError(t, err, "allow downloads")
	browserDo(t, bp, "download the result", chromedp.WaitVisible(chromedp.ID("download-result")),
		chromedp.Click(chromedp.ID("download-result")))
	eventually(t, browserWait, func() bool {
		got, err := os.ReadFile(filepath.Join(dlDir, b.ID+".ipa"))
		return err == nil && string(got) == string(result)
	}, "the result is downloaded as <id>.ipa")

	// The log tools: a level filter, a search, the first error.
	shownJS := `Array.from(document.querySelectorAll("#logs li:not(.filtered) .msg")).map(m => m.textContent)`
	browserDo(t, bp, "show only errors", chromedp.Evaluate[chromedp.Void](
		`(() => { const s = document.getElementById("log-level"); s.value = "error"; s.dispatchEvent(new Event("change")); })()`))
	require.Equal(t, []string{xssLogAfter}, browserRun(t, bp, "only the error line", chromedp.Evaluate[[]string](shownJS)))
	browserDo(t, bp, "search the log", chromedp.Evaluate[chromedp.Void](
		`(() => { const s = document.getElementById("log-level"); s.value = ""; s.dispatchEvent(new Event("change")); })()`),
		chromedp.SendKeys("#log-search", "LINKING"))
	require.Equal(t, []string{"[VM] linking"}, browserRun(t, bp, "the lines that match", chromedp.Evaluate[[]string](shownJS)))
	browserDo(t, bp, "jump to the first error", chromedp.Click(chromedp.ID("log-first-error")))
	require.Equal(t, xssLogAfter, browserRun(t, bp, "the focused line",
		chromedp.Evaluate[string](`document.querySelector("#logs li.focus .msg").textContent`)))
	require.Equal(t, len(msgs), browserRun(t, bp, "every line shown again",
		chromedp.Evaluate[int](`document.querySelectorAll("#logs li:not(.filtered)").length`)))

	// Neither page reloaded, and no HTML from the worker ran or became an
	// element.
	for name, tab := range map[string]context.Context{"dashboard": dash, "build page": bp} {
		require.Equal(t, "first load", browserRun(t, tab, name+": no-reload marker",
			chromedp.Evaluate[string](`String(window.__noReload)`)), "%s reloaded", name)
		require.Equal(t, "undefined", browserRun(t, tab, name+": window.__xss",
			chromedp.Evaluate[string](`typeof window.__xss`)), "%s ran HTML from a worker", name)
		require.Equal(t, 0, browserRun(t, tab, name+": injected elements",
			chromedp.Evaluate[int](`document.querySelectorAll("main img, main script, main b").length`)), name)
	}

	// A stuck queue: an android build that no online worker takes is a
	// banner on the dashboard.
	stuck := c.Submit("android", []byte("PK\x03\x04 android source"), nil)
	browserPoll(t, dash, "the stuck-queue banner", `(() => {
		const b = document.querySelector('#trouble [data-kind="stuck"]');
		return b !== null && b.textContent === "1 android build waiting; no online worker takes android";
	})()`)

	// Cancel it from its page (the form asks first).
	browserDo(t, bp, "open the stuck build", chromedp.Navigate(c.URL+"/builds/"+stuck.ID))
	browserDo(t, bp, "confirm dialogs", chromedp.Evaluate[chromedp.Void](`window.confirm = () => true`))
	browserDo(t, bp, "cancel the build", chromedp.Click(chromedp.ID("cancel-build")))
	browserWaitFor(t, bp, "the build page says cancelled", `document.getElementById("build-status").textContent === "cancelled" &&
		!document.getElementById("retry-build").closest("form").hidden`)
	require.Equal(t, "failed", c.Get("/api/builds/"+stuck.ID+"/status", c.KeyH()).Object(t)["status"])
	browserPoll(t, dash, "the banner is gone", `document.getElementById("trouble") === null`)

	// Retry it: on to the new build's page, pending.
	browserDo(t, bp, "retry the build", chromedp.Click(chromedp.ID("retry-build")))
	browserWaitFor(t, bp, "the new build's page", fmt.Sprintf(`location.pathname !== %s &&
		document.getElementById("build-status").textContent === "pending"`, jsString("/builds/"+stuck.ID)))
	retried := strings.TrimPrefix(browserRun(t, bp, "the new build's address", chromedp.Location()), c.URL+"/builds/")
	r = c.Get("/api/builds/"+retried+"/status", c.KeyH())
	require.Equal(t, http.StatusOK, r.Status, "the retry exists: %s", r.Body)
	require.Equal(t, "pending", r.Object(t)["status"])

	// A phone, 420 px wide: nothing is cut off — the page never scrolls
	// sideways, the cards stack, wide tables scroll inside their box.
	phone := newTab(t, dash)
	browserDo(t, phone, "a phone's screen", chromedp.EmulateViewport(420, 900, chromedp.EmulateMobile))
	for _, page := range []string{"/", "/builds/" + b.ID, "/builds"} {
		browserDo(t, phone, "open "+page+" on the phone", chromedp.Navigate(c.URL+page))
		require.LessOrEqual(t, browserRun(t, phone, page+": the page's width",
			chromedp.Evaluate[int](`document.documentElement.scrollWidth`)), 420, "%s is wider than the phone", page)
		require.Equal(t, 0, browserRun(t, phone, page+": boxes past the right edge", chromedp.Evaluate[int](
			`Array.from(document.querySelectorAll(".card, .scroll, .trouble, .actions, .logs, .filters, nav")).filter(e => e.getBoundingClientRect().right > 420.5).length`)), page)
	}
	browserDo(t, phone, "the overview on the phone", chromedp.Navigate(c.URL+"/"))
	require.Greater(t, browserRun(t, phone, "the cards stack in rows", chromedp.Evaluate[int](
		`new Set(Array.from(document.querySelectorAll("#summary .card")).map(e => Math.round(e.getBoundingClientRect().top))).size`)), 1)
	require.True(t, browserRun(t, phone, "the builds table scrolls inside its box", chromedp.Evaluate[bool](
		`(() => { const box = document.getElementById("builds").parentElement; return box.scrollWidth > box.clientWidth && box.clientWidth <= 420; })()`)))
	shot := browserRun(t, phone, "a screenshot of the phone layout", chromedp.FullScreenshot(100))
	t.Logf("phone layout screenshot: %s", saveArtifact(t, "dashboard-phone-420.png", shot))

	// Without JavaScript both pages are server-rendered and readable.
	noJS := newTab(t, dash)
	_, err = chromedp.Call(noJS, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
	require.NoError(t, err, "disable JavaScript")
	browserDo(t, noJS, "open the dashboard without JavaScript", chromedp.Navigate(c.URL+"/"))
	require.Equal(t, "Expo Free Agent — build controller", browserRun(t, noJS, "title without JavaScript", chromedp.Title()))
	require.Equal(t, []string{b.ID[:8], "ios", "completed", xssWorkerName}, browserRun(t, noJS, "the row without JavaScript",
		chromedp.Evaluate[[]string](fmt.Sprintf(
			`Array.from(document.querySelector(%s).cells).slice(0, 4).map(c => c.textContent)`, jsString(row)))))
	require.Equal(t, map[string]string{"liveState": "", "refresh": "10"}, browserRun(t, noJS, "signs that no script ran",
		chromedp.Evaluate[map[string]string](`({
			liveState: document.getElementById("live-state").textContent,
			refresh: (document.querySelector('meta[http-equiv="refresh"]') || {}).content || "none",
		})`)), "the script did not run and the <noscript> refresh is in force")
	browserDo(t, noJS, "open the build page without JavaScript", chromedp.Navigate(c.URL+"/builds/"+b.ID))
	require.Equal(t, "completed", browserRun(t, noJS, "build status without JavaScript", chromedp.Text(chromedp.ID("build-status"))))
	require.Equal(t, msgs, browserRun(t, noJS, "log lines without JavaScript", chromedp.Evaluate[[]string](logMessagesJS)))
	require.Equal(t, 0, browserRun(t, noJS, "injected elements without JavaScript",
		chromedp.Evaluate[int](`document.querySelectorAll("main img, main script, main b").length`)))
}

// browserWaitFor waits until the JavaScript expression is true in the tab,
// across navigations (a form's answer): each try is its own evaluation, and
// one that fails while a page loads is tried again.
func browserWaitFor(t *testing.T, tab context.Context, what, expr string) {
	t.Helper()
	deadline := time.NewTimer(browserWait)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(tab, 2*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		cancel()
		if err == nil && ok {
			return
		}
		select {
		case <-deadline.C:
			t.Fatalf("waiting: %s (last error: %v)%s", what, err, pageText(tab))
		case <-tick.C:
		}
	}
}

// saveArtifact writes a file that CI keeps (a screenshot) and returns its
// path: under $TEST_ARTIFACTS_DIR if set, else under the system's temporary
// directory (controller-test-artifacts/<test>), which outlives the test.
func saveArtifact(t *testing.T, name string, data []byte) string {
	t.Helper()
	dir := os.Getenv("TEST_ARTIFACTS_DIR")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "controller-test-artifacts")
	}
	dir = filepath.Join(dir, t.Name())
	require.NoError(t, os.MkdirAll(dir, 0o755))
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, data, 0o644))
	return path
}

// logMessagesJS lists the messages of the build page's log, as text.
const logMessagesJS = `Array.from(document.querySelectorAll("#logs li .msg")).map(m => m.textContent)`

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// browserExecPath finds Chromium. Without one the test fails in CI (CI set,
// or REQUIRE_BROWSER=1), so that the browser test can never silently vanish
// there, and is skipped on a developer machine.
func browserExecPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const install = "install Chromium (Debian/Ubuntu: apt-get install -y chromium) so that chromium, chromium-browser or google-chrome is on PATH"
	if os.Getenv("CI") != "" || os.Getenv("REQUIRE_BROWSER") == "1" {
		t.Fatalf("no browser found and CI or REQUIRE_BROWSER=1 is set, so the browser test may not be skipped: %s", install)
	}
	t.Skipf("no browser found: %s (with CI or REQUIRE_BROWSER=1 set this test fails instead of skipping)", install)
	return ""
}

// startBrowser starts headless Chromium and returns the context of its first
// tab. Cleanup closes the browser, waits for the process to exit and for
// every chromedp goroutine to end.
func startBrowser(t *testing.T, execPath string) context.Context {
	t.Helper()
	out := &testkit.LockedBuffer{}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(execPath),
		chromedp.Headless,
		chromedp.NoSandbox, // CI runs as root
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		// The network here is closed: without these Chromium hangs on
		// connections to Google services.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// A tab in the background must keep its timers: the pages refresh
		// with setTimeout.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.CombinedOutput(out),
	)
	allocCtx, allocCancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	var once sync.Once
	shutdown := func() {
		once.Do(func() {
			// Close the browser gracefully, then cancel the tab and the
			// allocator: allocCancel waits for the process and for the
			// goroutines that read its output.
			cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
			if err := chromedp.Cancel(cctx); err != nil {
				t.Logf("closing the browser: %v", err)
			}
			ccancel()
			cancel()
			allocCancel()
			if t.Failed() {
				t.Logf("browser output:\n%s", out.String())
			}
		})
	}
	t.Cleanup(shutdown)

	startTab(t, ctx, shutdown, "start "+execPath)
	return ctx
}

// newTab opens another tab in the browser of parent; cleanup closes it.
func newTab(t *testing.T, parent context.Context) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(parent)
	t.Cleanup(cancel)
	startTab(t, ctx, cancel, "open a tab")
	return ctx
}

// startTab makes the first Run on a new chromedp context, which starts the
// browser or opens the tab. The tab handles its events only as long as the
// context of that first Run lives, so the Run gets the tab's own context,
// with no deadline, and is bounded from outside: stop ends it.
func startTab(t *testing.T, tab context.Context, stop func(), what string) {
	t.Helper()
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(tab) }()
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	select {
	case err := <-started:
		require.NoError(t, err, what)
	case <-timer.C:
		t.Errorf("%s: no answer within 30s", what)
		stop()
		<-started
		t.FailNow()
	}
}

// browserRun runs one action in the tab under a deadline.
func browserRun[T any](t *testing.T, tab context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, browserWait)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		require.NoError(t, err, "%s%s", what, pageText(tab))
	}
	return v
}

// browserDo runs actions without values in the tab under a deadline.
func browserDo(t *testing.T, tab context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	browserRun(t, tab, what, chromedp.Steps(steps...))
}

// browserPoll waits until the JavaScript expression is true in the tab. The
// poll runs in the page and does not survive a navigation, so a reload while
// waiting fails it too.
func browserPoll(t *testing.T, tab context.Context, what, expr string) {
	t.Helper()
	browserRun(t, tab, "waiting: "+what, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(browserWait-time.Second)))
}

// pageText is the visible text of the tab, for failure messages.
func pageText(tab context.Context) string {
	ctx, cancel := context.WithTimeout(tab, 2*time.Second)
	defer cancel()
	text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.location.href + "\n" + document.body.innerText`))
	if err != nil {
		return ""
	}
	return "\npage: " + text
}
