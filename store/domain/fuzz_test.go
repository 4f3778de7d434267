package domain_test

// Run with:
//
//	go test -run='^$' -fuzz='^FuzzParseID$' -fuzztime=20s ./store/domain

import (
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/expo-free-agent/controller/store/domain"
)

// FuzzParseID checks domain.ParseID on arbitrary strings. Invariants: an
// accepted id is the lowered input, 36 bytes of lowercase hex digits with
// hyphens at 8, 13, 18 and 23 (so it is safe in a file name and a path
// segment), the same UUID as uuid.Parse reads, and a fixed point;
// ParseID(strings.ToUpper(x)) agrees with ParseID(x); a refusal returns "".
func FuzzParseID(f *testing.F) {
	for _, s := range []string{
		"6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b", "6F1C2A3B-4D5E-4F60-8A7B-9C0D1E2F3A4B", "00000000-0000-0000-0000-000000000000",
		"", "..", "../../etc/passwd", "%2e%2e%2f", "{6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b}",
		"urn:uuid:6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b", "6f1c2a3b4d5e4f608a7b9c0d1e2f3a4b",
		"6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4g", "6f1c2a3b-4d5e-4f60-8a7b_9c0d1e2f3a4b", "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b\x00",
		"6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4\u0431", "６f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b", "6f1c2a3b\u20104d5e-4f60-8a7b-9c0d1e2f3a",
		"6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4/", "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3.4b", strings.Repeat("a", 300),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		canon, ok := domain.ParseID(in)
		upper, uok := domain.ParseID(strings.ToUpper(in))
		if uok != ok || upper != canon {
			t.Fatalf("ParseID(%q) = %q, %v but ParseID(upper) = %q, %v", in, canon, ok, upper, uok)
		}
		if !ok {
			if canon != "" {
				t.Fatalf("ParseID(%q) refused but returned %q", in, canon)
			}
			return
		}
		if len(canon) != 36 || canon != strings.ToLower(in) {
			t.Fatalf("ParseID(%q) = %q", in, canon)
		}
		for i, c := range []byte(canon) {
			hyphen := i == 8 || i == 13 || i == 18 || i == 23
			if hyphen && c != '-' || !hyphen && !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				t.Fatalf("ParseID(%q) = %q: byte %d is %q", in, canon, i, c)
			}
		}
		if u, err := uuid.Parse(in); err != nil || u.String() != canon {
			t.Fatalf("ParseID(%q) = %q but uuid.Parse reads %v, %v", in, canon, u, err)
		}
		if again, ok := domain.ParseID(canon); !ok || again != canon {
			t.Fatalf("ParseID is not a fixed point on %q", canon)
		}
	})
}
