package domain

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
)

// NewToken returns a new secret (32 random bytes, base64url without padding:
// 43 characters) and the digest that is stored in its place.
func NewToken() (token string, digest []byte, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", nil, err
	}
	token = base64.RawURLEncoding.EncodeToString(b[:])
	return token, Digest(token), nil
}

// TokenMatches compares a presented token with a stored digest in constant
// time.
func TokenMatches(token string, digest []byte) bool {
	return len(digest) == sha256.Size && subtle.ConstantTimeCompare(Digest(token), digest) == 1
}

// Digest is the stored form of a token: its SHA-256.
func Digest(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}
