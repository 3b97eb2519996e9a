package process

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// Update hands the runtime the resources encoded again, as the stock shim's
// go-runc does, not the client's bytes: an explicit null (written by
// encoders for an absent field) reaches the runtime as an absent field.
// runc 1.1 decodes --resources over defaults it then dereferences, so a null
// that cleared one ("memory":null, "cpu":null, "blockIO":null,
// "memory":{"limit":null}) made it crash, and the Update failed.
func TestUpdatePassesNoNullToTheRuntime(t *testing.T) {
	c, _, dir := execTestContainer(t, `
update) cat >"$FAKE_DIR/resources";;`)
	for _, res := range []string{
		`{"memory":null,"pids":{"limit":50}}`,
		`{"memory":{"limit":null},"pids":{"limit":50}}`,
		`{"cpu":null,"blockIO":null,"pids":{"limit":50}}`,
	} {
		if err := c.Update(context.Background(), []byte(res)); err != nil {
			t.Fatalf("Update %s: %v", res, err)
		}
		got, err := os.ReadFile(filepath.Join(dir, "resources"))
		if err != nil {
			t.Fatal(err)
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(got, &fields); err != nil {
			t.Fatalf("the runtime got %q: %v", got, err)
		}
		for name, v := range fields {
			if string(v) == "null" || string(v) == `{"limit":null}` {
				t.Errorf("Update %s: the runtime got %s: %s", res, name, v)
			}
		}
		if string(fields["pids"]) != `{"limit":50}` {
			t.Errorf("Update %s: the runtime got pids %s, want {\"limit\":50}", res, fields["pids"])
		}
	}
}
