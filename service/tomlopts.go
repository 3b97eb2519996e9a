package service

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// maxConfigFile caps a runtime options file read through CRI's config_path.
const maxConfigFile = 1 << 20

// parseOptionsTOML reads the runtime options containerd's CRI plugin passes
// for custom runtime types: the [...runtimes.<name>.options] table, as raw
// TOML (containerd 2.x config_body) or in a file (config_path). Only flat
// `key = value` lines are meaningful there; keys are the Go field names
// containerd uses for runc (BinaryName, Root, SystemdCgroup, ...) or their
// snake_case forms.
//
// Only the table's own keys count: they end at the first table header (a
// nested table, such as containerd's marshalling of a sub-table, comes after
// them, and in TOML no key after a header is the root table's again). One of
// this shim's keys found under a header is logged as ignored: an options
// file written as `[options]` then `BinaryName = ...` would otherwise fall
// back to the default runtime without a word. A value must fit on its line;
// what this reader does not take exactly as TOML does (multi-line values,
// one of its keys given twice, a boolean that is not true or false) is
// refused rather than guessed at.
func parseOptionsTOML(data []byte) (RuntimeOptions, error) {
	var o RuntimeOptions
	seen := map[string]bool{}
	var table string     // the header the lines are under ("": the options' own)
	var ignored []string // this shim's keys found under a header
	open := 0            // brackets a multi-line array or inline table left open
	defer func() {
		if len(ignored) > 0 {
			slog.Warn("runtime options: keys under a table header are not the options' own; ignored", "keys", ignored)
		}
	}()
	for n, line := range strings.Split(string(data), "\n") {
		n++
		line = strings.TrimSpace(line)
		if open > 0 { // a value of a key this reader does not read, going on
			open += bracketBalance(line)
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		if line[0] == '[' {
			table = line
			continue
		}
		key, raw, ok := strings.Cut(line, "=")
		if ok {
			open = max(bracketBalance(raw), 0)
		}
		if table != "" {
			// Not ours to read (any shape: multi-line values of other
			// tables included); only said if it looks like one of ours.
			if k := normalizeTOMLKey(key); ok && ourTOMLKeys[k] {
				ignored = append(ignored, table+" "+k)
			}
			continue
		}
		if !ok {
			return o, invalidArgument("runtime options line %d: %q is not key = value", n, line)
		}
		key = normalizeTOMLKey(key)
		if key == "" {
			return o, invalidArgument("runtime options line %d: no key", n)
		}
		if ourTOMLKeys[key] {
			// Other keys are not read, and BinaryName and binary_name
			// are two TOML keys but one option here.
			if open > 0 {
				return o, invalidArgument("runtime options line %d: %s must have its value on one line", n, key)
			}
			if seen[key] {
				return o, invalidArgument("runtime options line %d: %s given twice", n, key)
			}
			seen[key] = true
		}
		raw = stripTOMLComment(strings.TrimSpace(raw))
		var err error
		switch key {
		case "binaryname":
			o.BinaryName, err = tomlString(raw)
		case "root":
			o.Root, err = tomlString(raw)
		case "criuimagepath":
			o.CriuImagePath, err = tomlString(raw)
		case "criuworkpath":
			o.CriuWorkPath, err = tomlString(raw)
		case "criupath":
			o.CriuPath, err = tomlString(raw)
		case "systemdcgroup":
			o.SystemdCgroup, err = tomlBool(raw)
		case "nopivotroot":
			o.NoPivotRoot, err = tomlBool(raw)
		case "nonewkeyring":
			o.NoNewKeyring, err = tomlBool(raw)
		case "iouid":
			o.IoUID, err = tomlUint32(raw)
		case "iogid":
			o.IoGID, err = tomlUint32(raw)
		case "shimcgroup":
			o.ShimCgroup, err = tomlString(raw)
		case "stalltimeout":
			var v string
			if v, err = tomlString(raw); err == nil {
				o.StallTimeout, err = parseStallTimeout(v)
			}
		default:
			// Other keys (TypeUrl, ConfigPath...) are not ours.
		}
		if err != nil {
			return o, invalidArgument("runtime options line %d (%s): %v", n, key, err)
		}
	}
	return o, nil
}

// ourTOMLKeys are the options this shim reads, normalized.
var ourTOMLKeys = map[string]bool{
	"binaryname": true, "root": true, "criuimagepath": true, "criuworkpath": true, "criupath": true, "systemdcgroup": true,
	"nopivotroot": true, "nonewkeyring": true, "iouid": true, "iogid": true, "shimcgroup": true,
	"stalltimeout": true,
}

// normalizeTOMLKey is a key as this reader compares them: unquoted, lower
// case, without underscores (BinaryName, binary_name, "BinaryName").
func normalizeTOMLKey(key string) string {
	return strings.ToLower(strings.ReplaceAll(strings.Trim(strings.TrimSpace(key), `"`), "_", ""))
}

// bracketBalance counts the brackets and braces s opens minus those it
// closes, outside strings and before a comment: above 0, a multi-line array
// or inline table goes on on the next lines.
func bracketBalance(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '#':
			return n
		case '[', '{':
			n++
		case ']', '}':
			n--
		case '\'':
			if j := strings.IndexByte(s[i+1:], '\''); j >= 0 {
				i += j + 1
			} else {
				return n
			}
		case '"':
			for i++; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' {
					i++
				}
			}
		}
	}
	return n
}

