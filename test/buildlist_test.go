package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The build list's filters and pages (docs/API.md §2.2).

// v1Item is a build as the list shows it, its fields in the answer's order.
type v1Item struct {
	ID          string  `json:"id"`
	Status      string  `json:"status"`
	CreatedAt   string  `json:"createdAt"`
	CompletedAt *string `json:"completedAt,omitempty"`
}

// v1Answer is the list exactly as the controller wrote it before pages
// existed — c.JSON of the whole array, read from the store in one go — so
// that the answer without parameters can be compared byte for byte.
func v1Answer(t *testing.T, c *Controller, indent string) []byte {
	t.Helper()
	builds, err := c.App.Store.ListBuilds(t.Context())
	require.NoError(t, err)
	items := make([]v1Item, len(builds))
	for i, b := range builds {
		items[i] = v1Item{ID: b.ID, Status: string(b.Status),
			CreatedAt: time.UnixMilli(b.SubmittedAt).UTC().Format("2006-01-02T15:04:05.000Z")}
		if b.Finished() && b.CompletedAt != nil {
			s := time.UnixMilli(*b.CompletedAt).UTC().Format("2006-01-02T15:04:05.000Z")
			items[i].CompletedAt = &s
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", indent)
	require.NoError(t, enc.Encode(items))
	return buf.Bytes()
}

// listOf decodes a list answer.
func listOf(t *testing.T, r Response) []v1Item {
	t.Helper()
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	var items []v1Item
	require.NoError(t, json.Unmarshal(r.Body, &items), "%s", r.Body)
	require.NotNil(t, items, "an array, never null: %s", r.Body)
	return items
}

func itemIDs(items []v1Item) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.ID
	}
	return out
}

var nextLink = regexp.MustCompile(`^<(/api/builds\?[^<>]*)>; rel="next"$`)

// next is the target of a page's Link header, or "" when there is none.
func next(t *testing.T, r Response) string {
	t.Helper()
	links := r.Header.Values("Link")
	if len(links) == 0 {
		return ""
	}
	require.Len(t, links, 1)
	m := nextLink.FindStringSubmatch(links[0])
	require.NotNil(t, m, "Link: %s", links[0])
	return m[1]
}

// submitBody is a submit's multipart body, for goroutines that must not
// call the harness's require-based helpers.
func submitBody(t *testing.T, platform string) ([]byte, string) {
	body, ct := Multipart(t,
		Part{Name: "source", Filename: "source.zip", ContentType: "application/zip", Data: []byte("src")},
		Part{Name: "platform", Data: []byte(platform)})
	return body.Bytes(), ct
}

// submitQuietly submits a build and returns its id or an error; it never
// fails the test itself, so it may run on any goroutine.
func submitQuietly(c *Controller, body []byte, ct string) (string, error) {
	req, err := http.NewRequest(http.MethodPost, c.URL+"/api/builds/submit", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("X-API-Key", c.Key)
	req.Header.Set("Content-Type", ct)
	resp, err := c.Client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK || out.ID == "" {
		return "", fmt.Errorf("submit: %d %v", resp.StatusCode, err)
	}
	return out.ID, nil
}

// submitMany submits n builds, several at a time, and returns their ids.
func submitMany(t *testing.T, c *Controller, n int, platform string) []string {
	t.Helper()
	body, ct := submitBody(t, platform)
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	work := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range work {
				ids[i], errs[i] = submitQuietly(c, body, ct)
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	return ids
}

func TestBuildListNoParametersIsTheV1Answer(t *testing.T) {
	t.Parallel()
	c := Start(t)

	r := c.Get("/api/builds", c.KeyH())
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, "[]\n", string(r.Body))
	require.Equal(t, v1Answer(t, c, ""), r.Body)

	// More than one page of the store's reads (500), in every state.
	w := c.Register("w")
	done := c.Submit("ios", []byte("a"), nil)
	require.Equal(t, done.ID, c.Poll(w)["id"])
	require.Equal(t, http.StatusOK, c.Upload(done.ID, w, true, []byte("IPA"), "").Status)
	bad := c.Submit("android", []byte("b"), nil)
	require.Equal(t, bad.ID, c.Poll(w)["id"])
	require.Equal(t, http.StatusOK, c.Upload(bad.ID, w, false, nil, "boom").Status)
	cancelled := c.Submit("ios", []byte("c"), nil)
	require.Equal(t, http.StatusOK, c.PostJSON("/api/builds/"+cancelled.ID+"/cancel", nil, c.KeyH()).Status)
	running := c.Submit("ios", []byte("d"), nil)
	require.Equal(t, running.ID, c.Poll(w)["id"])
	submitMany(t, c, 1100, "android")

	for _, tc := range []struct {
		name, query, indent string
	}{
		{"Compact", "", ""},
		{"Pretty", "?pretty", "  "}, // as Echo's c.JSON answers ?pretty
		{"OtherParametersIgnored", "?page=2&_=123", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := c.Get("/api/builds"+tc.query, c.KeyH())
			require.Equal(t, http.StatusOK, r.Status)
			want := v1Answer(t, c, tc.indent)
			require.Equal(t, string(want), string(r.Body), "byte for byte the v1 answer")
			require.Equal(t, "application/json", r.Header.Get("Content-Type"))
			require.Empty(t, r.Header.Values("Link"), "the whole list has no next page")
			require.Len(t, listOf(t, r), 1104)
		})
	}
}

