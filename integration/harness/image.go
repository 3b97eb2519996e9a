package harness

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ImageName is the reference under which the test image is imported.
const ImageName = "example.test/busybox:latest"

// BusyboxPath is the statically linked busybox (Debian's busybox-static) the image is made from.
var BusyboxPath = "/bin/busybox"

// imageLayoutVersion changes whenever the image content built below changes, so that a
// cached archive from an older harness is not reused.
const imageLayoutVersion = "3"

var (
	imageOnce sync.Once
	imagePath string
	imageErr  error
)

// ImageArchive returns the path of an OCI image archive (a tar holding oci-layout,
// index.json and blobs/sha256/...) with busybox in it. It is built once per process and
// cached in the system temp dir under a name derived from busybox's checksum, so later runs
// reuse it. The archive is deterministic: the same busybox gives the same digests.
func ImageArchive() (string, error) {
	imageOnce.Do(func() { imagePath, imageErr = buildImageArchive() })
	return imagePath, imageErr
}

func buildImageArchive() (string, error) {
	bb, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return "", fmt.Errorf("test image needs busybox-static at %s (apt-get install busybox-static): %w", BusyboxPath, err)
	}
	sum := sha256.Sum256(bb)
	key := hex.EncodeToString(sum[:])[:16] + "-v" + imageLayoutVersion + "-" + runtime.GOARCH
	out := filepath.Join(os.TempDir(), "ex-test-image-"+key+".tar")
	if st, err := os.Stat(out); err == nil && st.Size() > 0 {
		return out, nil
	}

	applets, err := busyboxApplets()
	if err != nil {
		return "", err
	}
	layerTar, err := rootfsTar(bb, applets)
	if err != nil {
		return "", err
	}
	diffID := digest.FromBytes(layerTar)
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	if _, err := zw.Write(layerTar); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	layer := gz.Bytes()

	epoch := time.Unix(0, 0).UTC()
	cfg := ocispec.Image{
		Created:  &epoch,
		Platform: ocispec.Platform{Architecture: runtime.GOARCH, OS: "linux"},
		Config: ocispec.ImageConfig{
			Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			Cmd:        []string{"sh"},
			WorkingDir: "/",
		},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}},
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return "", err
	}
	manifest := ocispec.Manifest{
		Versioned: ocispecs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfgJSON), Size: int64(len(cfgJSON))},
		Layers:    []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(layer), Size: int64(len(layer))}},
	}
	manJSON, err := json.Marshal(manifest)
	if err != nil {
		return "", err
	}
	index := ocispec.Index{
		Versioned: ocispecs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{{
			MediaType: ocispec.MediaTypeImageManifest,
			Digest:    digest.FromBytes(manJSON),
			Size:      int64(len(manJSON)),
			Platform:  &ocispec.Platform{Architecture: runtime.GOARCH, OS: "linux"},
			Annotations: map[string]string{
				// containerd's importer names the image after this annotation.
				"io.containerd.image.name": ImageName,
				ocispec.AnnotationRefName:  "latest",
			},
		}},
	}
	idxJSON, err := json.Marshal(index)
	if err != nil {
		return "", err
	}
	layoutJSON, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})

	var arch bytes.Buffer
	tw := tar.NewWriter(&arch)
	add := func(name string, data []byte) error {
		hdr := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: epoch, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Name: dir, Mode: 0o755, ModTime: epoch, Typeflag: tar.TypeDir, Format: tar.FormatPAX}); err != nil {
			return "", err
		}
	}
	for _, b := range [][]byte{layer, cfgJSON, manJSON} {
		if err := add("blobs/sha256/"+digest.FromBytes(b).Encoded(), b); err != nil {
			return "", err
		}
	}
	if err := add(ocispec.ImageLayoutFile, layoutJSON); err != nil {
		return "", err
	}
	if err := add(ocispec.ImageIndexFile, idxJSON); err != nil {
		return "", err
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), ".ex-test-image-*")
	if err != nil {
		return "", err
	}
	if _, err := tmp.Write(arch.Bytes()); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return "", err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return "", err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		os.Remove(tmp.Name())
		return "", err
	}
	return out, nil
}

