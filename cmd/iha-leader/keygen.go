package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
)

// keygenUsage is `iha-leader keygen`'s help.
const keygenUsage = `usage: iha-leader keygen gossip

Prints new key material on stdout; nothing is written anywhere else, and
the packages never create keys by themselves. Redirect it into a file that
only root and the iha group can read, for example:

  (umask 027; iha-leader keygen gossip > /etc/iha/gossip.keyring); chgrp iha /etc/iha/gossip.keyring

  gossip   a gossip keyring: a JSON array holding one new 32-byte key (AES-256).
           The same file goes to every controller (GOSSIP_KEYRING) and every
           compute (keyring: in agent.yaml). docs/operations.md, "The mesh's keys".
`

// runKeygen implements `iha-leader keygen`.
func runKeygen(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, keygenUsage)
		if len(args) == 1 {
			return 0
		}
		return 2
	}
	switch args[0] {
	case "gossip":
		k := make([]byte, 32)
		if _, err := rand.Read(k); err != nil {
			fmt.Fprintf(stderr, "iha-leader keygen: %v\n", err)
			return 1
		}
		b, _ := json.Marshal([]string{base64.StdEncoding.EncodeToString(k)})
		fmt.Fprintf(stdout, "%s\n", b)
		return 0
	}
	fmt.Fprintf(stderr, "iha-leader keygen: unknown kind %q\n%s", args[0], keygenUsage)
	return 2
}
