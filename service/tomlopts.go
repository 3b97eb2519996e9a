package service

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// maxConfigFile caps a runtime options file read through CRI's config_path.
const maxConfigFile = 1 << 20

// parseOptionsTOML reads the runtime options containerd's CRI plugin passes
// for custom runtime types: the [...runtimes.<name>.options] table, as raw
// TOML (containerd 2.x config_body) or in a file (config_path). Only flat
// `key = value` lines are meaningful there; keys are the Go field names
// containerd uses for runc (BinaryName, Root, SystemdCgroup, ...) or their
// snake_case forms.
func parseOptionsTOML(data []byte) (RuntimeOptions, error) {
	var o RuntimeOptions
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		key, raw, ok := strings.Cut(line, "=")
		if !ok {
			return o, invalidArgument("runtime options line %d: %q is not key = value", n, line)
		}
		key = strings.ToLower(strings.ReplaceAll(strings.Trim(strings.TrimSpace(key), `"`), "_", ""))
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
		case "systemdcgroup":
			o.SystemdCgroup, err = strconv.ParseBool(raw)
		case "nopivotroot":
			o.NoPivotRoot, err = strconv.ParseBool(raw)
		case "nonewkeyring":
			o.NoNewKeyring, err = strconv.ParseBool(raw)
		case "iouid":
			o.IoUID, err = tomlUint32(raw)
		case "iogid":
			o.IoGID, err = tomlUint32(raw)
		case "shimcgroup":
			o.ShimCgroup, err = tomlString(raw)
		default:
			// Other keys (TypeUrl, ConfigPath...) are not ours.
		}
		if err != nil {
			return o, invalidArgument("runtime options line %d (%s): %v", n, key, err)
		}
	}
	return o, nil
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

func tomlString(raw string) (string, error) {
	if len(raw) >= 2 && (raw[0] == '"' && raw[len(raw)-1] == '"') {
		return strconv.Unquote(raw)
	}
	if len(raw) >= 2 && raw[0] == '\'' && raw[len(raw)-1] == '\'' {
		return raw[1 : len(raw)-1], nil
	}
	return "", fmt.Errorf("%s is not a quoted string", raw)
}

func tomlUint32(raw string) (uint32, error) {
	v, err := strconv.ParseUint(raw, 10, 32)
	return uint32(v), err
}

// readOptionsFile reads a config_path options file.
func readOptionsFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, invalidArgument("runtime options file: %v", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigFile+1))
	if err != nil {
		return nil, invalidArgument("runtime options file: %v", err)
	}
	if len(data) > maxConfigFile {
		return nil, invalidArgument("runtime options file %s is larger than %d bytes", path, maxConfigFile)
	}
	return data, nil
}
