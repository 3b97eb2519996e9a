// Package identifier checks ids against containerd's rule for namespaces,
// container, exec and sandbox ids: at most 76 characters, ASCII letters and
// digits in runs separated by single '.', '_' or '-', starting and ending
// with a letter or digit.
//
// A loop instead of containerd's regular expression: every shim compiled two
// copies of it at start-up (package init), about 11 KB of heap kept for the
// process's life.
package identifier

// MaxLen is containerd's length limit for ids.
const MaxLen = 76

// Valid reports whether id follows the rule.
func Valid(id string) bool {
	if id == "" || len(id) > MaxLen {
		return false
	}
	afterSeparator := true // the first character must be a letter or digit too
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
			afterSeparator = false
		case c == '.' || c == '_' || c == '-':
			if afterSeparator {
				return false
			}
			afterSeparator = true
		default:
			return false
		}
	}
	return !afterSeparator
}
