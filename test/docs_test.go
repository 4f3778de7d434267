package test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/stretchr/testify/require"
)

// The docs keep two promises that this file checks against the code:
//
//   - docs/API.md names every registered route, written as "`METHOD /path`"
//     with Echo's :param syntax (e.g. "`GET /api/builds/:id/status`"), and
//     every route it writes in that form exists;
//   - docs/ERRORS.md quotes, between backticks, every error message the
//     httpapi package can send.

// docRoute matches a route written in the docs' format: a backtick, an
// HTTP method, one space, a path without spaces or query, a backtick.
var docRoute = regexp.MustCompile("`(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) (/[^`\\s?]*)`")

func readDoc(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "docs", name))
	require.NoError(t, err, "docs/%s must exist", name)
	return string(b)
}

func TestDocsAPIListsEveryRoute(t *testing.T) {
	t.Parallel()
	c := Start(t)
	e, ok := c.App.HTTP.Handler().(*echo.Echo)
	require.True(t, ok, "the HTTP handler is the Echo instance")
	doc := readDoc(t, "API.md")

	registered := map[string]bool{}
	var missing []string
	for _, r := range e.Routes() {
		route := r.Method + " " + r.Path
		if registered[route] {
			continue
		}
		registered[route] = true
		if !strings.Contains(doc, "`"+route+"`") {
			missing = append(missing, route)
		}
	}
	require.GreaterOrEqual(t, len(registered), 30, "the router lists its routes")
	require.True(t, registered[http.MethodGet+" /api/builds/:id/status"], "routes use Echo's :param syntax")
	sort.Strings(missing)
	require.Empty(t, missing, "docs/API.md must name every route as `METHOD /path`")

	var unknown []string
	for _, m := range docRoute.FindAllStringSubmatch(doc, -1) {
		if route := m[1] + " " + m[2]; !registered[route] {
			unknown = append(unknown, route)
		}
	}
	require.Empty(t, unknown, "docs/API.md names routes the controller does not serve")
}

func TestDocsErrorsListEveryMessage(t *testing.T) {
	t.Parallel()
	msgs := httpapiMessages(t)
	// The scanner must see every way a message reaches a client; if one of
	// these is lost, the scanner (not the docs) is broken.
	for _, m := range []string{
		"Not found",                         // const msgNotFound
		"Build not found",                   // const msgBuildNotFound
		"worker_id required",                // fail(...)
		"Request body too large",            // tooLarge(msgBodyTooLarge)
		"Build submission failed",           // a route's fixed 500 message
		"Result file too large",             // stageFile(..., tooLargeMsg, ...)
		"Failed to read build result",       // sendFile(..., failMessage)
		"Source file not found",             // notFound := "..."
		"Worker not assigned to this build", // assignedBuild(..., notMine)
		"Database unavailable",              // {"error": "..."} of /health's 503
	} {
		require.Contains(t, msgs, m, "the message scanner missed a known message")
	}
	require.GreaterOrEqual(t, len(msgs), 50)

	doc := readDoc(t, "ERRORS.md")
	var missing []string
	for _, m := range msgs {
		if !strings.Contains(doc, "`"+m+"`") {
			missing = append(missing, m)
		}
	}
	require.Empty(t, missing, "docs/ERRORS.md must quote every error message between backticks")
}

// msgFuncs are the httpapi functions whose string arguments (those with a
// space, so not paths or content types) are messages sent to clients.
var msgFuncs = map[string]bool{
	"fail": true, "tooLarge": true, "internal": true, "route": true, "stageFile": true,
	"sendFile": true, "openStored": true, "assignedBuild": true, "workerWriteError": true,
}

// msgVar matches the names of variables and constants that hold messages.
var msgVar = regexp.MustCompile(`^msg[A-Z]|(?i)notfound`)

// httpapiMessages scans the httpapi package's source (tests excluded) for the
// messages it can answer with: string arguments of msgFuncs, msg* constants,
// literals assigned to message variables, and the value of an "error" key in
// a composite literal. It returns them sorted and without duplicates.
func httpapiMessages(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "httpapi", "*.go"))
	require.NoError(t, err)
	fset := token.NewFileSet()
	found := map[string]bool{}
	lit := func(e ast.Expr) (string, bool) {
		bl, ok := e.(*ast.BasicLit)
		if !ok || bl.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(bl.Value)
		require.NoError(t, err)
		return s, true
	}
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		require.NoError(t, err)
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				name := ""
				switch fn := n.Fun.(type) {
				case *ast.Ident:
					name = fn.Name
				case *ast.SelectorExpr:
					name = fn.Sel.Name
				}
				if msgFuncs[name] {
					for _, a := range n.Args {
						if s, ok := lit(a); ok && strings.Contains(s, " ") {
							found[s] = true
						}
					}
				}
			case *ast.ValueSpec:
				for i, id := range n.Names {
					if i < len(n.Values) && msgVar.MatchString(id.Name) {
						if s, ok := lit(n.Values[i]); ok {
							found[s] = true
						}
					}
				}
			case *ast.AssignStmt:
				if len(n.Lhs) != len(n.Rhs) {
					break
				}
				for i, l := range n.Lhs {
					if id, ok := l.(*ast.Ident); ok && msgVar.MatchString(id.Name) {
						if s, ok := lit(n.Rhs[i]); ok {
							found[s] = true
						}
					}
				}
			case *ast.KeyValueExpr:
				if k, ok := lit(n.Key); ok && k == "error" {
					if s, ok := lit(n.Value); ok {
						found[s] = true
					}
				}
			}
			return true
		})
	}
	out := make([]string, 0, len(found))
	for s := range found {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}
