package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bin := fs.String("bin", "", "directory holding linux-ARCH/{iha-leader,iha}")
	arches := fs.String("arches", "amd64", "architectures, space- or comma-separated (one manifest each, one index)")
	version := fs.String("version", "dev", "org.opencontainers.image.version")
	revision := fs.String("revision", "", "org.opencontainers.image.revision (the commit)")
	created := fs.String("created", "", "creation time, Unix seconds (the commit's time); default SOURCE_DATE_EPOCH, else 0")
	out := fs.String("out", "", "the OCI archive to write")
	tag := fs.String("tag", "", "reference name in the index (default: localhost/iha-leader:VERSION)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *bin == "" || *out == "" {
		fmt.Fprintln(stderr, "image: -bin and -out are required")
		return 2
	}
	if *created == "" {
		*created = os.Getenv("SOURCE_DATE_EPOCH")
	}
	var at time.Time
	if *created != "" {
		sec, err := strconv.ParseInt(*created, 10, 64)
		if err != nil {
			fmt.Fprintf(stderr, "image: -created %q: want Unix seconds\n", *created)
			return 2
		}
		at = time.Unix(sec, 0).UTC()
	} else {
		at = time.Unix(0, 0).UTC()
	}
	ref := *tag
	if ref == "" {
		ref = "localhost/iha-leader:" + *version
	}
	opts := Options{BinDir: *bin, Arches: strings.FieldsFunc(*arches, func(r rune) bool { return r == ' ' || r == ',' }),
		Version: *version, Revision: *revision, Created: at, RefName: ref}
	digest, err := Build(*out, opts)
	if err != nil {
		fmt.Fprintf(stderr, "image: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "image: %s %s (%s)\n", *out, digest, ref)
	return 0
}
