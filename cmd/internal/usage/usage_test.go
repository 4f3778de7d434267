package usage

import (
	"bytes"
	"flag"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPrintAlignsOneLinePerFlag(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	Print(&out, []Flag{
		{Name: "max-source-size", Help: "largest source upload", Env: "CONTROLLER_MAX_SOURCE_SIZE", Default: "500MiB"},
		{Name: "url", Help: "controller base `URL`", Default: "http://localhost:3000"},
		{Name: "api-key", Help: "admin key", Env: "CONTROLLER_API_KEY"},
		{Name: "once", Help: "exit after one build"},
	})
	require.Equal(t, ""+
		"  --max-source-size  largest source upload (env CONTROLLER_MAX_SOURCE_SIZE, default 500MiB)\n"+
		"  --url              controller base URL (default http://localhost:3000)\n"+
		"  --api-key          admin key (env CONTROLLER_API_KEY)\n"+
		"  --once             exit after one build\n", out.String())
}

func TestFromFlagSetTakesDefaultsAndEnv(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Duration("wait", 30*time.Second, "hold")
	fs.String("api-key", "", "key")
	require.Equal(t, []Flag{{Name: "api-key", Help: "key", Env: "CONTROLLER_API_KEY"}, {Name: "wait", Help: "hold", Default: "30s"}},
		FromFlagSet(fs, map[string]string{"api-key": "CONTROLLER_API_KEY"}))
}