// listBuildsFixture makes a build in every state, on both platforms and
// three workers. The returned ids are newest first.
func listBuildsFixture(t *testing.T, c *Controller) (map[string]string, []string) {
	t.Helper()
	w1, w2, w3 := c.Register("w1"), c.Register("w2"), c.Register("w3")
	ids := map[string]string{"w1": w1, "w2": w2, "w3": w3}
	take := func(platform, worker string) string {
		id := c.Submit(platform, []byte("src"), nil).ID
		require.Equal(t, id, c.Poll(worker)["id"], "the queue is empty but for it")
		return id
	}
	// Oldest first; each build is handed out before the next is submitted.
	ids["completed"] = take("ios", w3)
	require.Equal(t, http.StatusOK, c.Upload(ids["completed"], w3, true, []byte("IPA"), "").Status)
	ids["failed"] = take("android", w3)
	require.Equal(t, http.StatusOK, c.Upload(ids["failed"], w3, false, nil, "boom").Status)
	ids["assigned"] = take("android", w1)
	ids["building"] = take("ios", w2)
	require.Equal(t, http.StatusOK,
		c.PostJSON("/api/builds/"+ids["building"]+"/heartbeat?worker_id="+w2, nil, c.KeyH()).Status)
	ids["cancelled"] = c.Submit("ios", []byte("src"), nil).ID
	require.Equal(t, http.StatusOK, c.PostJSON("/api/builds/"+ids["cancelled"]+"/cancel", nil, c.KeyH()).Status)
	ids["pending"] = c.Submit("ios", []byte("src"), nil).ID
	ids["pending2"] = c.Submit("android", []byte("src"), nil).ID
	for name, want := range map[string]string{"completed": "completed", "failed": "failed", "assigned": "assigned",
		"building": "building", "cancelled": "failed", "pending": "pending", "pending2": "pending"} {
		require.Equal(t, want, c.Status(ids[name])["status"], name)
	}
	all := itemIDs(listOf(t, c.Get("/api/builds", c.KeyH())))
	require.Len(t, all, 7)
	return ids, all
}