// busyboxApplets returns the applet paths (relative, e.g. "usr/bin/awk") that busybox installs.
func busyboxApplets() ([]string, error) {
	out, err := exec.Command(BusyboxPath, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-full: %w", BusyboxPath, err)
	}
	var list []string
	for _, l := range strings.Split(string(out), "\n") {
		l = strings.Trim(strings.TrimSpace(l), "/")
		if l == "" || l == "bin/busybox" || strings.Contains(l, "..") {
			continue
		}
		list = append(list, l)
	}
	if len(list) < 50 {
		return nil, fmt.Errorf("%s --list-full listed only %d applets; is it the static, full busybox?", BusyboxPath, len(list))
	}
	sort.Strings(list)
	return list, nil
}

// Contents of the image's account databases: the users real clients look up.
const (
	passwdFile = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
backup:x:34:34:backup:/var/backups:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
`
	groupFile = `root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
tty:x:5:
www-data:x:33:
backup:x:34:
users:x:100:
nogroup:x:65534:
`
)

// rootfsTar builds the uncompressed layer: busybox, its applet symlinks, a minimal /etc and
// the usual empty directories.
func rootfsTar(bb []byte, applets []string) ([]byte, error) {
	epoch := time.Unix(0, 0).UTC()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	var mkdir func(string, int64) error
	mkdir = func(d string, mode int64) error {
		if d == "." || d == "" || dirs[d] {
			return nil
		}
		if err := mkdir(path.Dir(d), 0o755); err != nil {
			return err
		}
		dirs[d] = true
		return tw.WriteHeader(&tar.Header{Name: d + "/", Mode: mode, ModTime: epoch, Typeflag: tar.TypeDir, Format: tar.FormatPAX})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := mkdir(path.Dir(name), 0o755); err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "usr/local/bin", "etc", "dev", "proc", "sys", "run", "var/log", "var/www", "var/backups", "home"} {
		if err := mkdir(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := mkdir("root", 0o700); err != nil {
		return nil, err
	}
	if err := mkdir("tmp", 0o1777); err != nil {
		return nil, err
	}
	if err := mkdir("var/tmp", 0o1777); err != nil {
		return nil, err
	}
	if err := file("bin/busybox", 0o755, bb); err != nil {
		return nil, err
	}
	for _, a := range applets {
		if err := mkdir(path.Dir(a), 0o755); err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Name: a, Linkname: "/bin/busybox", Mode: 0o777, ModTime: epoch, Typeflag: tar.TypeSymlink, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	for name, data := range map[string]string{
		"etc/passwd":      passwdFile,
		"etc/group":       groupFile,
		"etc/hostname":    "busybox\n",
		"etc/hosts":       "127.0.0.1\tlocalhost\n::1\tlocalhost\n",
		"etc/resolv.conf": "",
		"etc/os-release":  "NAME=\"example test image\"\nID=busybox\n",
	} {
		if err := file(name, 0o644, []byte(data)); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ImportImage imports the test image into the namespace carried by ctx and unpacks it for
// the snapshotter (empty = the daemon's default, overlayfs).
func ImportImage(ctx context.Context, c *containerd.Client, snapshotter string) (containerd.Image, error) {
	archive, err := ImageArchive()
	if err != nil {
		return nil, err
	}
	f, err := os.Open(archive)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	imgs, err := c.Import(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", archive, err)
	}
	var found bool
	for _, i := range imgs {
		if i.Name == ImageName {
			found = true
		}
	}
	if !found {
		return nil, fmt.Errorf("import of %s did not create %s (got %v)", archive, ImageName, imgs)
	}
	img, err := c.GetImage(ctx, ImageName)
	if err != nil {
		return nil, err
	}
	if err := img.Unpack(ctx, snapshotter); err != nil {
		return nil, fmt.Errorf("unpack %s: %w", ImageName, err)
	}
	return img, nil
}
