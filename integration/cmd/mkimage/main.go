// Command mkimage builds the test image (Debian's busybox-static, every applet
// linked, /etc/passwd and /etc/group) as an OCI archive and prints its path,
// for `ctr images import`. The integration tests build the same archive.
package main

import (
	"fmt"
	"os"

	"github.com/example/containerd-shim-example-v2/integration/harness"
)

func main() {
	path, err := harness.ImageArchive()
	if err != nil {
		fmt.Fprintf(os.Stderr, "mkimage: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(path)
}