func TestBuildListFilters(t *testing.T) {
	t.Parallel()
	c := Start(t)
	ids, all := listBuildsFixture(t, c)
	v1 := map[string]v1Item{}
	for _, it := range listOf(t, c.Get("/api/builds", c.KeyH())) {
		v1[it.ID] = it
	}
	// in keeps the list order (newest first) of the named builds.
	in := func(names ...string) []string {
		want := map[string]bool{}
		for _, n := range names {
			want[ids[n]] = true
		}
		out := []string{}
		for _, id := range all {
			if want[id] {
				out = append(out, id)
			}
		}
		return out
	}
	// after is every build older than id in the list order.
	after := func(id string) []string { return all[slices.Index(all, id)+1:] }
	for _, tc := range []struct {
		name, query string
		want        []string
	}{
		{"Pending", "status=pending", in("pending", "pending2")},
		{"Assigned", "status=assigned", in("assigned")},
		{"Building", "status=building", in("building")},
		{"Completed", "status=completed", in("completed")},
		{"FailedHoldsTheCancelled", "status=failed", in("failed", "cancelled")},
		{"IOS", "platform=ios", in("completed", "building", "cancelled", "pending")},
		{"Android", "platform=android", in("failed", "assigned", "pending2")},
		{"CurrentAssignee", "worker_id=" + ids["w1"], in("assigned")},
		{"FinishingWorker", "worker_id=" + ids["w3"], in("completed", "failed")},
		{"WorkerIDInUpperCase", "worker_id=" + strings.ToUpper(ids["w2"]), in("building")},
		{"UnknownWorker", "worker_id=00000000-0000-4000-8000-000000000000", []string{}},
		{"NotAWorkerID", "worker_id=mac-1", []string{}},
		{"WorkerAndStatus", "worker_id=" + ids["w3"] + "&status=failed", in("failed")},
		{"StatusAndPlatform", "status=pending&platform=android", in("pending2")},
		{"AllThree", "status=building&platform=ios&worker_id=" + ids["w2"], in("building")},
		{"NoMatch", "status=building&platform=android", []string{}},
		{"LimitAlone", "limit=500", all},
		{"BeforeAlone", "before=" + ids["cancelled"], after(ids["cancelled"])},
		{"BeforeInUpperCase", "before=" + strings.ToUpper(ids["pending"]), after(ids["pending"])},
		{"BeforeTheOldest", "before=" + all[len(all)-1], []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := c.Get("/api/builds?"+tc.query, c.KeyH())
			items := listOf(t, r)
			require.Equal(t, tc.want, itemIDs(items))
			for _, it := range items {
				require.Equal(t, v1[it.ID], it, "the same objects as the whole list")
			}
			require.Empty(t, r.Header.Values("Link"), "one page holds them all")
			require.Equal(t, "application/json", r.Header.Get("Content-Type"))
		})
	}
}

func TestBuildListBadParameters(t *testing.T) {
	t.Parallel()
	c := Start(t)
	ids, _ := listBuildsFixture(t, c)
	before := c.Get("/api/builds", c.KeyH()).Body
	for _, tc := range []struct {
		name, query, msg string
	}{
		{"StatusCancelled", "status=cancelled", "Invalid filter"},
		{"StatusUnknown", "status=done", "Invalid filter"},
		{"StatusUpperCase", "status=PENDING", "Invalid filter"},
		{"StatusEmpty", "status=", "Invalid filter"},
		{"StatusNoValue", "status", "Invalid filter"},
		{"StatusTwice", "status=pending&status=failed", "Invalid filter"},
		{"PlatformUnknown", "platform=windows", "Invalid filter"},
		{"PlatformEmpty", "platform=", "Invalid filter"},
		{"PlatformTwice", "platform=ios&platform=ios", "Invalid filter"},
		{"WorkerEmpty", "worker_id=", "Invalid filter"},
		{"WorkerTwice", "worker_id=" + ids["w1"] + "&worker_id=" + ids["w2"], "Invalid filter"},
		{"BadFilterWithGoodLimit", "limit=10&status=nope", "Invalid filter"},
		{"LimitZero", "limit=0", "Invalid limit"},
		{"LimitTooLarge", "limit=501", "Invalid limit"},
		{"LimitNegative", "limit=-1", "Invalid limit"},
		{"LimitNotANumber", "limit=ten", "Invalid limit"},
		{"LimitFraction", "limit=1.5", "Invalid limit"},
		{"LimitEmpty", "limit=", "Invalid limit"},
		{"LimitTwice", "limit=1&limit=2", "Invalid limit"},
		{"LimitHuge", "limit=99999999999999999999", "Invalid limit"},
		{"BeforeNotAUUID", "before=abc", "Invalid before"},
		{"BeforeEmpty", "before=", "Invalid before"},
		{"BeforeUnknown", "before=00000000-0000-4000-8000-000000000000", "Invalid before"},
		{"BeforeAWorker", "before=" + ids["w1"], "Invalid before"},
		{"BeforeTwice", "before=" + ids["pending"] + "&before=" + ids["failed"], "Invalid before"},
		{"BeforeInjection", "before=" + url.QueryEscape(ids["pending"]+"' OR 1=1 --"), "Invalid before"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := c.Get("/api/builds?"+tc.query, c.KeyH())
			require.Equal(t, http.StatusBadRequest, r.Status, "%s", r.Body)
			require.Equal(t, tc.msg, r.Error(t))
			require.Empty(t, r.Header.Values("Link"))
		})
	}
	require.Equal(t, string(before), string(c.Get("/api/builds", c.KeyH()).Body), "bad input changes nothing")
	require.Equal(t, "pending", c.Status(ids["pending"])["status"])

	t.Run("KeyFirst", func(t *testing.T) {
		t.Parallel()
		r := c.Get("/api/builds?status=nope", nil)
		require.Equal(t, http.StatusUnauthorized, r.Status)
		require.Equal(t, "Missing X-API-Key header", r.Error(t))
	})
}

