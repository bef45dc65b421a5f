package main

// `iha docs man`: the man pages, generated from the command tree at build
// time (deploy/nfpm/build.sh) and shipped in the iha package. Hidden: an
// operator reads the pages with man(1), not through this.

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/ihaproject/iha/pkg/version"
)

func init() { register(newDocsCmd) }

func newDocsCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:    "docs",
		Short:  "generate documentation from the command tree",
		Hidden: true,
		RunE:   groupRunE(e),
	}
	var dir, date string
	var list bool
	man := &cobra.Command{
		Use:   "man --dir D",
		Short: "write one man page (section 1) per command into D",
		Long: `Writes iha.1, iha-status.1, iha-controllers-remove.1, ... into D, dated --date (default:
SOURCE_DATE_EPOCH, else today) so that a build is reproducible. --list prints the file names only.`,
		Example: `  iha docs man --dir dist/man/man1 --date 2026-03-01`,
		Args:    noArgs("docs man", ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			root := cmd.Root()
			if list {
				for _, n := range manPages(root) {
					fmt.Fprintln(e.stdout, n)
				}
				return nil
			}
			if dir == "" {
				return usagef("--dir is required")
			}
			day, err := manDate(date)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("man pages: %w", err)
			}
			disableAutoGen(root)
			hdr := &doc.GenManHeader{Title: "IHA", Section: "1", Date: &day, Source: "IHA " + version.Version, Manual: "IHA Manual"}
			if err := doc.GenManTree(root, hdr, dir); err != nil {
				return fmt.Errorf("man pages in %s: %w", dir, err)
			}
			fmt.Fprintf(e.stderr, "iha docs man: %d page(s) in %s\n", len(manPages(root)), filepath.Clean(dir))
			return nil
		},
	}
	man.Flags().StringVar(&dir, "dir", "", "write the pages into this directory")
	man.Flags().StringVar(&date, "date", "", "the pages' date, YYYY-MM-DD (default $SOURCE_DATE_EPOCH, else today)")
	man.Flags().BoolVar(&list, "list", false, "print the names of the pages instead")
	cmd.AddCommand(man)
	return cmd
}

// manPages are the file names GenManTree writes for root, sorted.
func manPages(root *cobra.Command) []string {
	var out []string
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if !c.IsAvailableCommand() && c != root || c.IsAdditionalHelpTopicCommand() {
			return
		}
		out = append(out, strings.ReplaceAll(c.CommandPath(), " ", "-")+".1")
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	slices.Sort(out)
	return out
}

func disableAutoGen(c *cobra.Command) {
	c.DisableAutoGenTag = true
	for _, sub := range c.Commands() {
		disableAutoGen(sub)
	}
}

func manDate(s string) (time.Time, error) {
	if s != "" {
		t, err := time.Parse("2006-01-02", s)
		if err != nil {
			return time.Time{}, usagef("--date %q: want YYYY-MM-DD", s)
		}
		return t, nil
	}
	if v := os.Getenv("SOURCE_DATE_EPOCH"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return time.Time{}, usagef("SOURCE_DATE_EPOCH=%q is not a number of seconds", v)
		}
		return time.Unix(n, 0).UTC(), nil
	}
	return time.Now().UTC(), nil
}