// stripTOMLComment drops a trailing "# comment" from a value, looking past a
// quoted string first so that a '#' inside the quotes stays.
func stripTOMLComment(raw string) string {
	rest := 0
	switch {
	case strings.HasPrefix(raw, `"`):
		// A basic string ends at the first '"' not escaped by a backslash.
		for i := 1; i < len(raw); i++ {
			if raw[i] == '\\' {
				i++
				continue
			}
			if raw[i] == '"' {
				rest = i + 1
				break
			}
		}
	case strings.HasPrefix(raw, "'"):
		if i := strings.IndexByte(raw[1:], '\''); i >= 0 {
			rest = i + 2
		}
	}
	if i := strings.IndexByte(raw[rest:], '#'); i >= 0 {
		return strings.TrimSpace(raw[:rest+i])
	}
	return raw
}

// tomlString reads a one-line basic ("...") or literal ('...') string.
func tomlString(raw string) (string, error) {
	if len(raw) >= 2 && (raw[0] == '"' && raw[len(raw)-1] == '"') {
		// TOML's escapes are a subset of Go's: refuse the others (\x, \a,
		// \v, \', octal) rather than read them as Go would.
		for i := 1; i < len(raw)-1; i++ {
			if raw[i] == '\\' {
				i++
				if !strings.ContainsRune(`btnfr"\uU`, rune(raw[i])) {
					return "", fmt.Errorf("%s: \\%c is not a TOML escape", raw, raw[i])
				}
			}
		}
		if strings.HasPrefix(raw, `"""`) {
			return "", fmt.Errorf("%s: multi-line strings are not supported here", raw)
		}
		return strconv.Unquote(raw)
	}
	if len(raw) >= 2 && raw[0] == '\'' && raw[len(raw)-1] == '\'' && !strings.Contains(raw[1:len(raw)-1], "'") {
		return raw[1 : len(raw)-1], nil
	}
	return "", fmt.Errorf("%s is not a one-line quoted string", raw)
}

// tomlBool reads TOML's two boolean literals, and nothing else.
func tomlBool(raw string) (bool, error) {
	switch raw {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, fmt.Errorf("%s is not true or false", raw)
}

func tomlUint32(raw string) (uint32, error) {
	v, err := strconv.ParseUint(raw, 10, 32)
	return uint32(v), err
}

// readOptionsFile reads a config_path options file.
func readOptionsFile(path string) ([]byte, error) {
	// Non-blocking, and a regular file only: opening a FIFO would wait for
	// a writer, holding start and Create.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, invalidArgument("runtime options file: %v", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return nil, invalidArgument("runtime options file %s is not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxConfigFile+1))
	if err != nil {
		return nil, invalidArgument("runtime options file: %v", err)
	}
	if len(data) > maxConfigFile {
		return nil, invalidArgument("runtime options file %s is larger than %d bytes", path, maxConfigFile)
	}
	return data, nil
}