func TestBuildListLinkHeader(t *testing.T) {
	t.Parallel()
	c := Start(t)
	_, all := listBuildsFixture(t, c) // 7 builds, 4 on ios

	t.Run("FollowedVerbatim", func(t *testing.T) {
		t.Parallel()
		r := c.Get("/api/builds?limit=3", c.KeyH())
		require.Equal(t, all[:3], itemIDs(listOf(t, r)))
		require.Equal(t, []string{`</api/builds?limit=3&before=` + all[2] + `>; rel="next"`}, r.Header.Values("Link"))
		r = c.Get(next(t, r), c.KeyH())
		require.Equal(t, all[3:6], itemIDs(listOf(t, r)))
		require.Equal(t, "/api/builds?limit=3&before="+all[5], next(t, r))
		r = c.Get(next(t, r), c.KeyH())
		require.Equal(t, all[6:], itemIDs(listOf(t, r)))
		require.Empty(t, r.Header.Values("Link"), "no Link on the last page")
	})

	t.Run("ExactlyFullLastPage", func(t *testing.T) {
		t.Parallel()
		r := c.Get("/api/builds?limit=7", c.KeyH())
		require.Equal(t, all, itemIDs(listOf(t, r)))
		require.Empty(t, r.Header.Values("Link"), "nothing follows a full last page")
		r = c.Get("/api/builds?limit=6", c.KeyH())
		require.Equal(t, "/api/builds?limit=6&before="+all[5], next(t, r))
		r = c.Get(next(t, r), c.KeyH())
		require.Equal(t, all[6:], itemIDs(listOf(t, r)))
		require.Empty(t, r.Header.Values("Link"))
	})

	t.Run("CarriesTheFilters", func(t *testing.T) {
		t.Parallel()
		var iosOnly []string
		for _, id := range all {
			if c.Status(id)["platform"] == "ios" {
				iosOnly = append(iosOnly, id)
			}
		}
		require.Len(t, iosOnly, 4)
		var got []string
		path := "/api/builds?platform=ios&limit=1"
		for pages := 0; path != ""; pages++ {
			require.Less(t, pages, 10)
			r := c.Get(path, c.KeyH())
			items := listOf(t, r)
			require.Len(t, items, 1)
			got = append(got, items[0].ID)
			path = next(t, r)
			if path != "" {
				require.Equal(t, "/api/builds?platform=ios&limit=1&before="+items[0].ID, path)
			}
		}
		require.Equal(t, iosOnly, got)
	})

	t.Run("AllFiltersInAFixedOrder", func(t *testing.T) {
		t.Parallel()
		d := Start(t)
		w := d.Register("w")
		var done []string
		for range 2 {
			id := d.Submit("android", []byte("src"), nil).ID
			require.Equal(t, id, d.Poll(w)["id"])
			require.Equal(t, http.StatusOK, d.Upload(id, w, true, []byte("APK"), "").Status)
			done = append(done, id)
		}
		d.Submit("android", []byte("src"), nil) // pending: no worker
		newest := itemIDs(listOf(t, d.Get("/api/builds?status=completed", d.KeyH())))
		require.ElementsMatch(t, done, newest)

		// Asked in any order, a worker id in upper case: the Link names the
		// filters in a fixed order, the id as it is stored, and the limit.
		r := d.Get("/api/builds?worker_id="+strings.ToUpper(w)+"&limit=1&status=completed&platform=android", d.KeyH())
		require.Equal(t, newest[:1], itemIDs(listOf(t, r)))
		require.Equal(t, "/api/builds?status=completed&platform=android&worker_id="+w+"&limit=1&before="+newest[0], next(t, r))
		r = d.Get(next(t, r), d.KeyH())
		require.Equal(t, newest[1:], itemIDs(listOf(t, r)))
		require.Empty(t, r.Header.Values("Link"))
	})

	t.Run("DefaultLimit", func(t *testing.T) {
		t.Parallel()
		d := Start(t)
		submitMany(t, d, 101, "ios")
		r := d.Get("/api/builds?platform=ios", d.KeyH())
		first := listOf(t, r)
		require.Len(t, first, 100, "100 when paging without a limit")
		link := next(t, r)
		require.Equal(t, "/api/builds?platform=ios&limit=100&before="+first[99].ID, link)
		rest := listOf(t, d.Get(link, d.KeyH()))
		require.Len(t, rest, 1)
		require.Equal(t, itemIDs(listOf(t, d.Get("/api/builds", d.KeyH()))), append(itemIDs(first), rest[0].ID))
	})
}

