package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
)

func (b *build) buildPath(suffix string) string { return buildPath(b.job.ID, suffix) }

// buildPath is /api/builds/<id><suffix>.
func buildPath(id, suffix string) string {
	return "/api/builds/" + url.PathEscape(id) + suffix
}

// downloadSource streams source_url to a temporary file and checks its size
// against Content-Length. It returns the file's path (also on failure, if
// one was left to remove).
func (b *build) downloadSource(ctx context.Context) (string, error) {
	var path string
	err := b.retry(ctx, "source download", func(ctx context.Context) error {
		p, n, err := b.fetchSource(ctx)
		if err == nil {
			path, b.sourceSize = p, n
		}
		return err
	})
	return path, err
}

func (b *build) fetchSource(ctx context.Context) (string, int64, error) {
	return b.w.api.download(ctx, b.job.SourceURL, auth{workerID: b.w.id}, b.w.cfg.TempDir)
}

// download streams ref to a temporary file in dir and checks its size
// against Content-Length. It returns the file's path and size; on failure
// no file is left behind.
func (a *api) download(ctx context.Context, ref string, id auth, dir string) (string, int64, error) {
	req, err := a.newRequest(ctx, http.MethodGet, ref, nil, id)
	if err != nil {
		return "", 0, err
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	a.log.Debugf("GET %s → %d", req.URL.Path, resp.StatusCode)
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
		return "", 0, answerError(req, resp.StatusCode, raw)
	}
	f, err := os.CreateTemp(dir, "mock-worker-source-*.zip")
	if err != nil {
		return "", 0, err
	}
	n, err := io.Copy(f, resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
		err = fmt.Errorf("source truncated: got %d of %d bytes", n, resp.ContentLength)
	}
	if err != nil {
		os.Remove(f.Name())
		return "", 0, err
	}
	return f.Name(), n, nil
}

// certsBundle is the answer of GET /api/builds/:id/certs-secure (§4.4).
type certsBundle struct {
	P12                  *string   `json:"p12"`
	P12Password          *string   `json:"p12Password"`
	KeychainPassword     *string   `json:"keychainPassword"`
	ProvisioningProfiles *[]string `json:"provisioningProfiles"`
}

// fetchCerts fetches certs-secure the way the VM bootstrap does and checks
// that the four fields decode. Secrets are never printed.
func (b *build) fetchCerts(ctx context.Context) error {
	var c certsBundle
	_, err := b.w.api.call(ctx, http.MethodGet, b.buildPath("/certs-secure"),
		auth{workerID: b.w.id, buildID: b.job.ID}, nil, &c)
	if err != nil {
		return err
	}
	p12, err := c.validate()
	if err != nil {
		return err
	}
	b.w.out.Infof("fetched signing certs: p12 %s, %d provisioning profile(s)", humanSize(int64(p12)), len(*c.ProvisioningProfiles))
	return nil
}

// validate checks the bundle like the VM bootstrap: all four fields
// present; p12 non-empty standard base64; keychainPassword and every
// provisioning profile base64; p12Password is used as plain text (the VM
// passes it to the installer as is). It returns the p12's decoded size.
func (c certsBundle) validate() (int, error) {
	if c.P12 == nil || c.P12Password == nil || c.KeychainPassword == nil || c.ProvisioningProfiles == nil {
		return 0, errors.New("certs-secure answer lacks p12, p12Password, keychainPassword or provisioningProfiles")
	}
	p12, err := base64.StdEncoding.DecodeString(*c.P12)
	if err != nil || len(p12) == 0 {
		return 0, errors.New("certs-secure p12 is empty or not base64")
	}
	if _, err := base64.StdEncoding.DecodeString(*c.KeychainPassword); err != nil {
		return 0, errors.New("certs-secure keychainPassword is not base64")
	}
	for i, p := range *c.ProvisioningProfiles {
		if _, err := base64.StdEncoding.DecodeString(p); err != nil {
			return 0, fmt.Errorf("certs-secure provisioning profile %d is not base64", i+1)
		}
	}
	return len(p12), nil
}
