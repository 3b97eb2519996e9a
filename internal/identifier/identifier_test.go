package identifier

import (
	"math/rand"
	"regexp"
	"strings"
	"testing"
)

// containerd's expression (its identifiers package), which Valid replaces.
var containerdRule = regexp.MustCompile(`^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$`)

func agrees(t *testing.T, id string) {
	t.Helper()
	want := id != "" && len(id) <= MaxLen && containerdRule.MatchString(id)
	if got := Valid(id); got != want {
		t.Fatalf("Valid(%q) = %v, containerd's rule says %v", id, got, want)
	}
}

func TestValidMatchesContainerd(t *testing.T) {
	for _, id := range []string{
		"", "a", "A9", "abc-def", "a.b_c-d", "a--b", "-a", "a-", ".", "a..b", "a b", "ä",
		"pod_1.container-2", strings.Repeat("a", MaxLen), strings.Repeat("a", MaxLen+1), "a\x00",
	} {
		agrees(t, id)
	}
	r := rand.New(rand.NewSource(1))
	const alphabet = "aZ9._-/ é"
	for i := 0; i < 100000; i++ {
		b := make([]byte, r.Intn(8))
		for j := range b {
			b[j] = alphabet[r.Intn(len(alphabet))]
		}
		agrees(t, string(b))
	}
}