// TestBuildListPagesWhileSubmitting walks the list a few builds at a time
// while a goroutine submits between every two pages: every build that existed
// at the start is seen exactly once, nothing twice, in list order. With the
// manual clock every build is submitted in the same millisecond, so the order
// rests on the id alone.
func TestBuildListPagesWhileSubmitting(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts []Option
	}{{"RealClock", nil}, {"AllInOneMillisecond", []Option{WithManualClock()}}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := Start(t, tc.opts...)
			submitMany(t, c, 40, "ios")
			existing := map[string]bool{}
			for _, id := range itemIDs(listOf(t, c.Get("/api/builds", c.KeyH()))) {
				existing[id] = true
			}
			require.Len(t, existing, 40)

			body, ct := submitBody(t, "android")
			ctx, stop := context.WithCancel(t.Context())
			submitted := make(chan string)
			failed := make(chan error, 1)
			var wg sync.WaitGroup
			wg.Go(func() {
				for {
					id, err := submitQuietly(c, body, ct)
					if err != nil {
						failed <- err
						return
					}
					select {
					case submitted <- id:
					case <-ctx.Done():
						return
					}
				}
			})
			defer wg.Wait()
			defer stop()

			seen := map[string]int{}
			var walked []v1Item
			newDuring := 0
			path := "/api/builds?limit=3"
			for pages := 0; path != ""; pages++ {
				require.Less(t, pages, 100, "the walk ends")
				r := c.Get(path, c.KeyH())
				items := listOf(t, r)
				require.NotEmpty(t, items)
				walked = append(walked, items...)
				for _, it := range items {
					seen[it.ID]++
				}
				path = next(t, r)
				// A build is submitted before the next page is read.
				select {
				case <-submitted:
					newDuring++
				case err := <-failed:
					t.Fatal(err)
				case <-time.After(30 * time.Second):
					t.Fatal("no build submitted within 30s")
				}
			}
			stop()
			wg.Wait()

			require.GreaterOrEqual(t, newDuring, 13, "builds were submitted during the walk")
			for id, n := range seen {
				require.Equal(t, 1, n, "build %s seen %d times", id, n)
			}
			for id := range existing {
				require.Equal(t, 1, seen[id], "build %s that existed at the start", id)
			}
			for i := 1; i < len(walked); i++ {
				a, b := walked[i-1], walked[i]
				require.True(t, a.CreatedAt > b.CreatedAt || a.CreatedAt == b.CreatedAt && a.ID > b.ID,
					"list order: %v then %v", a, b)
			}
		})
	}
}
