package sandbox

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/example/containerd-shim-example-v2/proto/codec"
)

// NamespaceMode is CRI's runtime.v1.NamespaceMode.
type NamespaceMode int32

// CRI's namespace modes.
const (
	ModePod       NamespaceMode = 0 // one namespace for the pod
	ModeContainer NamespaceMode = 1 // one per container
	ModeNode      NamespaceMode = 2 // the node's
	ModeTarget    NamespaceMode = 3 // another container's
)

// PodConfig is what the shim uses of CRI's runtime.v1.PodSandboxConfig.
//
// It is decoded by field number (see decodePodConfig) rather than through
// k8s.io/cri-api: that module's generated code and its dependencies would
// double the shim's binary for six fields.
type PodConfig struct {
	Name, UID, Namespace string // metadata
	Hostname             string
	DNS                  DNSConfig
	HasDNS               bool // a DNSConfig was given (even an empty one)
	CgroupParent         string
	Sysctls              map[string]string
	Network, PID, IPC    NamespaceMode
	UsernsMode           NamespaceMode
	HasUserns            bool // userns_options present
}

// DNSConfig is CRI's runtime.v1.DNSConfig.
type DNSConfig struct {
	Servers, Searches, Options []string
}

// podConfigType is the type URL's last element for runtime.v1.PodSandboxConfig.
const podConfigType = "runtime.v1.PodSandboxConfig"

// Field numbers of CRI's api.proto (k8s.io/cri-api pkg/apis/runtime/v1).
const (
	fPodMetadata = 1 // PodSandboxMetadata
	fPodHostname = 2
	fPodDNS      = 4 // DNSConfig
	fPodLinux    = 8 // LinuxPodSandboxConfig

	fMetaName      = 1
	fMetaUID       = 2
	fMetaNamespace = 3

	fDNSServers  = 1
	fDNSSearches = 2
	fDNSOptions  = 3

	fLinuxCgroupParent = 1
	fLinuxSecurity     = 2 // LinuxSandboxSecurityContext
	fLinuxSysctls      = 3 // map<string, string>

	fSecurityNamespaces = 1 // NamespaceOption

	fNSNetwork = 1
	fNSPID     = 2
	fNSIPC     = 3
	fNSUserns  = 5 // UserNamespace

	fUsernsMode = 1

	fMapKey   = 1
	fMapValue = 2
)

// ParsePodConfig decodes CreateSandboxRequest.options. No options (a client
// other than CRI) gives the defaults: the node's network (CreateSandbox takes
// the request's network namespace instead when it names one), a pod IPC and
// UTS.
func ParsePodConfig(typeURL string, value []byte) (PodConfig, error) {
	var c PodConfig
	if typeURL == "" && len(value) == 0 {
		c.Network = ModeNode
		return c, nil
	}
	if !strings.HasSuffix(typeURL, podConfigType) {
		return c, fmt.Errorf("sandbox options of type %q, want %s: %w", typeURL, podConfigType, errdefs.ErrInvalidArgument)
	}
	if err := c.decode(value); err != nil {
		return c, fmt.Errorf("decode %s: %v: %w", podConfigType, err, errdefs.ErrInvalidArgument)
	}
	return c, nil
}

func (c *PodConfig) decode(b []byte) error {
	return codec.Fields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case fPodMetadata:
			return codec.Fields(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				switch {
				case typ != protowire.BytesType:
				case num == fMetaName:
					c.Name = string(v)
				case num == fMetaUID:
					c.UID = string(v)
				case num == fMetaNamespace:
					c.Namespace = string(v)
				}
				return nil
			})
		case fPodHostname:
			c.Hostname = string(v)
		case fPodDNS:
			c.HasDNS = true
			return codec.Fields(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				switch {
				case typ != protowire.BytesType:
				case num == fDNSServers:
					c.DNS.Servers = append(c.DNS.Servers, string(v))
				case num == fDNSSearches:
					c.DNS.Searches = append(c.DNS.Searches, string(v))
				case num == fDNSOptions:
					c.DNS.Options = append(c.DNS.Options, string(v))
				}
				return nil
			})
		case fPodLinux:
			return c.decodeLinux(v)
		}
		return nil
	})
}

func (c *PodConfig) decodeLinux(b []byte) error {
	return codec.Fields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case fLinuxCgroupParent:
			c.CgroupParent = string(v)
		case fLinuxSysctls:
			var k, val string
			err := codec.Fields(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				switch {
				case typ != protowire.BytesType:
				case num == fMapKey:
					k = string(v)
				case num == fMapValue:
					val = string(v)
				}
				return nil
			})
			if err != nil {
				return err
			}
			if c.Sysctls == nil {
				c.Sysctls = make(map[string]string)
			}
			c.Sysctls[k] = val
		case fLinuxSecurity:
			return codec.Fields(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				if num != fSecurityNamespaces || typ != protowire.BytesType {
					return nil
				}
				return c.decodeNamespaces(v)
			})
		}
		return nil
	})
}

func (c *PodConfig) decodeNamespaces(b []byte) error {
	return codec.Fields(b, func(num protowire.Number, typ protowire.Type, v []byte, n uint64) error {
		switch {
		case typ == protowire.VarintType && num == fNSNetwork:
			c.Network = NamespaceMode(n)
		case typ == protowire.VarintType && num == fNSPID:
			c.PID = NamespaceMode(n)
		case typ == protowire.VarintType && num == fNSIPC:
			c.IPC = NamespaceMode(n)
		case typ == protowire.BytesType && num == fNSUserns:
			c.HasUserns = true
			return codec.Fields(v, func(num protowire.Number, typ protowire.Type, _ []byte, n uint64) error {
				if num == fUsernsMode && typ == protowire.VarintType {
					c.UsernsMode = NamespaceMode(n)
				}
				return nil
			})
		}
		return nil
	})
}
