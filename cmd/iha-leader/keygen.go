package main

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/ihaproject/iha/pkg/identity"
)

// keygenUsage is `iha-leader keygen`'s help.
const keygenUsage = `usage: iha-leader keygen gossip | cluster | host [-cluster-key FILE] HOST

Prints new key material on stdout; nothing is written anywhere else, and
the packages never create keys by themselves. Redirect it into a file that
only root and the iha group can read, for example:

  (umask 027; iha-leader keygen gossip > /etc/iha/gossip.keyring); chgrp iha /etc/iha/gossip.keyring

  gossip   a gossip keyring: a JSON array holding one new 32-byte key (AES-256).
           The same file goes to every controller (GOSSIP_KEYRING) and every
           compute (keyring: in agent.yaml).
  cluster  a cluster key (CLUSTER_KEY): the controllers' secret, the same on
           every controller and never on a compute.
  host     the host key of Nova host HOST, derived from the cluster key
           (default /etc/iha/cluster.key): it goes to HOST only (host_key: in
           its agent.yaml) and lets its agent speak for HOST and no other.

docs/operations.md, "The mesh's keys", says where each goes.
`

// runKeygen implements `iha-leader keygen`.
func runKeygen(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, keygenUsage)
		if len(args) > 0 {
			return 0
		}
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "iha-leader keygen %s: %v\n", args[0], err)
		return 1
	}
	switch args[0] {
	case "gossip", "cluster":
		if len(args) != 1 {
			fmt.Fprint(stderr, keygenUsage)
			return 2
		}
		k, err := identity.NewKey()
		if err != nil {
			return fail(err)
		}
		if args[0] == "cluster" {
			fmt.Fprint(stdout, identity.EncodeKey(k))
			return 0
		}
		b, _ := json.Marshal([]string{base64.StdEncoding.EncodeToString(k)})
		fmt.Fprintf(stdout, "%s\n", b)
		return 0
	case "host":
		fs := flag.NewFlagSet("iha-leader keygen host", flag.ContinueOnError)
		fs.SetOutput(stderr)
		clusterFile := fs.String("cluster-key", "/etc/iha/cluster.key", "the cluster key file (CLUSTER_KEY)")
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		if fs.NArg() != 1 || fs.Arg(0) == "" {
			fmt.Fprint(stderr, keygenUsage)
			return 2
		}
		cluster, err := identity.LoadKey(*clusterFile)
		if err != nil {
			return fail(err)
		}
		host := fs.Arg(0)
		k := identity.HostKey(cluster, host)
		fmt.Fprint(stdout, identity.EncodeKey(k))
		fmt.Fprintf(stderr, "host key of %s (key id %s; the agent logs it at start)\n", host, identity.KeyID(k))
		return 0
	}
	fmt.Fprintf(stderr, "iha-leader keygen: unknown kind %q\n%s", args[0], keygenUsage)
	return 2
}
