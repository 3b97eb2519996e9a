package launch

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"time"

	"github.com/example/containerd-shim-example-v2/service"
)

// introspectTimeout bounds the whole query: a live daemon answers at once.
const introspectTimeout = 5 * time.Second

// Introspect is the `introspect` action, for operators: it asks a running
// daemon for its introspection snapshot and prints it as JSON. The daemon is
// found by its socket (-socket) or through a task's bundle (-bundle, whose
// `address` file names the socket).
func Introspect(f Flags, out io.Writer) error {
	socket := f.Socket
	if socket == "" {
		if f.Bundle == "" {
			return fmt.Errorf("introspect needs -bundle <task bundle> or -socket <shim socket>")
		}
		var err error
		if socket, err = socketOfBundle(f.Bundle); err != nil {
			return fmt.Errorf("find the shim of bundle %s: %w", f.Bundle, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), introspectTimeout)
	defer cancel()
	resp, err := service.Snapshot(ctx, socket)
	if err != nil {
		return fmt.Errorf("introspect shim %s: %w", socket, err)
	}
	// The mirrors' JSON names are protojson's (proto/codec/gen); with empty
	// lists as [] rather than null, this is the JSON protojson wrote with
	// every field included, which operators' scripts read.
	emptyLists(reflect.ValueOf(resp))
	data, err := json.MarshalIndent(resp, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "%s\n", data)
	return err
}

// emptyLists replaces every nil list in the message v points to, and in the
// messages it holds, by an empty one (encoding/json writes nil as null).
func emptyLists(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			emptyLists(v.Elem())
		}
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				emptyLists(v.Field(i))
			}
		}
	case reflect.Slice:
		if v.IsNil() && v.Type().Elem().Kind() != reflect.Uint8 {
			v.Set(reflect.MakeSlice(v.Type(), 0, 0))
		}
		for i := 0; i < v.Len(); i++ {
			emptyLists(v.Index(i))
		}
	}
}
